"""Submit -> result through the real API, Redis and worker processes; reads, listing, isolation."""
from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from service_stack import EXAMPLES, ROOT, client_for
from verifier.spec.vnnlib import load_vnnlib
from workers.client import ServiceError

MODEL, HOLDS, VIOLATED = EXAMPLES / "mlp.onnx", EXAMPLES / "robust.vnnlib", EXAMPLES / "fragile.vnnlib"


@pytest.fixture(scope="module")
def alice(shared_stack):
    return client_for(shared_stack, "alice")


@pytest.fixture(scope="module")
def bob(shared_stack):
    return client_for(shared_stack, "bob")


@pytest.fixture(scope="module")
def finished(alice):
    """One holds and one violated job, run to the end."""
    ids = {"holds": alice.submit(str(MODEL), str(HOLDS), timeout=60),
           "violated": alice.submit(str(MODEL), str(VIOLATED), timeout=60)}
    return {k: alice.wait(v, limit=120) for k, v in ids.items()}


def test_holds_job_certificate_passes_the_checker(shared_stack, alice, finished, tmp_path):
    job = finished["holds"]
    assert (job["state"], job["verdict"], job["result"]) == ("done", "holds", "unsat")
    assert job["has_certificate"] and not job["has_counterexample"] and job["certificate_checked"]
    assert alice.text(job["id"], "result") == "unsat\n"
    cert = tmp_path / "cert.json"
    cert.write_text(alice.text(job["id"], "certificate"))
    out = subprocess.run([sys.executable, "-m", "workers.cli", "check", str(MODEL), str(HOLDS), str(cert)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stdout + out.stderr


def test_violated_job_counterexample_replays_on_onnxruntime(alice, finished):
    job = finished["violated"]
    assert (job["state"], job["verdict"], job["result"]) == ("done", "violated", "sat")
    cex = json.loads(alice.text(job["id"], "counterexample"))
    x = np.asarray(cex["x"], dtype=np.float64)
    spec = load_vnnlib(str(VIOLATED))
    region = spec.regions[cex["region"]]
    assert np.all(x >= region.lower) and np.all(x <= region.upper)
    session = ort.InferenceSession(str(MODEL))
    y = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32).reshape(1, 1, 8, 8)})[0].reshape(-1)
    poly = region.unsafe[cex["polytope"]]
    assert np.all(poly.A @ y.astype(np.float64) <= poly.b + 1e-9)
    assert alice.text(job["id"], "result").startswith("sat\n((X_0 ")


def test_job_json_reports_route_timings_and_bounds(finished):
    job = finished["holds"]
    assert job["route"] and job["route_reason"] and job["timings"]["total"] > 0
    assert job["bounds"] and all(b["proved"] for b in job["bounds"])
    assert job["queue"] == "cpu" and "MILP-sized" in job["queue_reason"]
    assert job["started_at"] and job["finished_at"] and job["attempts"] == 1


def test_list_is_paginated_and_filtered_by_state(alice, finished):
    page = alice._call("GET", "/v1/jobs?limit=1")
    assert page["total"] >= 2 and len(page["items"]) == 1
    second = alice._call("GET", "/v1/jobs?limit=1&offset=1")
    assert second["items"][0]["id"] != page["items"][0]["id"]
    done = alice._call("GET", "/v1/jobs?state=done&limit=500")
    assert {finished["holds"]["id"], finished["violated"]["id"]} <= {j["id"] for j in done["items"]}
    assert alice._call("GET", "/v1/jobs?state=queued&limit=500")["items"] == [] or all(
        j["state"] == "queued" for j in alice._call("GET", "/v1/jobs?state=queued")["items"])
    with pytest.raises(ServiceError) as bad:
        alice._call("GET", "/v1/jobs?state=sleeping")
    assert bad.value.status == 422


def test_another_tenant_sees_nothing(bob, finished):
    job_id = finished["holds"]["id"]
    for path in ("", "/result", "/certificate", "/counterexample", "/events"):
        with pytest.raises(ServiceError) as err:
            bob._call("GET", f"/v1/jobs/{job_id}{path}", raw=True)
        assert err.value.status == 404, path
    with pytest.raises(ServiceError) as err:
        bob.cancel(job_id)
    assert err.value.status == 404
    assert job_id not in {j["id"] for j in bob._call("GET", "/v1/jobs?limit=500")["items"]}


