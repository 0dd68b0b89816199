"""Helpers of the service tests: a real Redis and real API/worker subprocesses, no mocks."""
from __future__ import annotations

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


def client_for(stack: LocalStack, tenant: str) -> Client:
    return Client(stack.url, stack.token(tenant))
