"""Loader failures: every unsupported op listed at once; unreadable or unsafe files rejected."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_factory import make_onnx
from verifier.model import ModelLoadError, UnsupportedModelError, load_onnx, load_onnx_bytes

N = helper.make_node


def _small_model() -> bytes:
    """x[1,4] -> Gemm -> Relu -> Gemm."""
    rng = np.random.default_rng(0)
    inits = {"W1": rng.standard_normal((4, 8)).astype(np.float32), "W2": rng.standard_normal((8, 2)).astype(np.float32)}
    return make_onnx([N("Gemm", ["x", "W1"], ["h"]), N("Relu", ["h"], ["r"]), N("Gemm", ["r", "W2"], ["y"])], [1, 4], inits)


def test_all_unsupported_ops_reported_together():
    nodes = [N("Atan", ["x"], ["a"], name="atan1"), N("Atan", ["a"], ["b"], name="atan2"),
             N("LSTMish", ["x"], ["c"], name="odd", domain="custom"), N("Pow", ["x", "p"], ["e"], name="pw"),
             N("Add", ["b", "c"], ["f"]), N("Add", ["f", "e"], ["y"])]
    data = make_onnx(nodes, [1, 3], {"p": np.float32(1.5)}, opset=13)
    with pytest.raises(UnsupportedModelError) as err:
        load_onnx_bytes(data)
    msg = str(err.value)
    assert msg.startswith("unsupported ONNX ops: ")
    assert "Atan (node atan1, 1 more)" in msg and "LSTMish (node odd" in msg
    assert "Pow (node pw: exponent 1.5" in msg


@pytest.mark.parametrize("node,inits,reason", [
    (N("Pow", ["x", "p"], ["y"]), {"p": np.float32(1.5)}, "exponent 1.5"),
    (N("Conv", ["x", "x"], ["y"]), {}, "weight must be constant"),
    (N("Gather", ["c", "x"], ["y"]), {"c": np.ones(3, np.float32)}, "data must depend"),
    (N("MaxPool", ["x"], ["y", "idx"], kernel_shape=[1]), {}, "Indices output"),
    (N("Dropout", ["x", "", "t"], ["y"]), {"t": np.array(True)}, "training_mode"),
    (N("Clip", ["x", "lo", "hi"], ["y"]), {"lo": np.float32(1), "hi": np.float32(0)}, "min > max"),
    (N("Conv", ["x", "w"], ["y"]), {"w": np.ones((1, 3, 1, 1, 1), np.float32)}, "3-D window")])
def test_unsupported_forms_have_reasons(node, inits, reason):
    with pytest.raises(UnsupportedModelError, match=reason):
        load_onnx_bytes(make_onnx([node], [1, 3, 3], inits))


def test_two_inputs_rejected():
    graph = helper.make_graph([N("Add", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(UnsupportedModelError, match="one graph input"):
        load_onnx_bytes(helper.make_model(graph).SerializeToString())


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, cut):
    data = _small_model()
    path = tmp_path / "t.onnx"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelLoadError) as err:
        load_onnx(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("data", [b"", b"\x00" * 64, os.urandom(0) + bytes(range(256)) * 4, b"hello, not onnx\n" * 10])
def test_garbage_bytes(data):
    with pytest.raises(ModelLoadError):
        load_onnx_bytes(data)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_onnx(str(tmp_path / "absent.onnx"))


def _external_model(location: str) -> onnx.ModelProto:
    """A model whose weight claims to live in external file ``location``."""
    w = numpy_helper.from_array(np.ones((3, 2), np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "24")):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    graph = helper.make_graph([N("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_folder(tmp_path, location):
    folder = tmp_path / "models"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.ones(6, np.float32).tobytes())
    path = folder / "m.onnx"
    path.write_bytes(_external_model(location).SerializeToString())
    with pytest.raises(ModelLoadError, match="leaves the model folder"):
        load_onnx(str(path))


def test_external_data_inside_folder_loads(tmp_path):
    weights = np.arange(6, dtype=np.float32)
    (tmp_path / "w.bin").write_bytes(weights.tobytes())
    path = tmp_path / "m.onnx"
    path.write_bytes(_external_model("w.bin").SerializeToString())
    model = load_onnx(str(path))
    np.testing.assert_array_equal(model.graph.nodes[0].params["weight"].numpy(), weights.reshape(3, 2).T)
    with pytest.raises(ModelLoadError, match="external data"):
        load_onnx_bytes(path.read_bytes())


def test_huge_declared_tensor():
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[100000, 100000])
    graph = helper.make_graph([N("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 100000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    data = helper.make_model(graph).SerializeToString()
    with pytest.raises(ModelLoadError, match="max_params"):
        load_onnx_bytes(data)


def test_huge_constant_of_shape_not_folded():
    nodes = [N("ConstantOfShape", ["s"], ["z"]), N("Add", ["x", "z"], ["y"])]
    data = make_onnx(nodes, [1, 3], {"s": np.array([50000, 50000, 3], np.int64)})
    with pytest.raises(ModelLoadError, match="max_params"):
        load_onnx_bytes(data, max_params=1_000_000)


def test_max_params_is_respected():
    with pytest.raises(ModelLoadError, match="max_params"):
        load_onnx_bytes(_small_model(), max_params=20)
    assert load_onnx_bytes(_small_model()).graph.n_outputs == 2


def test_model_metadata(tmp_path):
    import hashlib

    data = _small_model()
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    model = load_onnx(str(path))
    assert model.sha256 == hashlib.sha256(data).hexdigest() and model.path == str(path)
    assert model.input_name == "x" and model.input_shape == (4,) and model.output_shape == (2,)
    assert [n.op for n in model.graph.nodes] == ["linear", "relu", "linear"]
    assert any(f.startswith("lowered Gemm") for f in model.folded)
