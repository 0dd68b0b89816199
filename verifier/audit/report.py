"""The audit report: per-eps counts, the verdict on the claim, per-sample verdicts and evidence.

``build_report`` is pure aggregation (items + outcomes -> a JSON-able dict; no clock, no files),
so the service can rebuild it each time a job finishes and show partial results. ``write_report``
writes ``report.json`` and a self-contained ``report.html`` (plots embedded as base64 PNG).
Torch-free (numpy; matplotlib when writing the HTML).

Verdict on a claim of certified accuracy ``a`` at one eps, over ``n`` samples:

* certified = samples verified robust (``holds``, and correctly classified by construction);
* the true certified accuracy lies in ``[certified / n, (clean - falsified) / n]``: unknown,
  timed-out and pending samples may go either way;
* **confirmed** when ``certified / n >= a``; **refuted** when ``(clean - falsified) / n < a``;
  **undecided** otherwise. Over several eps: refuted if any eps is, confirmed if all are.
Fractions are compared exactly, the claimed value as the decimal written.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from verifier.audit.claim import Claim
from verifier.audit.extras import Extras, Picture
from verifier.audit.html import render_html
from verifier.audit.plan import AuditItem, denormalise

FORMAT = "nnverify-audit-report"
VERSION = 1
VERDICTS = ("holds", "violated", "unknown", "timeout", "error")
SAMPLE_VERDICTS = VERDICTS + ("misclassified", "pending")
UNDECIDED_VERDICTS = ("unknown", "timeout", "error", "pending")


# ----------------------------------------------------------------------------- aggregation

def _outcome_of(outcomes, index: int, item: AuditItem) -> dict | None:
    """The outcome of ``item`` from a mapping (by key) or a sequence aligned with the items."""
    if isinstance(outcomes, Mapping):
        return outcomes.get(item.key)
    return outcomes[index] if index < len(outcomes) else None


def sample_entry(item: AuditItem, outcome: dict | None) -> dict:
    """One row of the report's per-sample table."""
    row = {"key": item.key, "sample": item.sample, "eps": item.eps, "label": item.label,
           "prediction": item.prediction, "verdict": "pending", "seconds": None, "method": "", "reason": "",
           "spec": None, "certificate": None, "counterexample": None}
    if item.misclassified:
        row["verdict"] = "misclassified"
        return row
    if outcome is None:
        return row
    verdict = outcome.get("verdict")
    if verdict not in VERDICTS:
        raise ValueError(f"item {item.key}: outcome verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    seconds = outcome.get("seconds")
    row.update(verdict=verdict, seconds=None if seconds is None else float(seconds),
               method=str(outcome.get("method") or ""), reason=str(outcome.get("reason") or ""),
               spec=outcome.get("spec"), certificate=outcome.get("certificate"),
               counterexample=outcome.get("counterexample"))
    return row


def claim_verdict(certified: int, upper: int, n: int, claimed: float) -> str:
    """confirmed / refuted / undecided for the interval [certified, upper] of n against ``claimed``."""
    target = Fraction(repr(float(claimed))) * n   # the decimal as written, exactly
    if certified >= target:
        return "confirmed"
    if upper < target:
        return "refuted"
    return "undecided"


def _times(rows: list[dict]) -> dict:
    """Total, mean, median and max seconds of the rows that ran."""
    secs = [r["seconds"] for r in rows if r["seconds"] is not None]
    if not secs:
        return {"samples": 0, "total": 0.0, "mean": None, "median": None, "max": None}
    return {"samples": len(secs), "total": round(sum(secs), 3), "mean": round(statistics.fmean(secs), 4),
            "median": round(statistics.median(secs), 4), "max": round(max(secs), 4)}


def eps_summary(eps: float, rows: list[dict], claimed: float) -> dict:
    """Counts, accuracies, the certified interval and the claim verdict at one eps."""
    count = {v: sum(r["verdict"] == v for r in rows) for v in SAMPLE_VERDICTS}
    n = len(rows)
    clean = n - count["misclassified"]
    certified, falsified = count["holds"], count["violated"]
    unknown = count["unknown"] + count["timeout"] + count["error"]
    upper = clean - falsified
    return {
        "eps": eps, "n": n, "clean": clean, "misclassified": count["misclassified"], "certified": certified,
        "falsified": falsified, "unknown": unknown, "pending": count["pending"],
        "timeout": count["timeout"], "error": count["error"],
        "certified_without_certificate": sum(r["verdict"] == "holds" and not r["certificate"] for r in rows),
        "clean_accuracy": clean / n if n else None,
        "certified_accuracy": certified / n if n else None,
        "interval": [certified / n, upper / n] if n else None,
        "claimed_certified_accuracy": claimed,
        "claim_verdict": claim_verdict(certified, upper, n, claimed) if n else "undecided",
        "time_per_sample": _times(rows),
    }


def overall_verdict(verdicts: Sequence[str]) -> str:
    """refuted if any eps is refuted, confirmed if every eps is confirmed, else undecided."""
    if "refuted" in verdicts:
        return "refuted"
    return "confirmed" if verdicts and all(v == "confirmed" for v in verdicts) else "undecided"


def samples_sha256(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of the samples (float64, C order) and labels (int64): which data a report is about."""
    h = hashlib.sha256(np.ascontiguousarray(x, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    return h.hexdigest()


def claim_description(claim: Claim) -> dict:
    """The claim's parameters as the report records them."""
    return {"name": claim.name, "written": claim.written, "model": claim.model.name, "model_sha256": claim.model_sha256,
            "data": claim.data.name, "samples_sha256": samples_sha256(claim.x, claim.y), "n_samples": claim.n_samples, "sample_shape": list(claim.sample_shape),
            "input_shape": list(claim.input_shape), "n_outputs": claim.n_outputs, "norm": claim.norm,
            "eps": list(claim.eps), "clip": None if claim.clip is None else list(claim.clip),
            "mean": None if claim.mean is None else list(claim.mean),
            "std": None if claim.std is None else list(claim.std),
            "claimed_certified_accuracy": list(claim.claimed_certified_accuracy),
            "claimed_clean_accuracy": claim.claimed_clean_accuracy}


def build_report(claim: Claim, items: Sequence[AuditItem], outcomes) -> dict:
    """The report dict from the plan and the outcomes so far (mapping by item key, or aligned list).

    An outcome is ``{"verdict", "seconds", "certificate", "counterexample"}`` (paths or None),
    optionally with ``"method"``, ``"reason"`` and ``"spec"``. Items without one are pending.
    """
    rows = [sample_entry(item, _outcome_of(outcomes, i, item)) for i, item in enumerate(items)]
    per_eps = []
    for k, eps in enumerate(claim.eps):
        mine = [r for r, item in zip(rows, items) if item.eps_index == k]
        per_eps.append(eps_summary(eps, mine, claim.claimed_certified_accuracy[k]))
    report = {"format": FORMAT, "version": VERSION, "claim": claim_description(claim),
              "claim_verdict": overall_verdict([e["claim_verdict"] for e in per_eps]),
              "per_eps": per_eps, "clean_claim": None, "complete": all(r["verdict"] != "pending" for r in rows),
              "samples": rows}
    if claim.claimed_clean_accuracy is not None and per_eps:
        measured = per_eps[0]["clean"]
        verdict = "confirmed" if measured >= Fraction(repr(claim.claimed_clean_accuracy)) * claim.n_samples else "refuted"
        report["clean_claim"] = {"claimed": claim.claimed_clean_accuracy, "measured": measured / claim.n_samples,
                                 "verdict": verdict}
    return report


# ----------------------------------------------------------------------------- pictures

def counterexample_pictures(claim: Claim, report: dict, base: str | Path, limit: int = 12) -> tuple[Picture, ...]:
    """Up to ``limit`` counterexamples of ``report`` (files under ``base``), in pixel space, to draw."""
    from verifier.counterexample import from_json

    base = Path(base)
    pictures = []
    for row in report["samples"]:
        if row["verdict"] != "violated" or not row["counterexample"] or len(pictures) >= limit:
            continue
        cex = from_json(json.loads((base / row["counterexample"]).read_text()))
        adversarial = denormalise(cex.x, claim.mean, claim.std, claim.input_shape).reshape(claim.sample_shape)
        pictures.append(Picture(row["key"], row["sample"], row["eps"], row["label"], int(np.argmax(cex.y)),
                                np.array(claim.x[row["sample"]]), adversarial))
    return tuple(pictures)


def write_report(report: dict, out_dir: str | Path, extras: Extras | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` (with the tightness table) and a self-contained ``report.html``; return both paths."""
    extras = extras or Extras()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = dict(report, tightness=extras.tightness)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    html_path.write_text(render_html(report, extras))
    return json_path, html_path

