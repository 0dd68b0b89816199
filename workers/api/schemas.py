"""What the API sends back (schemas split by direction: requests are form fields and files)."""
from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel


class JobCreated(BaseModel):
    id: str
    state: str
    queue: str


class JobPublic(BaseModel):
    """A job as its tenant sees it."""

    id: str
    kind: str                       # verify | explain | nap
    state: str                      # queued / running / done / failed / cancelled
    verdict: str | None             # holds / violated / unknown / timeout / error
    result: str | None              # the VNN-COMP word: unsat / sat / unknown / timeout / error
    reason: str
    route: str | None
    route_reason: str | None
    method: str | None
    queue: str
    queue_reason: str
    priority: int
    timeout: float
    requested_method: str
    model_name: str
    spec_name: str
    model_sha256: str
    spec_sha256: str
    attempts: int
    worker: str
    cancel_requested: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    seconds: float | None
    timings: dict[str, float]
    bounds: list[dict[str, Any]]
    certificate_checked: bool | None
    has_certificate: bool
    has_counterexample: bool
    progress: dict[str, Any] | None
    log: list[str]
    artifacts: list[str]            # GET /v1/jobs/{id}/artifacts/{name}
    analysis: dict[str, Any] | None  # explain / nap jobs: the attribution map or the NAP report
    distributed: dict[str, Any] | None  # {"chunks", "workers"} when the search was spread over the pool


class JobPage(BaseModel):
    items: list[JobPublic]
    total: int
    limit: int
    offset: int


class Me(BaseModel):
    tenant: str


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """Times are stored in UTC; SQLite hands them back without the zone."""
    return value.replace(tzinfo=dt.timezone.utc) if value is not None and value.tzinfo is None else value


def job_public(job, progress: dict | None) -> JobPublic:
    """The public view of a job row (``progress``: the live snapshot while it runs)."""
    res = job.result or {}
    return JobPublic(
        id=job.id, kind=job.kind or "verify", state=job.state, verdict=job.verdict, result=res.get("result"), reason=job.reason or "",
        route=res.get("route"), route_reason=res.get("route_reason"), method=res.get("method"),
        queue=job.queue, queue_reason=job.queue_reason, priority=job.priority,
        timeout=float(job.options.get("timeout", 0.0)), requested_method=job.options.get("method", "auto"),
        model_name=job.model_name, spec_name=job.spec_name, model_sha256=job.model_sha256,
        spec_sha256=job.spec_sha256, attempts=job.attempts, worker=job.worker,
        cancel_requested=bool(job.cancel_requested), created_at=_utc(job.created_at),
        started_at=_utc(job.started_at), finished_at=_utc(job.finished_at), seconds=job.seconds, timings=res.get("timings", {}),
        bounds=res.get("bounds", []), certificate_checked=res.get("certificate_checked"),
        has_certificate=job.certificate_sha256 is not None, has_counterexample=job.counterexample_sha256 is not None,
        progress=progress if job.state in ("queued", "running") else None, log=res.get("log", []),
        artifacts=sorted(job.artifacts or {}), analysis=res.get("analysis"), distributed=res.get("distributed"))
