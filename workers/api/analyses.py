"""``/v1/explain`` and ``/v1/naps/verify``: verified attribution maps and NAP properties as jobs.

They run like verification jobs (queue, cancel, events, ``GET /v1/jobs/{id}``); their outputs are
the job's ``analysis`` and its artifacts.
"""
from __future__ import annotations

import io
import json
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool

from workers.api.deps import Svc, Tenant
from workers.api.jobs import display_name, read_capped
from workers.api.schemas import JobCreated
from workers.celery_app import send_verify
from workers.limits import UploadError, check_model

router = APIRouter(prefix="/v1", tags=["analyses"])


@router.post("/explain", status_code=202, response_model=JobCreated)
async def submit_explain(svc: Svc, tenant: Tenant, model: Annotated[UploadFile, File()],
                         input: Annotated[UploadFile, File(description=".npy with the model's input size")],
                         label: Annotated[int, Form(ge=0)], patch: Annotated[int, Form(ge=1)],
                         eps: Annotated[float, Form(ge=0)], clip_lo: Annotated[float | None, Form()] = None,
                         clip_hi: Annotated[float | None, Form()] = None, grid: Annotated[str | None, Form()] = None,
                         complement: Annotated[bool, Form()] = False, timeout: Annotated[float, Form(gt=0)] = 120.0
                         ) -> JobCreated:
    """Per patch, the guaranteed worst-case drop of ``label``'s margin when only that patch moves by eps."""
    model_bytes = await read_capped(model, svc.settings.max_model_bytes, "model")
    input_bytes = await read_capped(input, svc.settings.max_spec_bytes, "input")
    options = {"label": label, "patch": patch, "eps": eps, "complement": complement, "timeout": timeout,
               "clip": None if clip_lo is None and clip_hi is None else [clip_lo, clip_hi],
               "grid": _grid(grid)}
    if (options["clip"] is not None) and (None in options["clip"] or clip_lo > clip_hi):
        raise HTTPException(422, "clip needs clip_lo <= clip_hi, both given")
    return await run_in_threadpool(_create, svc, tenant, "explain", model_bytes, input_bytes, options,
                                   model.filename, input.filename)


@router.post("/naps/verify", status_code=202, response_model=JobCreated)
async def submit_naps(svc: Svc, tenant: Tenant, model: Annotated[UploadFile, File()],
                      naps: Annotated[UploadFile, File(description="the JSON `nnverify nap mine` writes")],
                      classes: Annotated[str | None, Form(description="comma-separated classes")] = None,
                      pairs: Annotated[str | None, Form(description="pairs 'a-b,c-d' for non-ambiguity")] = None,
                      timeout: Annotated[float, Form(gt=0)] = 120.0) -> JobCreated:
    """Verify 'matches NAP_c => classified c' per class and non-ambiguity per pair, over the input box."""
    model_bytes = await read_capped(model, svc.settings.max_model_bytes, "model")
    naps_bytes = await read_capped(naps, svc.settings.max_spec_bytes, "naps")
    try:
        doc = json.loads(naps_bytes.decode("utf-8"))
        wanted = [int(c) for c in classes.split(",")] if classes else None
        pair_list = [tuple(int(v) for v in p.split("-")) for p in pairs.split(",")] if pairs else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(422, f"naps/classes/pairs: {exc}") from exc
    if not isinstance(doc, dict):
        raise HTTPException(422, "naps: a NAP file is a JSON object")
    if any(len(p) != 2 for p in pair_list or ()):
        raise HTTPException(422, "pairs: each pair is two classes, 'a-b'")
    options = {"classes": wanted, "pairs": pair_list, "timeout": timeout}
    return await run_in_threadpool(_create, svc, tenant, "nap", model_bytes, naps_bytes, options,
                                   model.filename, naps.filename, doc)


def _grid(text: str | None):
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError as exc:
        raise HTTPException(422, "grid must be 'H,W'") from exc
    return [h, w]


def _create(svc, tenant, kind, model_bytes, input_bytes, options, model_name, input_name, doc=None) -> JobCreated:
    """Check the uploads against each other, store them, write the job and send it (cpu queue)."""
    try:
        info = check_model(model_bytes, svc.settings)
    except UploadError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    model_sha = svc.blobs.put(model_bytes)
    if kind == "explain":
        _check_explain(input_bytes, info, options)
    elif doc.get("model_sha256") not in (None, model_sha):
        raise HTTPException(422, "naps: the NAP file was mined on another model (its model_sha256 differs)")
    job = svc.store.add_job(tenant=tenant, kind=kind, model_sha256=model_sha, spec_sha256=svc.blobs.put(input_bytes),
                            model_name=display_name(model_name), spec_name=display_name(input_name), options=options,
                            queue="cpu", queue_reason=f"{kind}: bound propagation on the CPU workers", priority=5)
    send_verify(svc.celery, job.id, "cpu", 5, float(options["timeout"]))
    return JobCreated(id=job.id, state=job.state, queue="cpu")


def _check_explain(data: bytes, info, options: dict) -> None:
    try:
        x = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise HTTPException(422, f"input: not a .npy array ({exc})") from exc
    if x.size != info.n_inputs:
        raise HTTPException(422, f"input has {x.size} values but the model takes {info.n_inputs}")
    if options["label"] >= info.n_outputs:
        raise HTTPException(422, f"label {options['label']} is out of range: the model has {info.n_outputs} outputs")
    if options["patch"] > info.n_inputs:
        raise HTTPException(422, f"patch {options['patch']} is larger than the input ({info.n_inputs} values)")
