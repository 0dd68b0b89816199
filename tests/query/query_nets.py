"""Tiny ONNX networks for the VNN-LIB 2.0 tests, written with onnx.helper (exact weights)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, a) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)


def mlp(path, layers: list[tuple[np.ndarray, np.ndarray]], n_in: int, in_shape=None, out_shape=None,
        hidden_name: str = "h0") -> str:
    """x -> (Gemm, Relu)* -> Gemm; the first ReLU's output is the tensor ``hidden_name``."""
    in_shape = in_shape or [1, n_in]
    nodes, inits = [], []
    prev = "x"
    if list(in_shape) != [1, n_in]:
        inits.append(numpy_helper.from_array(np.array([1, n_in], dtype=np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", ["x", "flat_shape"], ["x_flat"]))
        prev = "x_flat"
    for k, (W, b) in enumerate(layers):
        inits += [_init(f"W{k}", W), _init(f"b{k}", b)]
        out = f"z{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{k}", f"b{k}"], [out], transB=1))
        prev = out
        if k < len(layers) - 1:
            act = hidden_name if k == 0 else f"h{k}"
            nodes.append(helper.make_node("Relu", [out], [act]))
            prev = act
    n_out = layers[-1][0].shape[0]
    out_shape = out_shape or [1, n_out]
    if list(out_shape) != [1, n_out]:
        inits.append(numpy_helper.from_array(np.array(out_shape, dtype=np.int64), "out_shape"))
        nodes.append(helper.make_node("Reshape", [prev, "out_shape"], ["y"]))
    else:
        nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def two_inputs(path, W_a: np.ndarray, W_b: np.ndarray, bias: np.ndarray) -> str:
    """y = relu(a @ W_a.T + b @ W_b.T + bias) summed into 1 output; inputs a [1, n_a], b [1, n_b]."""
    n_a, n_b, h = W_a.shape[1], W_b.shape[1], W_a.shape[0]
    nodes = [helper.make_node("MatMul", ["a", "WaT"], ["pa"]), helper.make_node("MatMul", ["b", "WbT"], ["pb"]),
             helper.make_node("Add", ["pa", "pb"], ["s"]), helper.make_node("Add", ["s", "bias"], ["pre"]),
             helper.make_node("Relu", ["pre"], ["hid"]), helper.make_node("MatMul", ["hid", "ones"], ["y"])]
    inits = [_init("WaT", W_a.T), _init("WbT", W_b.T), _init("bias", bias), _init("ones", np.ones((h, 1)))]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, n_a]),
                                             helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, n_b])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def random_layers(rng, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Gemm weights for consecutive ``sizes``."""
    return [(rng.normal(size=(b, a)) / np.sqrt(a), rng.normal(size=b) * 0.1) for a, b in zip(sizes, sizes[1:])]


def query(networks: str, *asserts: str) -> str:
    """A 2.0 query text from network declarations and assert bodies."""
    return "(vnnlib-version <2.0>)\n" + networks + "\n" + "\n".join(f"(assert {a})" for a in asserts) + "\n"


def box(var: str, idx: list[str], lo: float, hi: float) -> str:
    """``(and (>= V[i] lo) (<= V[i] hi) ...)`` over the index strings ``idx``."""
    return "(and " + " ".join(f"(>= {var}[{i}] {lo!r}) (<= {var}[{i}] {hi!r})" for i in idx) + ")"
