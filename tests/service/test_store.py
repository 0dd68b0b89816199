"""The job store on SQLite and on the real PostgreSQL: tokens, tenancy, claims, duplicates, blobs."""
from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from service_stack import EXAMPLES, client_for
from workers.blobs import Blobs
from workers.store import Store, token_digest

PG_ADMIN = os.environ.get("NNVERIFY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test, dropped after it."""
    name = f"nnverify_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is needed at {PG_ADMIN} (set NNVERIFY_TEST_PG): {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = Store(url)
    yield s
    s.engine.dispose()


def new_job(store: Store, tenant: str):
    return store.add_job(tenant=tenant, model_sha256="a" * 64, spec_sha256="b" * 64, options={"timeout": 5.0})


def test_tokens_are_stored_hashed_and_map_to_tenants(store):
    token = store.create_token("acme")
    assert store.tenant_of(token) == "acme" and store.tenant_of(token + "x") is None
    with store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql("SELECT digest, tenant FROM tokens")]
    assert rows == [(token_digest(token), "acme")] and token not in repr(rows)
    with pytest.raises(ValueError):
        store.create_token("")


def test_jobs_are_scoped_by_tenant_and_paginated(store):
    mine = [new_job(store, "acme").id for _ in range(5)]
    other = new_job(store, "globex").id
    assert store.job(other, "acme") is None and store.job(other, "globex").id == other
    assert store.job("not-a-uuid") is None
    page, total = store.jobs("acme", None, 2, 0)
    rest, _ = store.jobs("acme", None, 10, 2)
    assert total == 5 and len(page) == 2 and {j.id for j in page + rest} == set(mine)
    assert store.jobs("acme", "done", 10, 0) == ([], 0)


def test_a_duplicate_attempt_cannot_overwrite_the_result(store):
    job = new_job(store, "acme")
    first = store.claim(job.id, "w1")
    second = store.claim(job.id, "w2")   # a redelivery after the first worker was lost
    assert (first, second) == (1, 2)
    assert not store.finish(job.id, first, "done", verdict="holds")   # the lost worker's late answer
    assert store.finish(job.id, second, "done", verdict="violated")
    assert store.claim(job.id, "w3") is None
    assert store.job(job.id).verdict == "violated" and store.job(job.id).attempts == 2


def test_cancel_of_queued_and_running_jobs(store):
    queued, running = new_job(store, "acme"), new_job(store, "acme")
    store.claim(running.id, "w1")
    assert store.request_cancel(queued.id) == "cancelled"
    assert store.claim(queued.id, "w1") is None
    assert store.request_cancel(running.id) == "running" and store.job(running.id).cancel_requested == 1
    assert store.counts()["cancelled"] == 1 and store.counts()["running"] == 1


def test_blobs_are_content_addressed(tmp_path):
    blobs = Blobs(tmp_path)
    sha = blobs.put(b"model bytes")
    assert blobs.put(b"model bytes") == sha and blobs.get(sha) == b"model bytes"
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1
    for bad in ("../../etc/passwd", "A" * 64, sha[:-1]):
        with pytest.raises(ValueError):
            blobs.path(bad)


def test_the_service_on_postgresql(make_stack, pg_url):
    stack = make_stack({"NNVERIFY_DB_URL": pg_url})
    api = client_for(stack, "pg-tenant")
    jobs = [api.wait(api.submit(str(EXAMPLES / "mlp.onnx"), str(EXAMPLES / s), timeout=60), limit=120)
            for s in ("robust.vnnlib", "fragile.vnnlib")]
    assert [(j["state"], j["verdict"]) for j in jobs] == [("done", "holds"), ("done", "violated")]
    assert jobs[0]["created_at"].endswith(("Z", "+00:00"))
