"""An audit through the API (real Redis and workers) gives the report the local run gives."""
from __future__ import annotations

import io
import json
import time
import zipfile

import httpx
import numpy as np
import pytest

from service_nets import write_digits_mlp
from service_stack import client_for
from verifier.audit.check import audit_check
from verifier.audit.claim import load_claim
from verifier.audit.run import run_audit


@pytest.fixture(scope="module")
def digits_claim(tmp_path_factory):
    """A small MLP trained on sklearn's digits, 12 held-out samples, and a claim about it."""
    folder = tmp_path_factory.mktemp("digits")
    model, x, y = write_digits_mlp(folder)
    np.savez(folder / "data.npz", x=x[1500:1512], y=y[1500:1512])
    claim = {"model": "mlp.onnx", "data": "data.npz", "norm": "linf", "eps": [0.01, 0.08], "clip": [0.0, 1.0],
             "claimed_certified_accuracy": [0.5, 0.9]}
    (folder / "claim.json").write_text(json.dumps(claim))
    return folder, claim


def test_service_audit_equals_the_local_audit(make_stack, digits_claim, tmp_path):
    folder, claim = digits_claim
    local = run_audit(load_claim(folder / "claim.json"), tmp_path / "local", timeout_per_sample=30, tightness_samples=0)
    stack = make_stack(concurrency=2)
    api = client_for(stack, "auditor")
    auth = {"Authorization": f"Bearer {api.token}"}
    files = {"claim": ("claim.json", json.dumps(claim)), "model": ("mlp.onnx", (folder / "mlp.onnx").read_bytes()),
             "data": ("data.npz", (folder / "data.npz").read_bytes())}
    r = httpx.post(f"{stack.url}/v1/audits", headers=auth, files=files, data={"timeout_per_sample": "30"}, timeout=60)
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["items"] == 24 and started["jobs"] == 24 - started["misclassified"]
    audit_id = started["id"]
    for _ in range(600):
        got = httpx.get(f"{stack.url}/v1/audits/{audit_id}", headers=auth, timeout=60).json()
        if got["state"] == "done":
            break
        assert got["report"]["jobs"]["total"] == started["jobs"]
        time.sleep(0.5)
    remote = got["report"]
    assert remote["complete"] and got["state"] == "done"
    keys = ("eps", "n", "clean", "certified", "falsified", "unknown", "claim_verdict")
    assert [{k: e[k] for k in keys} for e in remote["per_eps"]] == [{k: e[k] for k in keys} for e in local["per_eps"]]
    assert remote["claim_verdict"] == local["claim_verdict"]
    assert [(s["key"], s["verdict"]) for s in remote["samples"]] == [(s["key"], s["verdict"]) for s in local["samples"]]
    bundle = httpx.get(f"{stack.url}/v1/audits/{audit_id}/bundle", headers=auth, timeout=120)
    zipfile.ZipFile(io.BytesIO(bundle.content)).extractall(tmp_path / "bundle")
    check = audit_check(tmp_path / "bundle" / "report.json")
    assert check.ok, check.failures
    assert check.certificates + check.counterexamples + len(check.unchecked) == sum(
        s["verdict"] in ("holds", "violated") for s in remote["samples"])
    html = httpx.get(f"{stack.url}/v1/audits/{audit_id}/report.html", headers=auth, timeout=120).text
    assert "<html" in html.lower() and "data:image/png;base64," in html
    assert httpx.post(f"{stack.url}/v1/audits/{audit_id}/resume", headers=auth).json()["resent"] == 0
    other = client_for(stack, "someone-else")
    assert httpx.get(f"{stack.url}/v1/audits/{audit_id}", headers={"Authorization": f"Bearer {other.token}"}).status_code == 404


@pytest.mark.parametrize("change,words", [({"eps": -0.1}, "eps"), ({"claimed_certified_accuracy": 1.5}, "claimed"),
                                          ({"norm": "l1"}, "norm"), ({"surprise": 1}, "unknown")])
def test_bad_claims_are_refused_before_any_job(shared_stack, digits_claim, change, words):
    folder, claim = digits_claim
    api = client_for(shared_stack, "auditor2")
    auth = {"Authorization": f"Bearer {api.token}"}
    before = httpx.get(f"{shared_stack.url}/v1/jobs", headers=auth).json()["total"]
    files = {"claim": ("claim.json", json.dumps(dict(claim, **change))),
             "model": ("mlp.onnx", (folder / "mlp.onnx").read_bytes()), "data": ("data.npz", (folder / "data.npz").read_bytes())}
    r = httpx.post(f"{shared_stack.url}/v1/audits", headers=auth, files=files, timeout=60)
    assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert httpx.get(f"{shared_stack.url}/v1/jobs", headers=auth).json()["total"] == before


def test_data_that_does_not_fit_the_model_is_refused(shared_stack, digits_claim, tmp_path):
    folder, claim = digits_claim
    api = client_for(shared_stack, "auditor3")
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((3, 7), np.float32), y=np.zeros(3, np.int64))
    files = {"claim": ("claim.json", json.dumps(claim)), "model": ("mlp.onnx", (folder / "mlp.onnx").read_bytes()),
             "data": ("data.npz", buf.getvalue())}
    r = httpx.post(f"{shared_stack.url}/v1/audits", headers={"Authorization": f"Bearer {api.token}"}, files=files, timeout=60)
    assert r.status_code == 422 and "claim" in r.json()["detail"], r.text
