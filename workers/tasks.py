"""Thin Celery tasks: load the job, call ``verifier.verify``, store what came out.

Importing this module registers the tasks on the worker's app; only workers import it.
"""
from __future__ import annotations

import logging

from celery import signals

from workers import distributed, jobs
from workers.celery_app import GRACE, VERIFY_TASK, make_app
from workers.distributed import CHUNK_TASK
from workers.runtime import settings

log = logging.getLogger("nnverify.worker")
app = make_app(settings())



@app.task(name=VERIFY_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def verify_job(self, job_id: str) -> str:
    """Run job ``job_id`` once, whatever number of times it is delivered."""
    try:
        outcome = jobs.run(job_id, GRACE)
    except jobs.INFRASTRUCTURE as exc:   # Redis or the database away: the job is not lost, it is tried again
        log.warning("job %s: %s; retrying in 5 s", job_id, exc)
        raise self.retry(countdown=5, max_retries=None) from exc
    if outcome == "leased":   # another delivery runs it now: look again once its lease could lapse
        raise self.retry(countdown=settings().lease_seconds, max_retries=None)
    return outcome


@app.task(name=CHUNK_TASK, acks_late=True, reject_on_worker_lost=True)
def search_chunk(payload: dict) -> str:
    """Search one chunk of a job's branch and bound (input or ReLU splitting); its result is written once
    (workers/distributed.py)."""
    return distributed.run_task(payload)


@signals.worker_process_init.connect
def _warm(**_) -> None:
    """Pay the start-up once per worker process, not once per job."""
    import json
    import os

    from workers.events import Keys
    from workers.runtime import redis_client, worker_name
    from workers.warmup import warm_up

    seconds = warm_up(settings().worker_threads)
    info = {"name": worker_name(), "parent": os.getppid(), "warm_up_s": round(seconds, 3)}
    redis_client().set(Keys(settings()).process(worker_name()), json.dumps(info), ex=7 * 86400)


REGISTRATION: dict = {}   # set by ``nnverify worker`` before the worker starts: queues, concurrency


@signals.worker_ready.connect
def _register(**_) -> None:
    from workers.registry import Registration

    if REGISTRATION:
        reg = Registration(settings(), REGISTRATION["queues"], REGISTRATION["concurrency"])
        reg.start()
        REGISTRATION["running"] = reg


@signals.worker_shutdown.connect
def _unregister(**_) -> None:
    reg = REGISTRATION.get("running")
    if reg is not None:
        reg.stop()
