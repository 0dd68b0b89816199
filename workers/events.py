"""Redis keys and messages shared by workers and the API: progress, events, cancel flags, leases."""
from __future__ import annotations

import json
import math

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from workers.settings import Settings


def client(settings: Settings) -> redis.Redis:
    """A Redis client on the broker's server that rides out a restart (retries for about 30 s)."""
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), 40)
    return redis.Redis.from_url(settings.broker_url, socket_timeout=10, socket_connect_timeout=5,
                                health_check_interval=30, retry=retry,
                                retry_on_error=[redis.ConnectionError, redis.TimeoutError])


def clean(value):
    """``value`` with every non-finite float replaced by None (JSON and PostgreSQL refuse inf/NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):   # numpy scalars
        return clean(value.item())
    return value


def encode(event: dict) -> str:
    return json.dumps(clean(event), allow_nan=False)


class Keys:
    """The Redis keys of one deployment."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def events(self, job_id: str) -> str:
        return self.settings.key("events", job_id)

    def progress(self, job_id: str) -> str:
        return self.settings.key("progress", job_id)

    def cancel(self, job_id: str) -> str:
        return self.settings.key("cancel", job_id)

    def lease(self, job_id: str) -> str:
        return self.settings.key("lease", job_id)

    def worker(self, name: str) -> str:
        return self.settings.key("worker", name)

    def process(self, name: str) -> str:
        """A warm worker process (pool child) announces itself here after its warm-up."""
        return self.settings.key("process", name)

    def workers_pattern(self) -> str:
        return self.settings.key("worker", "*")


def warm_processes(r: redis.Redis, keys: Keys, parent: int) -> int:
    """How many pool processes of the worker with pid ``parent`` finished their warm-up."""
    count = 0
    for key in r.scan_iter(match=keys.process("*"), count=100):
        raw = r.get(key)
        if raw and json.loads(raw).get("parent") == parent:
            count += 1
    return count


def registered_workers(r: redis.Redis, keys: Keys) -> list[dict]:
    """The workers whose heartbeat is current: [{name, queues, concurrency, ...}]."""
    out = []
    for key in r.scan_iter(match=keys.workers_pattern(), count=100):
        raw = r.get(key)
        if raw:
            out.append(json.loads(raw))
    return out
