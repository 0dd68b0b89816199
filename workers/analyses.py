"""Analysis jobs in a worker: verified attribution maps (``explain``) and NAP properties (``nap``).

Like verification, they stop at the job's cancel or time limit (``verifier.clock``); their output
is the job's ``analysis`` (JSON) plus artifacts stored as blobs.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from workers import runtime


def run(job, timeout: float, watch) -> tuple[str, dict]:
    """(final state, column values) of an explain or nap job."""
    from verifier import clock
    from verifier.explain import ExplainError
    from verifier.nap.pattern import NapError

    t0 = time.monotonic()
    b = runtime.blobs()
    model_path, input_path = str(b.path(job.model_sha256)), b.path(job.spec_sha256)
    try:
        with clock.cancel_scope(watch.cancel):
            analysis, artifacts, verdict, reason = (_explain if job.kind == "explain" else _naps)(
                job, model_path, input_path, timeout, b)
    except (ExplainError, NapError, ValueError, OSError) as exc:
        analysis, artifacts, verdict = None, {}, "error"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if watch.cancel.is_set() and verdict not in ("holds", "violated"):
        verdict, reason = ("timeout", "time limit passed") if watch.reason == "time limit" else ("unknown", "cancelled")
    state = "cancelled" if watch.reason == "cancelled" else "done"
    seconds = time.monotonic() - t0
    summary = {"verdict": verdict, "result": verdict, "reason": reason, "route": job.kind, "method": job.kind,
               "timings": {"total": seconds}, "analysis": analysis}
    return state, {"verdict": verdict, "reason": reason, "result": summary, "result_text": None,
                   "artifacts": artifacts, "seconds": seconds}


def _explain(job, model_path: str, input_path: Path, timeout: float, b):
    """The attribution map (no property, so no verdict: the map's bounds are the answer)."""
    import numpy as np

    from verifier.explain import explain, save

    o = job.options
    x = np.load(input_path, allow_pickle=False)
    result = explain(model_path, x, o["label"], o["patch"], o["eps"], o.get("clip"), o.get("grid"),
                     complement=o.get("complement", False))
    with tempfile.TemporaryDirectory(prefix="nnverify-explain-") as tmp:
        js, png = save(result, x, tmp)
        artifacts = {"explain.json": b.put(js.read_bytes()), "explain.png": b.put(png.read_bytes())}
    worst = min(p["margin_lower"] for p in result["patches"])
    return result, artifacts, None, f"{len(result['patches'])} patches bounded; worst guaranteed margin {worst:.4g}"


def _naps(job, model_path: str, input_path: Path, timeout: float, b):
    """Each class's NAP property and each pair's non-ambiguity; the job's verdict summarises them."""
    from verifier.nap.verify import verify_naps

    o = job.options
    doc = json.loads(input_path.read_text())
    report = verify_naps(model_path, doc, o.get("classes"), [tuple(p) for p in o["pairs"]] if o.get("pairs") else None,
                         timeout=timeout)
    verdicts = [p["verdict"] for p in report["classes"] + report["non_ambiguity"]]
    artifacts = {"naps-report.json": b.put(json.dumps(report, indent=1).encode())}
    verdict = ("violated" if "violated" in verdicts else "holds" if verdicts and all(v == "holds" for v in verdicts)
               else "timeout" if "timeout" in verdicts else "unknown")
    counts = {v: verdicts.count(v) for v in sorted(set(verdicts))}
    return _brief(report), artifacts, verdict, f"{len(verdicts)} properties: {counts}"


def _brief(report: dict) -> dict:
    """The NAP report without certificates and witnesses (those are in naps-report.json)."""
    keep = ("label", "pair", "verdict", "reason", "seconds", "method", "checked")
    return {"model_sha256": report["model_sha256"],
            "classes": [{k: v for k, v in p.items() if k in keep} for p in report["classes"]],
            "non_ambiguity": [{k: v for k, v in p.items() if k in keep} for p in report["non_ambiguity"]]}
