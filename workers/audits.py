"""Audits in the service: plan a claim into one job per (sample, eps), aggregate as jobs finish.

Torch-free: the plan uses onnxruntime, the report is plain aggregation (``verifier.audit``).
The claim's model and data are blobs; the audit's folder holds links to them under the names
the claim loader expects, so ``claim_from_dict`` checks an uploaded claim exactly as a local one.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import asdict
from pathlib import Path

from verifier.audit.claim import Claim, ClaimError, claim_from_dict
from verifier.audit.plan import AuditItem, plan_items
from verifier.audit.report import Extras, build_report, counterexample_pictures, write_report
from verifier.audit.run import EVIDENCE, evidence_files
from workers.store import FINAL

DEFAULT_TIMEOUT = 30.0


def audit_folder(data_root: str | Path, audit_id: str) -> Path:
    """Where an audit's model and data are linked (the id is a server-made UUID, never user text)."""
    return Path(data_root) / "audits" / str(uuid.UUID(audit_id))


def link_inputs(folder: Path, model_blob: Path, data_blob: Path) -> None:
    """Hard-link (or copy) the blobs in as ``model.onnx`` and ``data.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    for blob, name in ((model_blob, "model.onnx"), (data_blob, "data.npz")):
        target = folder / name
        if not target.exists():
            try:
                os.link(blob, target)
            except OSError:
                shutil.copyfile(blob, target)


def load_claim(claim: dict, folder: Path) -> Claim:
    """The claim with its model and data read from the audit's folder (``ClaimError`` if bad)."""
    if not isinstance(claim, dict):
        raise ClaimError("a claim is a JSON object")
    return claim_from_dict(dict(claim, model="model.onnx", data="data.npz"), folder)


def plan(claim: Claim) -> list[AuditItem]:
    return plan_items(claim)


def stored_items(items: list[AuditItem]) -> list[dict]:
    """The plan as stored with the audit (the property texts live in the jobs' spec blobs)."""
    return [dict(asdict(it), vnnlib_text=None) for it in items]


def restored_items(rows: list[dict]) -> list[AuditItem]:
    return [AuditItem(**row) for row in rows]


def outcomes_of(jobs) -> dict[str, dict]:
    """Item key -> outcome, for the finished jobs (paths as the bundle lays the evidence out)."""
    out = {}
    for job in jobs:
        if job.state not in FINAL or job.item_key is None:
            continue
        key = job.item_key
        verdict = job.verdict or ("unknown" if job.state == "cancelled" else "error")
        out[key] = {"verdict": verdict, "seconds": job.seconds or 0.0, "method": (job.result or {}).get("method", ""),
                    "reason": job.reason or "", "spec": f"{EVIDENCE}/specs/{key}.vnnlib",
                    "certificate": f"{EVIDENCE}/certificates/{key}.json" if job.certificate_sha256 else None,
                    "counterexample": f"{EVIDENCE}/counterexamples/{key}.json" if job.counterexample_sha256 else None,
                    "certificate_checked": (job.result or {}).get("certificate_checked"), "job": job.id}
    return out


def report_of(claim: Claim, items: list[AuditItem], jobs, timeout: float) -> dict:
    """The audit's report so far (pending items count as pending)."""
    report = build_report(claim, items, outcomes_of(jobs))
    report["timeout_per_sample"] = timeout
    report["jobs"] = {"total": len(jobs), "finished": sum(j.state in FINAL for j in jobs)}
    return report


def bundle(claim: Claim, items: list[AuditItem], jobs, timeout: float, blobs) -> bytes:
    """A zip of report.json, report.html and every kept piece of evidence: ``nnverify audit-check``
    re-checks it after unzipping."""
    with tempfile.TemporaryDirectory(prefix="nnverify-audit-") as tmp:
        base = Path(tmp)
        _lay_out(claim, items, jobs, timeout, blobs, base)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(base.rglob("*")):
                if path.is_file():
                    z.write(path, path.relative_to(base).as_posix())
        return buf.getvalue()


def html_of(claim: Claim, items: list[AuditItem], jobs, timeout: float, blobs) -> str:
    """The self-contained HTML report (counterexample pictures included; the IBP tightness table
    needs torch and is left to ``nnverify audit`` run locally)."""
    with tempfile.TemporaryDirectory(prefix="nnverify-audit-") as tmp:
        _lay_out(claim, items, jobs, timeout, blobs, Path(tmp))
        return (Path(tmp) / "report.html").read_text()


def _lay_out(claim: Claim, items: list[AuditItem], jobs, timeout: float, blobs, base: Path) -> None:
    """Write the report (JSON and HTML) and its evidence under ``base``, as ``nnverify audit`` does."""
    report = report_of(claim, items, jobs, timeout)
    report["evidence"] = evidence_files(claim, base)
    _write_evidence(base, jobs, blobs)
    pictures = counterexample_pictures(claim, report, base)
    total = sum(r["verdict"] == "violated" for r in report["samples"])
    write_report(report, base, Extras(None, pictures, claim.sample_shape, total))


def _write_evidence(base: Path, jobs, blobs) -> None:
    for job in jobs:
        if job.item_key is None:
            continue
        ev = base / EVIDENCE
        (ev / "specs" / f"{job.item_key}.vnnlib").write_bytes(blobs.get(job.spec_sha256))
        if job.certificate_sha256:
            (ev / "certificates" / f"{job.item_key}.json").write_bytes(blobs.get(job.certificate_sha256))
        if job.counterexample_sha256:
            (ev / "counterexamples" / f"{job.item_key}.json").write_bytes(blobs.get(job.counterexample_sha256))
