"""Helpers of the service tests: a real Redis and real API/worker subprocesses, no mocks."""
from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import pytest
import redis

from workers.client import Client
from workers.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FAST = {"NNVERIFY_VISIBILITY_TIMEOUT": "4", "NNVERIFY_LEASE_SECONDS": "3"}


def redis_or_fail() -> redis.Redis:
    r = redis.Redis(host="127.0.0.1", port=6379)
    try:
        r.ping()
    except redis.ConnectionError:
        pytest.fail("no Redis on 127.0.0.1:6379 (run `make redis` or .ci/ensure-redis)")
    return r


def clear_prefix(prefix: str) -> None:
    r = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        r.delete(*keys)


@contextlib.contextmanager
def running_stack(folder: Path, env: dict | None = None, concurrency: int = 1):
    """An API and one worker of ``concurrency`` processes under a fresh Redis key prefix; both are
    stopped and the prefix's keys deleted on the way out."""
    redis_or_fail()
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    stack = LocalStack(folder, {"NNVERIFY_QUEUE_PREFIX": prefix, **FAST, **(env or {})})
    stack.prefix = prefix
    try:
        stack.start_api()
        stack.start_worker(concurrency=concurrency)
        yield stack
    finally:
        stack.stop()
        clear_prefix(prefix)


def client_for(stack: LocalStack, tenant: str) -> Client:
    return Client(stack.url, stack.token(tenant))
