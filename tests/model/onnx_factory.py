"""Helpers (not tests) for the ONNX loader tests: build tiny ONNX models and compare with onnxruntime."""
import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier.model import load_onnx_bytes
from verifier.model.reference import OnnxRunner


def make_onnx(nodes, in_shape, inits=None, opset=13, in_name="x", out_name="y", in_type=TensorProto.FLOAT):
    """Serialized one-input one-output ONNX model."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(in_name, in_type, in_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 9
    return model.SerializeToString()


def compare(data, n=6, seed=0, scale=2.0, rtol=1e-5, atol=1e-5):
    """Load ``data``, run the canonical graph and onnxruntime on random inputs, assert equal."""
    model = load_onnx_bytes(data, "test")
    runner = OnnxRunner(data)
    assert runner.n_inputs == model.graph.n_inputs
    x = np.random.default_rng(seed).uniform(-scale, scale, (n, runner.n_inputs)).astype(np.float32)
    ref = runner.run(x)
    out = model.graph.forward(torch.tensor(x).reshape((n,) + model.input_shape))
    assert tuple(out.shape) == (n,) + model.output_shape
    np.testing.assert_allclose(out.reshape(n, -1).double().numpy(), ref, rtol=rtol, atol=atol)
    return model


def ops_of(model):
    """Canonical op names used by a loaded model."""
    return [node.op for node in model.graph.nodes]


def rand(rng, *shape):
    """Random float32 array."""
    return rng.standard_normal(shape).astype(np.float32)


__all__ = ["make_onnx", "compare", "ops_of", "rand", "helper", "onnx", "TensorProto", "numpy_helper"]
