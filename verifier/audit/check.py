"""Re-check an audit report's evidence, trusting nothing the report says without re-deriving it.

For every sample the report counts:

* its property file is re-generated from the kept samples and claim parameters and must match
  byte for byte (the proof is about the claimed eps-ball and label, not some other property);
* ``holds``: the certificate passes the independent float64 checker
  (``verifier.check.check_files``) against the kept model and property;
* ``violated``: the counterexample lies in the property's box (exactly, float64) and onnxruntime,
  run on the kept model, gives some other class a score >= the label's;
* the per-eps counts and the claim verdict equal those recomputed from the per-sample verdicts.
The kept model must have the sha256 the report names.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verifier.audit.plan import input_box, robustness_vnnlib
from verifier.audit.report import claim_verdict, overall_verdict, samples_sha256

MAX_FAILURES = 50


@dataclass
class AuditCheck:
    """The outcome of ``audit_check``: ok only when every piece of evidence re-checks."""

    ok: bool = True
    certificates: int = 0          # certificates re-checked and accepted
    counterexamples: int = 0       # counterexamples re-run and confirmed
    unchecked: list[str] = field(default_factory=list)   # holds without a certificate (exact proofs)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, message: str) -> None:
        """Record one failure."""
        self.ok = False
        if len(self.failures) < MAX_FAILURES:
            self.failures.append(message)


def _load_evidence(report: dict, base: Path, result: AuditCheck):
    """(model path, x, y, claim record) of the report's kept evidence, or None after a failure."""
    from verifier.certificate import sha256_file

    ev = report.get("evidence") or {}
    model, data = base / ev.get("model", "?"), base / ev.get("data", "?")
    try:
        sha = sha256_file(model)
        with np.load(data, allow_pickle=False) as archive:
            x, y, record = archive["x"], archive["y"], json.loads(str(archive["claim"]))
    except (OSError, KeyError, ValueError) as exc:
        result.fail(f"evidence unreadable: {type(exc).__name__}: {exc}")
        return None
    claim = report["claim"]
    if sha != ev.get("model_sha256") or sha != claim["model_sha256"]:
        result.fail(f"kept model {model.name} has sha256 {sha[:16]}..., the report names {claim['model_sha256'][:16]}...")
        return None
    if samples_sha256(x, y) != claim.get("samples_sha256"):
        result.fail("the kept samples are not the ones the report names (samples_sha256 differs)")
        return None
    differ = [k for k in ("eps", "clip", "mean", "std", "norm", "input_shape", "n_outputs") if record.get(k) != claim.get(k)]
    if differ:
        result.fail(f"the kept claim parameters differ from the report's: {', '.join(differ)}")
        return None
    return model, x, y, record


def _expected_spec(row: dict, x: np.ndarray, y: np.ndarray, record: dict) -> str:
    """The property text ``plan`` writes for this row (comment line excluded by the caller)."""
    lower, upper = input_box(x[row["sample"]], row["eps"], record["clip"], record["mean"], record["std"],
                             tuple(record["input_shape"]))
    return robustness_vnnlib(lower, upper, int(y[row["sample"]]), record["n_outputs"], "")


def _body(text: str) -> str:
    """A property without its comment lines."""
    return "\n".join(line for line in text.splitlines() if not line.startswith(";"))


def _check_certificate(row: dict, base: Path, model: Path, result: AuditCheck) -> None:
    """The independent checker on one kept certificate."""
    from verifier.check import check_files

    if not row["certificate"]:
        result.unchecked.append(row["key"])
        return
    report = check_files(model, base / row["spec"], base / row["certificate"])
    if report.ok:
        result.certificates += 1
    else:
        result.fail(f"{row['key']}: certificate REJECTED: {'; '.join(report.reasons[:3])}")


def _check_counterexample(row: dict, base: Path, runner, lower, upper, label: int, result: AuditCheck) -> None:
    """Re-run one kept counterexample on onnxruntime: inside the box, and another class >= the label."""
    from verifier.counterexample import from_json

    if not row["counterexample"]:
        result.fail(f"{row['key']}: violated without a counterexample file")
        return
    try:
        cex = from_json(json.loads((base / row["counterexample"]).read_text()))
    except (OSError, ValueError) as exc:
        result.fail(f"{row['key']}: counterexample unreadable: {exc}")
        return
    if cex.x.shape != lower.shape or not (np.all(cex.x >= lower) and np.all(cex.x <= upper)):
        result.fail(f"{row['key']}: counterexample lies outside the eps-ball")
        return
    y = runner.run(cex.x)[0]
    others = np.delete(y, label)
    if not np.max(others) >= y[label]:
        result.fail(f"{row['key']}: onnxruntime gives class {label} the top score at the counterexample "
                    f"(margin {y[label] - np.max(others):.3g}): not a counterexample")
        return
    result.counterexamples += 1


def _check_counts(report: dict, result: AuditCheck) -> None:
    """The per-eps counts and verdicts equal those recomputed from the per-sample verdicts."""
    verdicts = []
    for e in report["per_eps"]:
        rows = [r for r in report["samples"] if r["eps"] == e["eps"]]
        got = {v: sum(r["verdict"] == v for r in rows) for v in ("holds", "violated", "misclassified")}
        n, clean = len(rows), len(rows) - got["misclassified"]
        expect = {"n": n, "clean": clean, "certified": got["holds"], "falsified": got["violated"],
                  "unknown": clean - got["holds"] - got["violated"] - sum(r["verdict"] == "pending" for r in rows)}
        wrong = {k: (e.get(k), v) for k, v in expect.items() if e.get(k) != v}
        verdict = claim_verdict(got["holds"], clean - got["violated"], n, e["claimed_certified_accuracy"])
        if wrong or verdict != e["claim_verdict"]:
            result.fail(f"eps {e['eps']:g}: the report's counts {wrong or ''} / verdict {e['claim_verdict']} "
                        f"differ from the per-sample verdicts (verdict {verdict})")
        verdicts.append(verdict)
    if overall_verdict(verdicts) != report["claim_verdict"]:
        result.fail(f"overall verdict {report['claim_verdict']} differs from the per-eps verdicts")


def audit_check(report_path: str | Path) -> AuditCheck:
    """Re-check every certificate and counterexample an audit report keeps (see module docstring)."""
    from verifier.model.reference import OnnxRunner

    t0 = time.monotonic()
    result = AuditCheck()
    report_path = Path(report_path)
    base = report_path.parent
    try:
        report = json.loads(report_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        result.fail(f"report {report_path}: unreadable: {exc}")
        return result
    loaded = _load_evidence(report, base, result)
    if loaded is None:
        return result
    model, x, y, record = loaded
    runner = OnnxRunner(str(model))
    _check_counts(report, result)
    for row in report["samples"]:
        if row["verdict"] not in ("holds", "violated"):
            continue
        if int(y[row["sample"]]) != row["label"]:
            result.fail(f"{row['key']}: label {row['label']} differs from the kept data's {int(y[row['sample']])}")
            continue
        spec = base / (row["spec"] or "?")
        if not spec.is_file() or _body(spec.read_text()) != _body(_expected_spec(row, x, y, record)):
            result.fail(f"{row['key']}: property file {row['spec']} is not the claimed eps-ball property")
            continue
        if row["verdict"] == "holds":
            _check_certificate(row, base, model, result)
        else:
            lower, upper = input_box(x[row["sample"]], row["eps"], record["clip"], record["mean"], record["std"],
                                     tuple(record["input_shape"]))
            _check_counterexample(row, base, runner, lower, upper, row["label"], result)
    result.seconds = time.monotonic() - t0
    return result
