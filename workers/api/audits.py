"""``/v1/audits``: audit a robustness claim as one job per (sample, eps); read the report as it fills."""
from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from workers import audits
from workers.api.deps import Svc, Tenant, owned
from workers.api.jobs import read_capped
from workers.celery_app import verify_signature
from workers.events import registered_workers
from workers.limits import UploadError, check_model, route
from workers.store import FINAL

router = APIRouter(prefix="/v1/audits", tags=["audits"])


@router.post("", status_code=202)
async def submit_audit(svc: Svc, tenant: Tenant, claim: Annotated[UploadFile, File()],
                       model: Annotated[UploadFile, File()], data: Annotated[UploadFile, File()],
                       timeout_per_sample: Annotated[float | None, Form(gt=0)] = None,
                       priority: Annotated[int, Form(ge=0, le=9)] = 5) -> dict:
    """Check the claim (before any job), plan it, and start one job per correctly classified sample."""
    claim_bytes = await read_capped(claim, 1_000_000, "claim")
    model_bytes = await read_capped(model, svc.settings.max_model_bytes, "model")
    data_bytes = await read_capped(data, svc.settings.max_data_bytes, "data")
    return await run_in_threadpool(_start, svc, tenant, claim_bytes, model_bytes, data_bytes, timeout_per_sample,
                                   priority, model.filename or "model.onnx")


def _start(svc, tenant, claim_bytes, model_bytes, data_bytes, timeout, priority, model_name) -> dict:
    try:
        info = check_model(model_bytes, svc.settings)
        spec = json.loads(claim_bytes.decode("utf-8"))
    except UploadError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(422, f"claim: not valid JSON ({exc})") from exc
    audit_id = str(uuid.uuid4())
    folder = audits.audit_folder(svc.settings.data, audit_id)
    model_sha, data_sha = svc.blobs.put(model_bytes), svc.blobs.put(data_bytes)
    audits.link_inputs(folder, svc.blobs.path(model_sha), svc.blobs.path(data_sha))
    try:
        claim = audits.load_claim(spec, folder)
        items = audits.plan(claim)
    except (audits.ClaimError, ValueError) as exc:
        raise HTTPException(422, f"claim: {exc}") from exc
    timeout = float(timeout or claim.timeout_per_sample or audits.DEFAULT_TIMEOUT)
    if not timeout <= svc.settings.max_timeout:
        raise HTTPException(422, f"timeout_per_sample must be at most {svc.settings.max_timeout:g} s")
    gpus = sum("gpu" in w.get("queues", []) for w in registered_workers(svc.redis, svc.keys))
    queue, why = route(info, gpus)
    svc.store.add_audit(audit_id, tenant=tenant, claim=spec, model_sha256=model_sha, data_sha256=data_sha,
                        items=audits.stored_items(items))
    jobs = []
    for item in items:
        if item.misclassified:
            continue
        job = svc.store.add_job(tenant=tenant, model_sha256=model_sha,
                                spec_sha256=svc.blobs.put(item.vnnlib_text.encode()), model_name=model_name,
                                spec_name=f"{item.key}.vnnlib", options={"timeout": timeout, "method": "auto"},
                                queue=queue, queue_reason=why, priority=priority, audit_id=audit_id, item_key=item.key)
        jobs.append(job.id)
    _send(svc, jobs, queue, priority, timeout)
    return {"id": audit_id, "items": len(items), "jobs": len(jobs),
            "misclassified": sum(it.misclassified for it in items), "queue": queue}


def _send(svc, job_ids: list[str], queue: str, priority: int, timeout: float) -> None:
    """Send the audit's jobs as one Celery group."""
    from celery import group

    if job_ids:
        group(verify_signature(svc.celery, j, queue, priority, timeout) for j in job_ids).apply_async()


def _audit(svc, tenant: str, audit_id: str):
    return owned(svc.store.audit, tenant, audit_id, "audit")


def _loaded(svc, audit):
    """(claim, items, jobs, timeout) of a stored audit."""
    claim = audits.load_claim(audit.claim, audits.audit_folder(svc.settings.data, audit.id))
    jobs = svc.store.audit_jobs(audit.id)
    timeout = float(jobs[0].options["timeout"]) if jobs else audits.DEFAULT_TIMEOUT
    return claim, audits.restored_items(audit.items), jobs, timeout


@router.get("/{audit_id}")
def get_audit(svc: Svc, tenant: Tenant, audit_id: str) -> dict:
    """The report so far: per-eps counts and claim verdicts, per-sample verdicts, jobs finished."""
    claim, items, jobs, timeout = _loaded(svc, _audit(svc, tenant, audit_id))
    report = audits.report_of(claim, items, jobs, timeout)
    state = "done" if all(j.state in FINAL for j in jobs) else "running"
    return {"id": audit_id, "state": state, "report": report}


@router.get("/{audit_id}/report.html", response_class=HTMLResponse)
def get_audit_html(svc: Svc, tenant: Tenant, audit_id: str) -> HTMLResponse:
    claim, items, jobs, timeout = _loaded(svc, _audit(svc, tenant, audit_id))
    return HTMLResponse(audits.html_of(claim, items, jobs, timeout, svc.blobs))


@router.get("/{audit_id}/bundle")
def get_audit_bundle(svc: Svc, tenant: Tenant, audit_id: str) -> Response:
    """report.json, report.html, the model, the samples and every certificate and counterexample
    (unzip, then ``nnverify audit-check report.json``)."""
    claim, items, jobs, timeout = _loaded(svc, _audit(svc, tenant, audit_id))
    return Response(audits.bundle(claim, items, jobs, timeout, svc.blobs), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="audit-{audit_id}.zip"'})


@router.post("/{audit_id}/resume", status_code=202)
def resume_audit(svc: Svc, tenant: Tenant, audit_id: str) -> dict:
    """Send again the jobs that have not finished (finished ones are never redone)."""
    audit = _audit(svc, tenant, audit_id)
    open_jobs = [j for j in svc.store.audit_jobs(audit.id) if j.state not in FINAL]
    for job in open_jobs:
        _send(svc, [job.id], job.queue, job.priority, float(job.options["timeout"]))
    return {"id": audit_id, "resent": len(open_jobs)}
