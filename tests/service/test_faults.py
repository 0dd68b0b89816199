"""Cancellation, time limits, a worker killed mid-job, and Redis restarted mid-run: no job lost."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
import redis

from service_stack import EXAMPLES, client_for
from service_nets import write_slow_instance
from workers.events import Keys, client, registered_workers
from workers.stack import free_port

MODEL, HOLDS, VIOLATED = EXAMPLES / "mlp.onnx", EXAMPLES / "robust.vnnlib", EXAMPLES / "fragile.vnnlib"


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    return write_slow_instance(tmp_path_factory.mktemp("slow"))


def wait_for(predicate, seconds: float, poll: float = 0.1):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"condition not met within {seconds}s")


def running(api, job_id: str, seconds: float = 60.0) -> dict:
    """Wait until the job runs and its verifier has reported progress."""
    return wait_for(lambda: (j := api.job(job_id))["state"] == "running" and j["progress"] and j, seconds)


def test_cancel_running_and_queued_jobs(make_stack, slow):
    stack = make_stack()
    api = client_for(stack, "carol")
    long_id = api.submit(str(slow[0]), str(slow[1]), timeout=300)
    running(api, long_id)
    queued_id = api.submit(str(MODEL), str(HOLDS), timeout=60)   # the only worker process is busy
    time.sleep(0.5)
    assert api.job(queued_id)["state"] == "queued"
    assert api.cancel(queued_id)["state"] == "cancelled"
    time.sleep(1.0)
    t0 = time.monotonic()
    api.cancel(long_id)
    job = wait_for(lambda: (j := api.job(long_id))["state"] != "running" and j, 15)
    latency = time.monotonic() - t0
    assert job["state"] == "cancelled" and job["verdict"] in ("unknown", None), job
    assert latency < 15
    time.sleep(1.0)   # the revoked message, if delivered, must not run the cancelled job
    queued = api.job(queued_id)
    assert (queued["state"], queued["attempts"], queued["started_at"]) == ("cancelled", 0, None)
    after = api.wait(api.submit(str(MODEL), str(VIOLATED), timeout=60), limit=120)
    assert after["verdict"] == "violated"   # the worker process that was cancelled runs the next job


def test_time_limit_ends_in_timeout_and_the_worker_lives_on(make_stack, slow):
    stack = make_stack()
    api = client_for(stack, "dave")
    pids = {w["pid"] for w in registered_workers(client(stack.settings), Keys(stack.settings))}
    job = api.wait(api.submit(str(slow[0]), str(slow[1]), timeout=3), limit=120)
    assert (job["state"], job["verdict"], job["result"]) == ("done", "timeout", "timeout"), job
    assert job["seconds"] < 3 + 30
    assert api.wait(api.submit(str(MODEL), str(HOLDS), timeout=60), limit=120)["verdict"] == "holds"
    assert {w["pid"] for w in registered_workers(client(stack.settings), Keys(stack.settings))} == pids


def test_worker_killed_mid_job_is_redelivered_and_finishes(make_stack, slow):
    stack = make_stack()
    api = client_for(stack, "erin")
    job_id = api.submit(str(slow[0]), str(slow[1]), timeout=8)
    running(api, job_id)
    stack.kill_worker(stack.workers[0], signal.SIGKILL)
    stack.start_worker()
    job = api.wait(job_id, limit=120)
    assert job["state"] == "done" and job["verdict"] == "timeout", job
    assert job["attempts"] == 2
    listing = api._call("GET", "/v1/jobs?limit=500")["items"]
    assert [j["id"] for j in listing].count(job_id) == 1


def test_redis_restart_loses_no_job(make_stack, tmp_path, slow):
    server = shutil.which("redis-server")
    assert server, "redis-server is needed (apt-get install redis-server)"
    port = free_port()
    aof = tmp_path / "redis"
    aof.mkdir()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--dir", str(aof)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    wait_for(lambda: _pings(r), 10)
    stack = None
    try:
        stack = make_stack({"NNVERIFY_BROKER_URL": f"redis://127.0.0.1:{port}/0"}, concurrency=2)
        api = client_for(stack, "frank")
        ids = [api.submit(str(slow[0]), str(slow[1]), timeout=6)]
        running(api, ids[0])
        ids += [api.submit(str(MODEL), str(spec), timeout=60) for spec in (HOLDS, VIOLATED) * 3]
        r.shutdown(nosave=False)
        proc.wait(10)
        time.sleep(1.0)
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_for(lambda: _pings(r), 10)
        ids += [api.submit(str(MODEL), str(HOLDS), timeout=60)]
        jobs = [api.wait(i, limit=180) for i in ids]
        assert [j["state"] for j in jobs] == ["done"] * len(ids), [(j["state"], j["reason"]) for j in jobs]
        assert jobs[0]["verdict"] == "timeout"
        assert [j["verdict"] for j in jobs[1:-1]] == ["holds", "violated"] * 3 and jobs[-1]["verdict"] == "holds"
    finally:
        if stack is not None:
            stack.stop()   # before its Redis goes, or the worker's shutdown waits on reconnects
        proc.terminate()
        proc.wait(10)


def _pings(r) -> bool:
    try:
        return bool(r.ping())
    except redis.ConnectionError:
        return False


def test_events_stream_reports_progress_while_it_runs(make_stack, slow):
    import json

    import httpx

    stack = make_stack()
    api = client_for(stack, "gina")
    job_id = api.submit(str(slow[0]), str(slow[1]), timeout=5)
    events, name = [], None
    with httpx.stream("GET", f"{stack.url}/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {api.token}"},
                      timeout=120) as resp:
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    kinds = [e["event"] for n, e in events if n == "progress"]
    assert "start" in kinds and "step" in kinds and "search" in kinds, kinds
    search = [e for n, e in events if n == "progress" and e["event"] == "search"]
    assert search[-1]["domains"] > 0 and search[-1]["method"] == "bab-relu"
    steps = [e for n, e in events if n == "progress" and e["event"] == "step"]
    assert all(e["goals"] == 1 and "message" in e for e in steps)
    assert [n for n, _ in events if n == "job"][-1:] == ["job"] and events[-1] == ("end", {"state": "done", "verdict": "timeout"})
    assert any(n == "job" and e["state"] == "running" for n, e in events)   # the snapshot sent when it started
