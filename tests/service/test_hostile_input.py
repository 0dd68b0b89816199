"""Hostile uploads get a clear 4xx or an ``error`` verdict naming the problem; nothing else breaks."""
from __future__ import annotations

import httpx
import onnx
import pytest
from onnx import TensorProto, helper

from service_stack import EXAMPLES, client_for, running_stack
from workers.events import Keys, client, registered_workers

MODEL, HOLDS = EXAMPLES / "mlp.onnx", EXAMPLES / "robust.vnnlib"
LIMIT = 200_000   # model upload bytes accepted by this module's stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("hostile"), {"NNVERIFY_MAX_MODEL_BYTES": str(LIMIT)}) as st:
        yield st


@pytest.fixture(scope="module")
def api(stack):
    return client_for(stack, "mallory")


def post(stack, api, model: bytes, spec: bytes, **form) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/jobs", headers={"Authorization": f"Bearer {api.token}"},
                      files={"model": ("m.onnx", model), "spec": ("s.vnnlib", spec)}, data=form, timeout=60)


def one_relu(initializers=(), n_in=2) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_in])], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def external_data_model() -> bytes:
    t = helper.make_tensor("w", TensorProto.FLOAT, [2], [0.0, 0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "8")):
        t.external_data.add(key=k, value=v)
    return one_relu([t]).SerializeToString()


def huge_declared_tensor() -> bytes:
    t = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1_000_000, 1_000_000])
    return one_relu([t]).SerializeToString()


def deeply_nested(levels: int = 10_000) -> bytes:
    """ModelProto whose graph nests GraphProto -> NodeProto -> AttributeProto.g -> ... ``levels`` times."""
    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    inner = b""
    for _ in range(levels):
        inner = field(1, field(5, field(6, inner)))   # GraphProto.node / NodeProto.attribute / AttributeProto.g
    return _varint(1 << 3) + _varint(8) + field(7, inner)   # ir_version 8, graph


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


TWO_INPUT_SPEC = b"(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n" \
                 b"(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n" \
                 b"(assert (<= Y_0 -1.0))\n"


@pytest.mark.parametrize("name,model,spec,status,words", [
    ("truncated onnx", MODEL.read_bytes()[: MODEL.stat().st_size // 2], HOLDS.read_bytes(), 422, "model"),
    ("external data", external_data_model(), TWO_INPUT_SPEC, 422, "external data"),
    ("10^12 elements", huge_declared_tensor(), TWO_INPUT_SPEC, 422, "elements"),
    ("nested 10,000 deep", deeply_nested(), TWO_INPUT_SPEC, 422, "model"),
    ("malformed vnnlib", MODEL.read_bytes(), b"(declare-const X_0 Real)\n(assert (<= X_0", 422, "spec"),
    ("size mismatch", MODEL.read_bytes(), TWO_INPUT_SPEC, 422, "inputs"),
    ("oversized upload", b"\0" * (LIMIT + 1), TWO_INPUT_SPEC, 413, "exceeds"),
    ("not utf-8 spec", MODEL.read_bytes(), b"\xff\xfe\x00", 422, "spec"),
])
def test_refused_with_a_clear_error(stack, api, name, model, spec, status, words):
    r = post(stack, api, model, spec)
    assert r.status_code == status, (name, r.text)
    assert words in r.json()["detail"], (name, r.json())


def test_bad_options_are_refused(stack, api):
    for form, words in (({"timeout": "-1"}, "timeout"), ({"method": "magic"}, "method"), ({"priority": "42"}, "priority")):
        r = post(stack, api, MODEL.read_bytes(), HOLDS.read_bytes(), **form)
        assert r.status_code == 422 and words in r.text, r.text


def test_unsupported_op_is_an_error_verdict_and_the_worker_lives_on(stack, api, tmp_path):
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    bad = tmp_path / "hardmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), bad)
    spec = tmp_path / "two.vnnlib"
    spec.write_bytes(TWO_INPUT_SPEC)
    pids = {w["pid"] for w in registered_workers(client(stack.settings), Keys(stack.settings))}
    bad_id = api.submit(str(bad), str(spec), timeout=30)
    good_id = api.submit(str(MODEL), str(HOLDS), timeout=60)
    bad_job, good_job = api.wait(bad_id, limit=120), api.wait(good_id, limit=120)
    assert (bad_job["state"], bad_job["verdict"]) == ("done", "error")
    assert "Hardmax" in bad_job["reason"]
    assert api.text(bad_id, "result") == "error\n"
    assert (good_job["state"], good_job["verdict"]) == ("done", "holds")
    assert {w["pid"] for w in registered_workers(client(stack.settings), Keys(stack.settings))} == pids
    assert all(p.poll() is None for p in stack.workers)
