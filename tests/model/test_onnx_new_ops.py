"""Lowering of the nonlinear ONNX ops (Mul/Div/MatMul of two variables, Pow, Sin, Cos, Exp, Softmax, ...)."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from onnx_factory import compare, helper, make_onnx, ops_of, rand
from verifier.model import UnsupportedModelError, load_onnx, load_onnx_bytes
from verifier.model.reference import OnnxRunner
from verifier.shared_data import absent_reason, benchmarks_root

N = helper.make_node
RNG = np.random.default_rng(11)
ROOT = benchmarks_root() / "vnncomp2023"


def test_mul_of_two_variables_with_broadcast():
    nodes = [N("Slice", ["x", "s0", "s1", "ax"], ["a"]), N("Slice", ["x", "s1", "s2", "ax"], ["b"]),
             N("Mul", ["a", "b"], ["y"])]
    inits = {"s0": np.array([0]), "s1": np.array([3]), "s2": np.array([4]), "ax": np.array([1])}
    model = compare(make_onnx(nodes, [1, 4], inits))
    assert "mul" in ops_of(model)


def test_div_by_variable_and_constant_over_variable():
    nodes = [N("Exp", ["x"], ["e"]), N("ReduceSum", ["e"], ["s"], keepdims=1), N("Div", ["x", "s"], ["d"]),
             N("Div", ["two", "e"], ["q"]), N("Add", ["d", "q"], ["y"])]
    model = compare(make_onnx(nodes, [1, 5], {"two": np.float32(2.0)}, opset=11))
    assert {"reciprocal", "mul", "exp"} <= set(ops_of(model))


@pytest.mark.parametrize("p,op", [(2.0, "pow"), (3.0, "pow"), (4.0, "pow"), (0.5, "sqrt"), (-1.0, "reciprocal")])
def test_pow_with_constant_exponent(p, op):
    nodes = [N("Abs", ["x"], ["a"])] if p in (0.5, -1.0) else []
    src = "x"
    if nodes:   # keep the base positive: 1 + relu-free square of x
        nodes = [N("Mul", ["x", "x"], ["sq"]), N("Add", ["sq", "one"], ["pos"])]
        src = "pos"
    nodes.append(N("Pow", [src, "e"], ["y"]))
    model = compare(make_onnx(nodes, [1, 6], {"e": np.float32(p), "one": np.float32(1.0)}))
    assert op in ops_of(model)


def test_pow_with_an_unsupported_exponent_is_listed():
    data = make_onnx([N("Pow", ["x", "e"], ["y"])], [1, 3], {"e": np.float32(1.5)})
    with pytest.raises(UnsupportedModelError, match="Pow"):
        load_onnx_bytes(data)


@pytest.mark.parametrize("op", ["Sin", "Cos", "Exp"])
def test_elementwise_transcendental(op):
    model = compare(make_onnx([N(op, ["x"], ["y"])], [1, 7]), scale=6.0)
    assert ops_of(model) == [op.lower()]


@pytest.mark.parametrize("opset,axis,shape", [(13, -1, [1, 3, 4]), (13, 1, [1, 3, 4]), (11, 1, [1, 3, 4]),
                                              (9, 3, [1, 2, 3, 5]), (11, None, [1, 2, 3])])
def test_softmax_axis_semantics(opset, axis, shape):
    kw = {} if axis is None else {"axis": axis}
    model = compare(make_onnx([N("Softmax", ["x"], ["y"], **kw)], shape, opset=opset), scale=4.0)
    assert {"exp", "reciprocal"} <= set(ops_of(model))


def test_softmax_of_large_logits_matches():
    model = compare(make_onnx([N("Softmax", ["x"], ["y"], axis=-1)], [1, 6], opset=13), scale=60.0, atol=1e-6)
    assert model.graph.output_shape == (6,)


def test_matmul_of_two_variables_attention_shape():
    """[1, h, t, d] @ [1, h, d, t] (attention scores), then softmax @ values."""
    nodes = [N("MatMul", ["x", "w"], ["q"]), N("Transpose", ["q"], ["kt"], perm=[0, 1, 3, 2]),
             N("MatMul", ["q", "kt"], ["s"]), N("Softmax", ["s"], ["p"], axis=-1), N("MatMul", ["p", "q"], ["y"])]
    model = compare(make_onnx(nodes, [1, 2, 3, 4], {"w": rand(RNG, 4, 4)}), scale=1.0, rtol=1e-4)
    assert ops_of(model).count("matmul") == 2


def test_matmul_of_two_variables_with_broadcast_batch():
    nodes = [N("Reshape", ["x", "s1"], ["a"]), N("Reshape", ["x", "s2"], ["b"]), N("MatMul", ["a", "b"], ["y"])]
    inits = {"s1": np.array([1, 2, 3, 2]), "s2": np.array([1, 1, 2, 6])}
    model = compare(make_onnx(nodes, [1, 12], inits))
    assert "matmul" in ops_of(model)


def test_matmul_of_two_variables_without_a_batch_dim_uses_mul():
    nodes = [N("Reshape", ["x", "s1"], ["a"]), N("Reshape", ["x", "s2"], ["b"]), N("MatMul", ["a", "b"], ["y"])]
    inits = {"s1": np.array([3, 4]), "s2": np.array([4, 3])}
    model = compare(make_onnx(nodes, [12], inits))
    assert "mul" in ops_of(model) and "matmul" not in ops_of(model)


def _networks():
    """(family, onnx path, first property) of each distinct network of the four new-op families."""
    out = []
    for fam in ("ml4acopf", "nn4sys", "vit"):
        folder = ROOT / fam
        if not folder.is_dir():
            continue
        seen = set()
        for row in csv.reader((folder / "instances.csv").open()):
            if row and row[0].endswith(".onnx") and row[0] not in seen:
                seen.add(row[0])
                out.append((fam, str(folder / row[0]), str(folder / row[1])))
    return out


NETS = _networks()
NEW = [n for n in NETS if any(k in n[1] for k in ("ml4acopf", "mscn", "parallel", "vit"))]


@pytest.mark.skipif(not NEW, reason=absent_reason(ROOT))
@pytest.mark.parametrize("fam,path,prop", NEW, ids=[Path(p).name for _, p, _ in NEW])
def test_new_op_benchmark_networks_match_onnxruntime(fam, path, prop):
    from verifier.spec.vnnlib import load_vnnlib

    model = load_onnx(path)
    region = load_vnnlib(prop).regions[0]
    x = (region.lower + np.random.default_rng(0).uniform(0, 1, (3, region.lower.size))
         * (region.upper - region.lower)).astype(np.float32)
    ref = OnnxRunner(path).run(x)
    out = model.graph.forward(torch.tensor(x).reshape((3,) + model.input_shape)).reshape(3, -1).double().numpy()
    assert np.abs(out - ref).max() / max(1.0, np.abs(ref).max()) <= 1e-5
