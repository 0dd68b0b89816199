"""``/v1/jobs``: submit, read, stream, cancel and list verification jobs."""
from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse

from workers.api.deps import Svc, Tenant, owned
from workers.api.schemas import JobCreated, JobPage, JobPublic, job_public
from workers.celery_app import send_verify
from workers.events import registered_workers
from workers.limits import UploadError, check_model, check_spec, route
from workers.store import FINAL, STATES

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
METHODS = ("auto", "attack", "ibp", "crown", "alpha", "bab", "milp", "sat")


@router.post("", status_code=202, response_model=JobCreated)
async def submit(svc: Svc, tenant: Tenant, model: Annotated[UploadFile, File()], spec: Annotated[UploadFile, File()],
                 timeout: Annotated[float | None, Form()] = None, method: Annotated[str, Form()] = "auto",
                 priority: Annotated[int, Form(ge=0, le=9)] = 5) -> JobCreated:
    """Check the uploads, store them by sha256, write the job row, then enqueue it."""
    timeout = svc.settings.default_timeout if timeout is None else timeout
    if not 0 < timeout <= svc.settings.max_timeout:
        raise HTTPException(422, f"timeout must be in (0, {svc.settings.max_timeout:g}] seconds")
    if method not in METHODS:
        raise HTTPException(422, f"method must be one of {', '.join(METHODS)}")
    model_bytes = await read_capped(model, svc.settings.max_model_bytes, "model")
    spec_bytes = await read_capped(spec, svc.settings.max_spec_bytes, "spec")
    return await run_in_threadpool(_accept, svc, tenant, model, spec, model_bytes, spec_bytes, timeout, method, priority)


def _accept(svc, tenant, model, spec, model_bytes, spec_bytes, timeout, method, priority) -> JobCreated:
    try:
        info = check_model(model_bytes, svc.settings)
        check_spec(spec_bytes, info, svc.settings)
    except UploadError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    gpus = sum("gpu" in w.get("queues", []) for w in registered_workers(svc.redis, svc.keys))
    queue, why = route(info, gpus)
    job = svc.store.add_job(tenant=tenant, model_sha256=svc.blobs.put(model_bytes),
                            spec_sha256=svc.blobs.put(spec_bytes), model_name=display_name(model.filename),
                            spec_name=display_name(spec.filename), options={"timeout": timeout, "method": method},
                            queue=queue, queue_reason=why, priority=priority)
    send_verify(svc.celery, job.id, queue, priority, timeout)
    return JobCreated(id=job.id, state=job.state, queue=queue)


