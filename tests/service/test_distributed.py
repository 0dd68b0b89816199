"""One input-split search spread over real worker processes through Celery and Redis (no mocks):
joined proofs pass the checker, remote counterexamples replay on onnxruntime, a killed chunk
worker costs neither the verdict nor the certificate."""
from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service_stack import FAST, ROOT, clear_prefix, client_for, redis_or_fail
from tests.test_cancel import write_case
from verifier.config import VerifyConfig
from verifier.portfolio import verify
from verifier.spec.vnnlib import load_vnnlib
from workers.blobs import Blobs
from workers.celery_app import make_app, send_verify
from workers.stack import LocalStack
from workers.store import Store

SOON = {"bab": {"distribute_after": 0.5}}   # ship chunks half a second into the search


@pytest.fixture(scope="module")
def proof_case(tmp_path_factory):
    """7 inputs, holds after ~4 s of input splitting on one process (~18,000 domains)."""
    return write_case(tmp_path_factory.mktemp("proof"), 7, [7, 48, 48, 2], 0.4)


def stack_of(make_stack, workers: int):
    """A stack whose worker processes (one pool slot each) warm up side by side, not one after another."""
    return with_workers(make_stack(workers=0), workers)


def with_workers(stack, workers: int):
    """``stack`` with ``workers`` more worker processes (one pool slot each), started side by side."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: stack.start_worker(ready=180), range(workers)))
    return stack


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A stack with two worker processes (one slot each), shared by the tests that leave it idle."""
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    redis_or_fail()
    stack = LocalStack(tmp_path_factory.mktemp("pair"), {"NNVERIFY_QUEUE_PREFIX": prefix, **FAST})
    stack.prefix = prefix
    try:
        stack.start_api()
        yield with_workers(stack, 2)
    finally:
        stack.stop()
        clear_prefix(prefix)


def submit(stack, tenant: str, model: str, spec: str, timeout: float, config: dict) -> str:
    """Write a job with its own verifier config and enqueue it, as the API does (the API has no config field)."""
    settings = stack.settings
    blobs, store = Blobs(Path(settings.data) / "blobs"), Store(settings.database_url)
    job = store.add_job(tenant=tenant, model_sha256=blobs.put(Path(model).read_bytes()),
                        spec_sha256=blobs.put(Path(spec).read_bytes()), model_name=Path(model).name,
                        spec_name=Path(spec).name, options={"timeout": timeout, "method": "auto", "config": config},
                        queue="cpu", queue_reason="test", priority=5)
    send_verify(make_app(settings), job.id, "cpu", 5, timeout)
    return job.id


def stored_result(stack, job_id: str) -> dict:
    """The job's result column (its ``distributed`` summary is not in the public JSON yet)."""
    return Store(stack.settings.database_url).job(job_id).result