def test_unknown_token_and_malformed_id(shared_stack, alice):
    r = httpx.get(f"{shared_stack.url}/v1/jobs", headers={"Authorization": "Bearer nnv_forged"})
    assert r.status_code == 401 and "token" in r.json()["detail"]
    assert httpx.get(f"{shared_stack.url}/v1/jobs").status_code == 401
    with pytest.raises(ServiceError) as err:
        alice.job("../../etc/passwd")
    assert err.value.status in (404, 422)
    with pytest.raises(ServiceError) as err:
        alice.job("not-a-uuid")
    assert err.value.status == 422 and "UUID" in err.value.detail


def test_missing_artifact_is_404(alice, finished):
    with pytest.raises(ServiceError) as err:
        alice.text(finished["holds"]["id"], "counterexample")
    assert err.value.status == 404


def test_events_stream_ends_with_the_verdict(shared_stack, alice):
    job_id = alice.submit(str(MODEL), str(VIOLATED), timeout=60)
    events = []
    with httpx.stream("GET", f"{shared_stack.url}/v1/jobs/{job_id}/events",
                      headers={"Authorization": f"Bearer {alice.token}"}, timeout=120) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    assert events[0][0] == "job"
    assert events[-1] == ("end", {"state": "done", "verdict": "violated"})
    assert events[-2][0] == "job" and events[-2][1]["verdict"] == "violated"


def test_a_model_uploaded_twice_is_stored_once(shared_stack, alice, finished):
    blobs = list((shared_stack.data / "blobs").rglob("*"))
    sha = finished["holds"]["model_sha256"]
    assert sha == finished["violated"]["model_sha256"]
    assert sum(1 for p in blobs if p.name == sha) == 1


def test_health_metrics_and_openapi(shared_stack, finished):
    assert httpx.get(f"{shared_stack.url}/healthz").json() == {"ok": True}
    text = httpx.get(f"{shared_stack.url}/metrics").text
    for name in ("nnverify_queue_depth", "nnverify_jobs", "nnverify_verification_seconds", "nnverify_workers"):
        assert name in text
    assert 'nnverify_workers{queue="cpu"} 2.0' in text
    assert 'nnverify_verifications_total{verdict="holds"}' in text
    paths = httpx.get(f"{shared_stack.url}/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/healthz", "/metrics"} <= set(paths)


def test_submit_command_waits_for_the_result_block(shared_stack, alice):
    out = subprocess.run([sys.executable, "-m", "workers.cli", "submit", str(MODEL), str(HOLDS), "--server",
                          shared_stack.url, "--token", alice.token, "--timeout", "60", "--wait"],
                         capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert out.returncode == 0 and out.stdout == "unsat\n", out.stderr


def test_neither_the_api_nor_the_client_imports_torch(shared_stack):
    code = ("import sys; from workers.api.app import create_app; import workers.client, workers.cli; "
            "from verifier.cli import build_parser; create_app(); build_parser(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=shared_stack.env)
    assert out.returncode == 0, out.stderr


def test_a_vnnlib2_query_of_one_network_runs_as_a_job(shared_stack, alice, tmp_path):
    """A 2.0 query (the fragile property, declared real) binds to the job's model; its witness names z."""
    sys.path.insert(0, str(ROOT / "tests" / "query"))
    from vnnlib2_convert import spec_to_vnnlib2

    query = tmp_path / "fragile2.vnnlib"
    query.write_text(spec_to_vnnlib2(load_vnnlib(str(VIOLATED)), (1, 1, 8, 8), (1, 10)))
    job = alice.wait(alice.submit(str(MODEL), str(query), timeout=60), limit=120)
    assert (job["state"], job["verdict"]) == ("done", "violated"), job.get("reason")
    bad = tmp_path / "bad2.vnnlib"
    bad.write_text("(vnnlib-version <2.0>)\n(declare-network f (declare-input X real [3]) (declare-output Y real [10]))\n"
                   "(assert (<= X[0] 1.0))\n")
    with pytest.raises(ServiceError, match="input X has 3 values but the model's input has 64"):
        alice.submit(str(MODEL), str(bad), timeout=60)
