"""Fixtures of the service tests: a real Redis, real API and worker subprocesses, no mocks."""
from __future__ import annotations

import uuid

import pytest

from service_stack import FAST, clear_prefix, redis_or_fail, running_stack
from workers.stack import LocalStack


@pytest.fixture
def make_stack(tmp_path_factory):
    """Start stacks on demand (each with its own Redis key prefix and data folder); stop them after."""
    redis_or_fail()
    stacks = []

    def make(env: dict | None = None, workers: int = 1, concurrency: int = 1) -> LocalStack:
        prefix = f"t{uuid.uuid4().hex[:10]}:"
        stack = LocalStack(tmp_path_factory.mktemp("stack"), {"NNVERIFY_QUEUE_PREFIX": prefix, **FAST, **(env or {})})
        stack.prefix = prefix
        stacks.append(stack)
        stack.start_api()
        for _ in range(workers):
            stack.start_worker(concurrency=concurrency)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
        clear_prefix(stack.prefix)


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory):
    """One stack with two worker processes for the tests that only read and submit."""
    with running_stack(tmp_path_factory.mktemp("shared"), concurrency=2) as stack:
        yield stack
