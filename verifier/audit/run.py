"""Run an audit locally: ``verify`` on every (sample, eps), evidence kept, report written.

Layout of ``out_dir``::

    report.json, report.html
    evidence/model.onnx            the audited model (a copy; certificates name it by sha256)
    evidence/data.npz              the audited samples (x in pixel space, y) and the claim (JSON)
    evidence/specs/<key>.vnnlib    each item's property
    evidence/certificates/<key>.json, evidence/counterexamples/<key>.json
    evidence/outcomes.jsonl        one line per finished item: an interrupted audit resumes from it

Report paths are relative to ``out_dir``, so the folder can be moved and re-checked as a whole.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from verifier.audit.claim import Claim
from verifier.audit.plan import AuditItem, plan_items
from verifier.audit.report import Extras, build_report, counterexample_pictures, write_report

EVIDENCE = "evidence"
DEFAULT_TIMEOUT = 30.0


@dataclass
class Progress:
    """What the progress callback receives after each item: counts so far and the time left."""

    done: int
    total: int
    counts: dict = field(default_factory=dict)   # verdict -> items
    elapsed: float = 0.0
    eta: float | None = None                     # seconds, from the mean time of the verified items so far
    seconds: float = 0.0                         # verification time of the items counted so far
    verified: int = 0                            # items counted that were verified (not misclassified)


def require_plotting() -> None:
    """Fail before any verification when matplotlib (the ``audit`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401 -- only probed here
    except ImportError as exc:
        raise ImportError("the audit report needs matplotlib: pip install 'nnverify[audit]'") from exc


def evidence_files(claim: Claim, out_dir: Path) -> dict:
    """Copy the model and the samples under ``out_dir/evidence``; return their relative paths."""
    ev = out_dir / EVIDENCE
    for sub in ("specs", "certificates", "counterexamples"):
        (ev / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(claim.model, ev / "model.onnx")
    np.savez_compressed(ev / "data.npz", x=claim.x, y=claim.y,
                        claim=np.array(json.dumps(_claim_record(claim))))
    return {"model": f"{EVIDENCE}/model.onnx", "data": f"{EVIDENCE}/data.npz", "model_sha256": claim.model_sha256}


def _claim_record(claim: Claim) -> dict:
    """The claim's parameters that define each property (what ``audit-check`` re-plans from)."""
    return {"eps": list(claim.eps), "clip": None if claim.clip is None else list(claim.clip),
            "mean": None if claim.mean is None else list(claim.mean),
            "std": None if claim.std is None else list(claim.std), "norm": claim.norm,
            "input_shape": list(claim.input_shape), "n_outputs": claim.n_outputs}


def verify_item(model, item: AuditItem, out_dir: Path, config) -> dict:
    """Verify one item; keep its spec, certificate or counterexample; return its outcome."""
    from verifier.certificate import save_certificate
    from verifier.counterexample import to_json
    from verifier.portfolio import verify

    spec = f"{EVIDENCE}/specs/{item.key}.vnnlib"
    (out_dir / spec).write_text(item.vnnlib_text)
    t0 = time.monotonic()
    result = verify(model, str(out_dir / spec), config)
    seconds = time.monotonic() - t0
    outcome = {"verdict": result.verdict.value, "seconds": round(seconds, 4), "method": result.method,
               "reason": result.reason, "spec": spec, "certificate": None, "counterexample": None,
               "certificate_checked": result.certificate_checked}
    if result.certificate is not None:
        outcome["certificate"] = f"{EVIDENCE}/certificates/{item.key}.json"
        save_certificate(result.certificate, out_dir / outcome["certificate"])
    if result.counterexample is not None:
        outcome["counterexample"] = f"{EVIDENCE}/counterexamples/{item.key}.json"
        (out_dir / outcome["counterexample"]).write_text(json.dumps(to_json(result.counterexample)) + "\n")
    return outcome


def _finished(out_dir: Path, items: list[AuditItem]) -> dict[str, dict]:
    """Outcomes of an earlier run of the same plan (same property text), read from outcomes.jsonl."""
    path = out_dir / EVIDENCE / "outcomes.jsonl"
    if not path.is_file():
        return {}
    texts = {it.key: it.vnnlib_text for it in items}
    done = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue   # a line cut short by the interruption
        key, outcome = entry.get("key"), entry.get("outcome")
        spec = out_dir / (outcome or {}).get("spec", "")
        if key in texts and spec.is_file() and spec.read_text() == texts[key]:
            done[key] = outcome
    return done


def run_audit(claim: Claim, out_dir: str | Path, timeout_per_sample: float | None = None,
              progress: Callable[[Progress], object] | None = None, *, config=None,
              tightness_samples: int = 8, tightness_bounds: str = "crown") -> dict:
    """Audit ``claim`` into ``out_dir``; return the report (also written as report.json / report.html).

    ``timeout_per_sample``: seconds per (sample, eps); default the claim's, else 30. ``config``: a
    ``VerifyConfig`` whose other settings to use (its timeout is replaced). ``tightness_samples``:
    correctly classified samples per eps for the IBP tightness table (0: skip it);
    ``tightness_bounds``: its outer bounds, "crown" or "alpha" (tighter, slower).
    """
    from verifier.config import VerifyConfig
    from verifier.model import load_onnx

    require_plotting()
    out_dir = Path(out_dir)
    timeout = timeout_per_sample or claim.timeout_per_sample or DEFAULT_TIMEOUT
    config = replace(config or VerifyConfig(), timeout=float(timeout))
    items = plan_items(claim)
    evidence = evidence_files(claim, out_dir)
    outcomes = _finished(out_dir, items)
    model = load_onnx(str(claim.model))
    left = sum(not it.misclassified and it.key not in outcomes for it in items)
    state = Progress(0, len(items))
    started = time.monotonic()
    with (out_dir / EVIDENCE / "outcomes.jsonl").open("a") as log:
        for item in items:
            if not item.misclassified and item.key not in outcomes:
                outcomes[item.key] = verify_item(model, item, out_dir, config)
                log.write(json.dumps({"key": item.key, "outcome": outcomes[item.key]}) + "\n")
                log.flush()
                left -= 1
            _advance(state, item, outcomes.get(item.key), left, started)
            if progress is not None:
                progress(state)
    report = build_report(claim, items, outcomes)
    report["evidence"] = evidence
    report["timeout_per_sample"] = float(timeout)
    tightness = None
    if tightness_samples > 0:
        from verifier.audit.tightness import ibp_tightness

        tightness = ibp_tightness(claim, items, tightness_samples, outer=tightness_bounds)
    total = sum(r["verdict"] == "violated" for r in report["samples"])
    extras = Extras(tightness, counterexample_pictures(claim, report, out_dir), claim.sample_shape, total)
    write_report(report, out_dir, extras)
    return dict(report, tightness=tightness)


def _advance(state: Progress, item: AuditItem, outcome: dict | None, left: int, started: float) -> None:
    """Count ``item`` into ``state`` (``left``: items still to verify) and re-estimate the time left."""
    verdict = "misclassified" if outcome is None else outcome["verdict"]
    state.done += 1
    state.counts[verdict] = state.counts.get(verdict, 0) + 1
    state.elapsed = time.monotonic() - started
    if outcome is not None:
        state.seconds += outcome["seconds"]
        state.verified += 1
    state.eta = state.seconds / state.verified * left if state.verified else None