def check_certificate(api, job_id: str, model: str, spec: str, folder: Path) -> None:
    cert = folder / f"{job_id}.json"
    cert.write_text(api.text(job_id, "certificate"))
    out = subprocess.run([sys.executable, "-m", "workers.cli", "check", model, spec, str(cert)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stdout + out.stderr


def test_a_proof_split_across_workers_matches_the_local_verdict_and_checks(make_stack, proof_case, tmp_path):
    local = verify(*proof_case, VerifyConfig(timeout=120, workers=1, check_certificates=False))
    stack = stack_of(make_stack, 3)
    api = client_for(stack, "dana")
    job = api.wait(submit(stack, "dana", *proof_case, 120, SOON), limit=240)
    assert (job["state"], job["verdict"]) == ("done", local.verdict.value) == ("done", "holds"), job
    assert job["certificate_checked"]
    dist = stored_result(stack, job["id"])["distributed"]
    assert dist["chunks"] >= 1 and dist["workers"] >= 2, dist
    assert job["distributed"] == dist                     # the public job JSON shows it too
    check_certificate(api, job["id"], *proof_case, tmp_path)


def test_a_chunk_s_counterexample_replays_on_onnxruntime(pair, tmp_path):
    """A chunk sent through Celery to a real worker, whose box holds a violation: it comes back
    ``violated`` with an input that onnxruntime confirms (the home search re-validates it too;
    see tests/search/test_distribute.py)."""
    from verifier.search.distribute import ChunkSpec
    from workers.distributed import ChunkPool
    from workers.events import client

    model, spec = write_case(tmp_path, 5, [5, 32, 32, 32, 2], 0.02)   # violated, below the sampled minimum
    local = verify(model, spec, VerifyConfig(timeout=60, workers=1))
    assert local.verdict.value == "violated"
    x = np.asarray(local.counterexample.x, dtype=np.float64)
    lo, hi = np.maximum(x - 0.05, -1.0), np.minimum(x + 0.05, 1.0)   # a small box around the known violation

    stack = pair
    settings = stack.settings
    blobs = Blobs(Path(settings.data) / "blobs")
    model_sha, spec_sha = blobs.put(Path(model).read_bytes()), blobs.put(Path(spec).read_bytes())
    config = json.loads(json.dumps(dataclasses.asdict(VerifyConfig(workers=1))))
    pool = ChunkPool(make_app(settings), settings, client(settings), "test-job", model_sha, spec_sha, config, "cpu")
    assert pool.want_chunks() == 2   # two idle slots, no job running
    chunk = ChunkSpec(1, [lo.tolist()], [hi.tolist()], [5], [3], time.time() + 60)
    pool.ship([chunk])
    end, got = time.monotonic() + 60, []
    while not got and time.monotonic() < end:
        got = pool.poll()
        time.sleep(0.1)
    assert [r.status for r in got] == ["violated"], got
    cex = np.asarray(got[0].counterexample)
    assert np.all(cex >= lo - 1e-12) and np.all(cex <= hi + 1e-12)
    session = ort.InferenceSession(model)
    y = session.run(None, {session.get_inputs()[0].name: cex.astype(np.float32).reshape(1, -1)})[0].reshape(-1)
    poly = load_vnnlib(spec).regions[0].unsafe[0]
    assert np.all(poly.A @ y.astype(np.float64) <= poly.b + 1e-9)
    pool.ship([ChunkSpec(1, [lo.tolist()], [hi.tolist()], [5], [3], time.time() + 60)])   # delivered again
    time.sleep(3)
    again = pool.poll()
    assert [r.to_json() for r in again] == [got[0].to_json()]   # the result was written once, not overwritten


def test_distributed_jobs_keep_their_deadline_and_confirm_their_counterexamples(make_stack, tmp_path):
    """A search far too long for its 4 s budget ends ``timeout`` on time with chunks out; a
    violated job run on the same pool returns a counterexample onnxruntime confirms."""
    long_model, long_spec = write_case(tmp_path / "long", 9, [12, 64, 64, 2], 0.5)
    model, spec = write_case(tmp_path / "sat", 5, [5, 32, 32, 32, 2], 0.02)
    stack = stack_of(make_stack, 2)
    api = client_for(stack, "ed")
    long_id = submit(stack, "ed", long_model, long_spec, 4, SOON)
    job = api.wait(submit(stack, "ed", model, spec, 60, SOON), limit=180)
    late = api.wait(long_id, limit=120)
    assert (late["state"], late["verdict"]) == ("done", "timeout"), late
    assert late["seconds"] < 4 + 5, late["seconds"]
    assert stored_result(stack, long_id)["distributed"]["chunks"] >= 1
    assert (job["state"], job["verdict"]) == ("done", "violated"), job
    cex = json.loads(api.text(job["id"], "counterexample"))
    session = ort.InferenceSession(model)
    y = session.run(None, {session.get_inputs()[0].name: np.asarray(cex["x"], np.float32).reshape(1, -1)})[0]
    poly = load_vnnlib(spec).regions[0].unsafe[0]
    assert np.all(poly.A @ y.reshape(-1).astype(np.float64) <= poly.b + 1e-9)
    assert "distributed" in stored_result(stack, job["id"])


def _chunk_runner(stack) -> int | None:
    """The pid of a worker process running a chunk now (from the chunk claims in Redis), or None."""
    from workers.distributed import HOME
    from workers.events import client

    r = client(stack.settings)
    for key in r.scan_iter(match=stack.settings.key("chunk", "*", "claim")):
        owner = r.get(key)
        if owner not in (None, HOME.encode()):
            return int(owner.decode().rsplit(":", 1)[1])
    return None


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_worker_killed_mid_chunk_costs_neither_verdict_nor_certificate(make_stack, proof_case, tmp_path):
    stack = stack_of(make_stack, 3)
    api = client_for(stack, "fay")
    job_id = submit(stack, "fay", *proof_case, 180, SOON)
    end, victim = time.monotonic() + 60, None
    while victim is None and time.monotonic() < end:
        victim = _chunk_runner(stack)
        time.sleep(0.05)
    assert victim is not None, "no chunk ever ran on another worker"
    master = next(p for p in stack.workers if p.pid == _parent(victim))
    stack.kill_worker(master, signal.SIGKILL)
    assert not Path(f"/proc/{victim}").exists() or _parent(victim) != master.pid
    job = api.wait(job_id, limit=300)
    assert (job["state"], job["verdict"]) == ("done", "holds"), job
    assert job["certificate_checked"]
    check_certificate(api, job_id, *proof_case, tmp_path)


def test_a_relu_split_proof_split_across_workers_holds_and_checks(pair, tmp_path):
    """18 inputs (ReLU splitting, ~3,000 domains in ~1 s): chunks of split sets searched by the other
    worker process join the job's proof; the certificate passes ``nnverify check``."""
    case = write_case(tmp_path / "relu", 3, [18, 24, 24, 2], 0.6)
    stack = pair
    api = client_for(stack, "gus")
    job = api.wait(submit(stack, "gus", *case, 120, {"bab": {"distribute_after": 0.2}}), limit=240)
    assert (job["state"], job["verdict"]) == ("done", "holds"), job
    assert job["certificate_checked"]
    assert any("bab-relu region" in line for line in job["log"]), job["log"]
    dist = stored_result(stack, job["id"])["distributed"]
    assert dist["chunks"] >= 1 and dist["workers"] >= 2, dist
    check_certificate(api, job["id"], *case, tmp_path)
