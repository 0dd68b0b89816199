"""Verified attribution maps and NAP properties as service jobs (real Redis and workers)."""
from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest

from service_nets import write_digits_mlp
from service_stack import client_for
from verifier.explain import explain
from verifier.nap import mine


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits_mlp(tmp_path_factory.mktemp("digits-analyses"))


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def test_explain_job_gives_the_local_map_and_its_png(shared_stack, digits):
    model, x, y = digits
    api = client_for(shared_stack, "explainer")
    auth = {"Authorization": f"Bearer {api.token}"}
    sample, label = x[1600], int(y[1600])
    form = {"label": str(label), "patch": "2", "eps": "0.3", "clip_lo": "0", "clip_hi": "1", "grid": "8,8"}
    r = httpx.post(f"{shared_stack.url}/v1/explain", headers=auth, data=form, timeout=60,
                   files={"model": ("mlp.onnx", model.read_bytes()), "input": ("x.npy", npy(sample))})
    assert r.status_code == 202, r.text
    job = api.wait(r.json()["id"], limit=120)
    assert (job["kind"], job["state"], job["verdict"]) == ("explain", "done", None), job
    local = explain(str(model), sample, label, 2, 0.3, (0.0, 1.0), (8, 8))
    remote = job["analysis"]
    assert len(remote["patches"]) == 16
    assert [p["indices"] for p in remote["patches"]] == [p["indices"] for p in local["patches"]]
    assert np.allclose([p["margin_lower"] for p in remote["patches"]], [p["margin_lower"] for p in local["patches"]])
    assert sorted(job["artifacts"]) == ["explain.json", "explain.png"]
    png = httpx.get(f"{shared_stack.url}/v1/jobs/{job['id']}/artifacts/explain.png", headers=auth)
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    missing = httpx.get(f"{shared_stack.url}/v1/jobs/{job['id']}/artifacts/../../etc/passwd", headers=auth)
    assert missing.status_code == 404


def test_nap_job_verifies_and_reports(shared_stack, digits, tmp_path):
    model, x, y = digits
    naps = mine(str(model), x[:1500], y[:1500], delta=0.99, heldout=(x[1500:], y[1500:]))
    api = client_for(shared_stack, "napper")
    auth = {"Authorization": f"Bearer {api.token}"}
    r = httpx.post(f"{shared_stack.url}/v1/naps/verify", headers=auth, data={"classes": "0", "pairs": "0-1", "timeout": "60"},
                   files={"model": ("mlp.onnx", model.read_bytes()), "naps": ("naps.json", json.dumps(naps))}, timeout=60)
    assert r.status_code == 202, r.text
    job = api.wait(r.json()["id"], limit=180)
    assert job["kind"] == "nap" and job["state"] == "done", job
    analysis = job["analysis"]
    assert [c["label"] for c in analysis["classes"]] == [0] and len(analysis["non_ambiguity"]) == 1
    verdicts = [p["verdict"] for p in analysis["classes"] + analysis["non_ambiguity"]]
    expected = ("violated" if "violated" in verdicts else "holds" if all(v == "holds" for v in verdicts)
                else "timeout" if "timeout" in verdicts else "unknown")
    assert job["verdict"] == expected and set(verdicts) <= {"holds", "violated", "unknown", "timeout"}
    report = httpx.get(f"{shared_stack.url}/v1/jobs/{job['id']}/artifacts/naps-report.json", headers=auth).json()
    assert report["model_sha256"] == analysis["model_sha256"]


@pytest.mark.parametrize("form,files_change,words", [
    ({"label": "10"}, {}, "label"),
    ({}, {"input": ("x.npy", npy(np.zeros(7, np.float32)))}, "values"),
    ({"patch": "65"}, {}, "patch"),
])
def test_bad_explain_requests_are_refused(shared_stack, digits, form, files_change, words):
    model, x, y = digits
    api = client_for(shared_stack, "explainer2")
    data = {"label": "0", "patch": "2", "eps": "0.1", **form}
    files = {"model": ("mlp.onnx", model.read_bytes()), "input": ("x.npy", npy(x[0])), **files_change}
    r = httpx.post(f"{shared_stack.url}/v1/explain", headers={"Authorization": f"Bearer {api.token}"}, data=data,
                   files=files, timeout=60)
    assert r.status_code == 422 and words in r.json()["detail"], r.text


def test_nap_file_for_another_model_is_refused(shared_stack, digits):
    model, x, y = digits
    api = client_for(shared_stack, "napper2")
    r = httpx.post(f"{shared_stack.url}/v1/naps/verify", headers={"Authorization": f"Bearer {api.token}"},
                   files={"model": ("mlp.onnx", model.read_bytes()),
                          "naps": ("naps.json", json.dumps({"model_sha256": "0" * 64, "classes": []}))}, timeout=60)
    assert r.status_code == 422 and "another model" in r.json()["detail"], r.text
