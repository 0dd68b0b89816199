"""One job's run inside a worker process: claim, verify, store; idempotent on the job id."""
from __future__ import annotations

import logging
import time

import redis
import sqlalchemy.exc

from workers import analyses, runtime
from workers.events import Keys, clean
from workers.runtime import Lease, Watch, publish_final, settings, store

log = logging.getLogger("nnverify.worker")
INFRASTRUCTURE = (redis.ConnectionError, redis.TimeoutError, sqlalchemy.exc.OperationalError)


def run(job_id: str, grace: float) -> str:
    """Run the job unless it is final or another delivery holds it; what happened, in a word."""
    st, keys = store(), Keys(settings())
    job = st.job(job_id)
    if job is None or job.state in ("done", "failed", "cancelled"):
        return "skipped"
    lease = Lease(runtime.redis_client(), keys, job_id, settings().lease_seconds)
    if not lease.acquire():
        return "leased"
    try:
        return _run_claimed(job_id, lease, grace)
    finally:
        lease.release()


def _run_claimed(job_id: str, lease: Lease, grace: float) -> str:
    st = store()
    attempt = st.claim(job_id, runtime.worker_name())
    if attempt is None:
        return "skipped"
    job = st.job(job_id)
    if attempt > settings().max_attempts:
        return _end(job_id, attempt, "failed", verdict="error",
                    reason=f"job lost with its worker {attempt - 1} times; not retried")
    if job.cancel_requested or runtime.redis_client().exists(Keys(settings()).cancel(job_id)):
        return _end(job_id, attempt, "cancelled", reason="cancelled before it ran")
    timeout = float(job.options.get("timeout", settings().default_timeout))
    try:
        with Watch(job_id, lease, timeout + grace) as watch:
            watch.progress({"event": "start", "attempt": attempt, "worker": runtime.worker_name()})
            run = _verify if job.kind in (None, "verify") else analyses.run   # explain / nap jobs
            state, values = run(job, timeout, watch)
    except INFRASTRUCTURE:
        raise   # the task retries the job: infrastructure trouble is not the job's fault
    except Exception as exc:   # a bug must end the job, not leave it running
        log.exception("job %s failed", job_id)
        state, values = "failed", {"verdict": "error", "reason": f"internal error: {type(exc).__name__}: {exc}"}
    return _end(job_id, attempt, state, **values)


def _verify(job, timeout: float, watch: Watch) -> tuple[str, dict]:
    """Call the verifier on the job's blobs; (final state, column values)."""
    from verifier.config import VerifyConfig
    from verifier.portfolio import InputError, load_inputs, verify
    from verifier.result import Result, Verdict

    t0 = time.monotonic()
    b = runtime.blobs()
    pool = None   # the worker pool's share of an input-split search (workers/distributed.py)
    try:
        model, cached = runtime.models().get(job.model_sha256, str(b.path(job.model_sha256)))
        model, spec, _ = load_inputs(model, str(b.path(job.spec_sha256)))
    except (InputError, ValueError, OSError) as exc:
        result = Result(Verdict.ERROR, reason=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        cached = False
    else:
        config = VerifyConfig.from_dict(dict(job.options.get("config", {}), timeout=timeout,
                                             method=job.options.get("method", "auto"),
                                             workers=1))
        config, pool = _pool(job, config)
        result = verify(model, str(b.path(job.spec_sha256)), config, cancel=watch.cancel, progress=watch.progress,
                        offload=pool)
    seconds = time.monotonic() - t0
    if watch.reason == "time limit" and result.verdict is not Verdict.HOLDS and result.verdict is not Verdict.VIOLATED:
        result.verdict, result.reason = Verdict.TIMEOUT, f"time limit of {timeout:g} s (+ grace) passed: {result.reason}"
    state = "cancelled" if watch.reason == "cancelled" and result.verdict not in (Verdict.HOLDS, Verdict.VIOLATED) else "done"
    columns = _columns(result, b, seconds, cached)
    if pool is not None:
        columns["result"]["distributed"] = pool.summary(runtime.worker_name())
    return state, columns


def _pool(job, config):
    """(config, chunk pool) for the job (see ``workers.distributed.for_job``)."""
    from workers import distributed
    from workers.tasks import app

    return distributed.for_job(job, config, settings(), runtime.redis_client(), app)


def _columns(result, b, seconds: float, cached: bool) -> dict:
    """The job row's result columns, with the certificate and counterexample stored as blobs."""
    import json

    summary = result.to_json()
    summary["model_cached"] = cached
    cert_sha = cex_sha = None
    if result.certificate is not None:
        cert_sha = b.put(json.dumps(result.certificate, separators=(",", ":"), allow_nan=False).encode())
    if result.counterexample is not None:
        cex_sha = b.put(json.dumps(result.counterexample_json(), indent=1).encode())
    return {"verdict": result.verdict.value, "reason": result.reason, "result": clean(summary),
            "result_text": result.vnncomp_text(), "certificate_sha256": cert_sha,
            "counterexample_sha256": cex_sha, "seconds": seconds}


def _end(job_id: str, attempt: int, state: str, **values) -> str:
    """Store the outcome (only this attempt's) and tell listeners."""
    if store().finish(job_id, attempt, state, **values):
        publish_final(job_id, state, values.get("verdict"))
        return state
    log.warning("job %s: attempt %d's result dropped (the job moved on)", job_id, attempt)
    return "duplicate"