async def read_capped(upload: UploadFile, limit: int, what: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{what} upload exceeds {limit} bytes")
    return data


def display_name(filename: str | None) -> str:
    """A display name only (never a path): the last component, printable, at most 255 chars."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in base if c.isprintable())[:255]


@router.get("", response_model=JobPage)
def list_jobs(svc: Svc, tenant: Tenant, state: Annotated[str | None, Query()] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0)] = 0) -> JobPage:
    """The caller's jobs, newest first."""
    if state is not None and state not in STATES:
        raise HTTPException(422, f"state must be one of {', '.join(STATES)}")
    rows, total = svc.store.jobs(tenant, state, limit, offset)
    return JobPage(items=[job_public(j, None) for j in rows], total=total, limit=limit, offset=offset)


def _job(svc, tenant: str, job_id: str):
    """The tenant's job (see ``owned``)."""
    return owned(svc.store.job, tenant, job_id, "job")


def _progress(svc, job_id: str) -> dict | None:
    raw = svc.redis.get(svc.keys.progress(job_id))
    return json.loads(raw) if raw else None


@router.get("/{job_id}", response_model=JobPublic)
def get_job(svc: Svc, tenant: Tenant, job_id: str) -> JobPublic:
    job = _job(svc, tenant, job_id)
    return job_public(job, _progress(svc, job_id) if job.state not in FINAL else None)


@router.get("/{job_id}/result", response_class=PlainTextResponse)
def get_result(svc: Svc, tenant: Tenant, job_id: str) -> PlainTextResponse:
    """The VNN-COMP result block (409 while the job has none)."""
    job = _job(svc, tenant, job_id)
    if job.result_text is None:
        raise HTTPException(409, f"job is {job.state}: no result yet")
    return PlainTextResponse(job.result_text, headers={"Content-Disposition": f'inline; filename="{job.id}-result.txt"'})


@router.get("/{job_id}/certificate")
def get_certificate(svc: Svc, tenant: Tenant, job_id: str) -> Response:
    return _artifact(svc, _job(svc, tenant, job_id), "certificate")


@router.get("/{job_id}/counterexample")
def get_counterexample(svc: Svc, tenant: Tenant, job_id: str) -> Response:
    return _artifact(svc, _job(svc, tenant, job_id), "counterexample")


def _artifact(svc, job, what: str) -> Response:
    sha = getattr(job, f"{what}_sha256")
    if sha is None:
        raise HTTPException(404, f"job {job.id} has no {what} (state {job.state}, verdict {job.verdict})")
    return Response(svc.blobs.get(sha), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{job.id}-{what}.json"'})


@router.get("/{job_id}/artifacts/{name}")
def get_artifact(svc: Svc, tenant: Tenant, job_id: str, name: str) -> Response:
    """A named file an analysis job produced (``explain.png``, ``explain.json``, ``naps-report.json``)."""
    job = _job(svc, tenant, job_id)
    sha = (job.artifacts or {}).get(name)
    if sha is None:
        raise HTTPException(404, f"job {job.id} has no artifact {name[:64]!r} (it has: {', '.join(sorted(job.artifacts or {})) or 'none'})")
    media = "image/png" if name.endswith(".png") else "application/json"
    return Response(svc.blobs.get(sha), media_type=media, headers={"Content-Disposition": f'inline; filename="{name}"'})


@router.delete("/{job_id}", response_model=JobPublic)
def cancel_job(svc: Svc, tenant: Tenant, job_id: str) -> JobPublic:
    """Revoke a queued job; ask a running one to stop (it does within about a second)."""
    job = _job(svc, tenant, job_id)
    if job.state not in FINAL:
        svc.redis.set(svc.keys.cancel(job_id), "1", ex=7 * 86400)
        if svc.store.request_cancel(job_id) == "cancelled":
            svc.celery.control.revoke(job_id)
    return job_public(svc.store.job(job_id), None)


@router.get("/{job_id}/events")
async def job_events(request: Request, svc: Svc, tenant: Tenant, job_id: str) -> StreamingResponse:
    """Server-sent events: a ``job`` snapshot, ``progress`` while it runs, and a final ``job``."""
    await run_in_threadpool(_job, svc, tenant, job_id)
    return StreamingResponse(_stream(request, svc, job_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(request: Request, svc, job_id: str):
    pubsub = svc.aredis.pubsub()
    await pubsub.subscribe(svc.keys.events(job_id))
    try:
        job = await run_in_threadpool(svc.store.job, job_id)
        yield _sse("job", job_public(job, await _aprogress(svc, job_id)).model_dump_json())
        last_poll = asyncio.get_running_loop().time()
        while job.state not in FINAL and not await request.is_disconnected():
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None:
                yield _sse("progress", msg["data"].decode())
            now = asyncio.get_running_loop().time()
            if msg is None or now - last_poll > 2.0 or b'"done"' in msg["data"] or b'"start"' in msg["data"]:
                state, (job, last_poll) = job.state, (await run_in_threadpool(svc.store.job, job_id), now)
                if job.state != state and job.state not in FINAL:   # e.g. queued -> running
                    yield _sse("job", job_public(job, await _aprogress(svc, job_id)).model_dump_json())
                if msg is None:
                    yield ": keep-alive\n\n"
        if job.state in FINAL:
            yield _sse("job", job_public(job, None).model_dump_json())
            yield _sse("end", json.dumps({"state": job.state, "verdict": job.verdict}))
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()


async def _aprogress(svc, job_id: str) -> dict | None:
    raw = await svc.aredis.get(svc.keys.progress(job_id))
    return json.loads(raw) if raw else None


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"
