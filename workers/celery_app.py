"""The Celery app and its routing: ``gpu`` and ``cpu`` queues on Redis, tasks sent by name.

Producers (the API) create the app with ``make_app()`` and never import the tasks, so the API
process never imports torch. Workers import ``workers.tasks``, which registers the task bodies.
"""
from __future__ import annotations

from celery import Celery

from workers.settings import Settings

VERIFY_TASK = "nnverify.verify_job"
PRIORITIES = list(range(10))   # Redis emulates priorities with one list per step: 0 runs first
GRACE = 30.0                   # seconds past a job's timeout before the worker stops it itself
HARD_GRACE = 90.0              # ... and before Celery kills the process running it


def make_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (acks late, prefetch 1, redelivery on loss)."""
    settings = settings or Settings.from_env()
    app = Celery("nnverify", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.queue("cpu"),
        task_default_priority=5,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # how often a worker sweeps for messages whose worker died (every interval x throttle s)
            "unacked_restore_interval": max(1, min(10, int(settings.visibility_timeout / 4))),
            "unacked_restore_throttle": 1 if settings.visibility_timeout < 600 else 10,
            "priority_steps": PRIORITIES,
            "sep": ":",
            "queue_order_strategy": "priority",
            "global_keyprefix": settings.queue_prefix,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.conf.nnverify_settings = settings
    return app


def time_limits(timeout: float) -> dict[str, float]:
    """Celery's hard limit for a job with this budget (the worker stops it cooperatively first)."""
    return {"time_limit": timeout + HARD_GRACE}


def verify_signature(app: Celery, job_id: str, queue: str, priority: int, timeout: float):
    """The verify task for one job as a signature (for groups), addressed by name."""
    settings: Settings = app.conf.nnverify_settings
    return app.signature(VERIFY_TASK, args=[job_id], queue=settings.queue(queue), priority=priority,
                         task_id=job_id, **time_limits(timeout))


def send_verify(app: Celery, job_id: str, queue: str, priority: int, timeout: float) -> None:
    """Enqueue the job by task name (the producer needs neither the task code nor torch)."""
    settings: Settings = app.conf.nnverify_settings
    app.send_task(VERIFY_TASK, args=[job_id], queue=settings.queue(queue), priority=priority,
                  task_id=job_id, **time_limits(timeout))
