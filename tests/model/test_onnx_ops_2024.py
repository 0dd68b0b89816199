"""Lowering of the ops of the 2024-2026 VNN-COMP networks, compared with onnxruntime.

Floor, Ceil, Round, Erf (new canonical ops); Abs, Max, Min, ReduceMax, ReduceMin (relus);
ReduceL2, LayerNormalization and Gelu (pow / sqrt / reciprocal / mul / erf).
"""
import numpy as np
import pytest
import torch

from onnx_factory import compare, helper, make_onnx, ops_of, rand
from verifier.model import UnsupportedModelError, load_onnx_bytes
from verifier.model.reference import OnnxRunner

N = helper.make_node
RNG = np.random.default_rng(24)


def _exact_points(data, x: np.ndarray):
    """The canonical graph and onnxruntime agree exactly on the given inputs [n, n_inputs]."""
    model = load_onnx_bytes(data, "test")
    ref = OnnxRunner(data).run(x)
    out = model.graph.forward(torch.tensor(x, dtype=torch.float32).reshape((x.shape[0],) + model.input_shape))
    np.testing.assert_array_equal(out.reshape(x.shape[0], -1).double().numpy(), ref)
    return model


@pytest.mark.parametrize("op", ["Floor", "Ceil", "Round"])
def test_steps_match_onnxruntime_at_ties_integers_and_random_points(op):
    """Round is half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2."""
    ties = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.0, -3.0, 0.0, -0.0, 1e-7, -1e-7, 1e7 + 0.5, 2.4999999])
    rnd = RNG.uniform(-6, 6, 50 * 14 - ties.size)
    x = np.concatenate([ties, rnd]).astype(np.float32).reshape(50, 14)
    data = make_onnx([N("Mul", ["x", "k"], ["s"]), N(op, ["s"], ["y"])], [1, 14], {"k": np.float32(2.5)})
    model = _exact_points(data, x / np.float32(2.5))
    assert ops_of(model) == ["affine", op.lower()]
    _exact_points(make_onnx([N(op, ["x"], ["y"])], [1, 14]), x)


def test_erf_and_gelu_pattern_of_erf():
    """The exporters' GELU: x * 0.5 * (1 + erf(x / sqrt 2))."""
    nodes = [N("Div", ["x", "r2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["p"]),
             N("Mul", ["x", "p"], ["m"]), N("Mul", ["m", "half"], ["y"])]
    inits = {"r2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)}
    model = compare(make_onnx(nodes, [1, 9], inits), scale=4.0)
    assert {"erf", "mul"} <= set(ops_of(model))
    assert ops_of(compare(make_onnx([N("Erf", ["x"], ["y"])], [1, 9]), scale=3.0)) == ["erf"]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset_20(approximate):
    data = make_onnx([N("Gelu", ["x"], ["y"], approximate=approximate)], [1, 2, 5], opset=20)
    model = compare(data, scale=4.0, rtol=1e-5, atol=1e-6)
    assert ("erf" if approximate == "none" else "tanh") in ops_of(model) and "mul" in ops_of(model)


def test_abs_is_two_relus():
    model = compare(make_onnx([N("Gemm", ["x", "w"], ["h"], transB=1), N("Abs", ["h"], ["y"])], [1, 4],
                              {"w": rand(RNG, 6, 4)}))
    assert ops_of(model).count("relu") == 2 and "add" in ops_of(model)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_of_variables_and_constants_with_broadcast(op):
    """Three variables of different shapes and two constants (one a row, one a scalar)."""
    nodes = [N("Gemm", ["x", "w1"], ["a"], transB=1), N("Gemm", ["x", "w2"], ["b0"], transB=1),
             N("Reshape", ["b0", "s"], ["b"]), N(op, ["a", "b", "x", "k1", "k2"], ["y"])]
    inits = {"w1": rand(RNG, 4, 4), "w2": rand(RNG, 8, 4), "s": np.array([2, 4]),
             "k1": rand(RNG, 4), "k2": np.float32(0.3)}
    model = compare(make_onnx(nodes, [1, 4], inits))
    assert model.graph.output_shape == (2, 4)
    assert ops_of(model).count("relu") == 3


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_single_operand_and_constant_only(op):
    model = compare(make_onnx([N(op, ["x"], ["y"])], [1, 3]))
    assert ops_of(model) == []
    model = compare(make_onnx([N(op, ["k", "x"], ["y"])], [1, 3], {"k": np.float32(-0.2)}))
    assert ops_of(model).count("relu") == 1


def test_max_with_an_infinite_constant_is_refused():
    data = make_onnx([N("Max", ["x", "k"], ["y"])], [1, 3], {"k": np.float32(-np.inf)})
    with pytest.raises(UnsupportedModelError, match="non-finite"):
        load_onnx_bytes(data)


REDUCE_CASES = [([1, 3, 4, 5], [2], 1), ([1, 3, 4, 5], [2], 0), ([1, 3, 4, 5], [1, 3], 1), ([1, 3, 4, 5], [-1, 1], 0),
                ([1, 3, 4, 5], None, 1), ([1, 3, 4, 5], None, 0), ([1, 7], [1], 0), ([1, 6, 1], [1], 1),
                ([1, 5, 3], [0, 2], 0), ([1, 2, 1], [2], 0)]


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceL2"])
@pytest.mark.parametrize("shape,axes,keepdims", REDUCE_CASES)
@pytest.mark.parametrize("opset", [13, 18])
def test_reductions_keepdims_and_axes(op, shape, axes, keepdims, opset):
    kw = {"keepdims": keepdims}
    inputs, inits = ["x"], {}
    if axes is not None and opset >= 18:
        inputs, inits = ["x", "axes"], {"axes": np.array(axes, np.int64)}
    elif axes is not None:
        kw["axes"] = axes
    model = compare(make_onnx([N(op, inputs, ["y"], **kw)], shape, inits, opset=opset))
    if op == "ReduceL2":
        assert {"pow", "sqrt"} <= set(ops_of(model))
    elif int(np.prod([shape[a] for a in (axes if axes is not None else range(len(shape)))])) > 1:
        assert "relu" in ops_of(model)


def test_reduce_max_noop_with_empty_axes_is_the_input():
    data = make_onnx([N("ReduceMax", ["x"], ["y"], noop_with_empty_axes=1)], [1, 4], opset=18)
    assert ops_of(compare(data)) == []


def test_reduce_max_of_wide_rows_after_a_linear():
    """An odd width (11) exercises the waiting columns of the tournament."""
    nodes = [N("MatMul", ["x", "w"], ["h"]), N("ReduceMax", ["h"], ["y"], axes=[-1], keepdims=0)]
    compare(make_onnx(nodes, [1, 3, 4], {"w": rand(RNG, 4, 11)}))


@pytest.mark.parametrize("shape,axis", [([1, 4, 6], -1), ([1, 4, 6], 2), ([1, 3, 2, 5], 2), ([1, 8], -1),
                                        ([1, 3, 4], 1)])
def test_layer_normalization(shape, axis):
    norm = shape[axis:] if axis != -1 else shape[-1:]
    inits = {"scale": 1 + 0.3 * rand(RNG, *norm), "bias": 0.2 * rand(RNG, *norm)}
    node = N("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=axis, epsilon=1e-3)
    model = compare(make_onnx([node], shape, inits, opset=17), rtol=1e-4, atol=1e-5)
    assert {"pow", "sqrt", "reciprocal", "mul"} <= set(ops_of(model))


def test_layer_normalization_without_bias_after_a_projection():
    nodes = [N("MatMul", ["x", "w"], ["h"]), N("LayerNormalization", ["h", "scale"], ["y"])]
    inits = {"w": rand(RNG, 5, 8), "scale": rand(RNG, 8)}
    compare(make_onnx(nodes, [1, 3, 5], inits, opset=17), rtol=1e-4, atol=1e-5)


def test_layer_normalization_extra_outputs_are_refused():
    node = N("LayerNormalization", ["x", "scale"], ["y", "mean"])
    with pytest.raises(UnsupportedModelError, match="LayerNormalization"):
        load_onnx_bytes(make_onnx([node], [1, 4], {"scale": rand(RNG, 4)}, opset=17))


def test_ops_of_the_newer_competitions_load_into_bounded_graphs():
    """Every canonical op these lowerings emit has a bound rule and a checker rule."""
    from verifier.bounds.registry import OPS, op_rules
    from verifier.check.crown import SUPPORTED

    nodes = [N("Floor", ["x"], ["f"]), N("Abs", ["x"], ["a"]), N("Max", ["f", "a"], ["m"]),
             N("ReduceL2", ["m"], ["l2"], axes=[1], keepdims=1), N("Add", ["m", "l2"], ["s"]),
             N("Erf", ["s"], ["e"]), N("Round", ["e"], ["r"]), N("Ceil", ["r"], ["c"]),
             N("ReduceMax", ["c"], ["y"], axes=[1], keepdims=1)]
    model = load_onnx_bytes(make_onnx(nodes, [1, 5]))
    ops = set(ops_of(model))
    assert {"floor", "ceil", "round", "erf", "relu", "pow", "sqrt"} <= ops
    assert ops <= set(OPS) and ops <= SUPPORTED
    rules = op_rules(model.graph)
    assert set(rules) == ops
    assert all(v and "unsupported" not in v for r in rules.values() for v in r.values())
    assert "x - 1 <= floor(x) <= x" in rules["floor"]["crown"]


def _floor_abs_net(path) -> None:
    """x[1,2] -> floor(x) + |x| -> sum (a Gemm with ones) -> y[1,1]."""
    nodes = [N("Floor", ["x"], ["f"]), N("Abs", ["x"], ["a"]), N("Add", ["f", "a"], ["s"]),
             N("Gemm", ["s", "w"], ["y"], transB=1)]
    path.write_bytes(make_onnx(nodes, [1, 2], {"w": np.ones((1, 2), np.float32)}))


def _spec(path, threshold: float) -> None:
    """x0 in [0.5, 1.5], x1 in [-0.75, 0.5]; unsafe: Y_0 >= threshold."""
    path.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                    "(assert (>= X_0 0.5))\n(assert (<= X_0 1.5))\n(assert (>= X_1 -0.75))\n(assert (<= X_1 0.5))\n"
                    f"(assert (>= Y_0 {threshold!r}))\n")


@pytest.mark.parametrize("threshold,expected", [(3.2, "holds"), (2.2, "violated")])
def test_verify_floor_abs_network_end_to_end(tmp_path, threshold, expected):
    """max over the box of floor(x0) + |x0| + floor(x1) + |x1| is 3 (at x = (1.5, 0.5))."""
    from verifier.config import VerifyConfig
    from verifier.portfolio import verify
    from verifier.result import Verdict

    net, prop = tmp_path / "net.onnx", tmp_path / "prop.vnnlib"
    _floor_abs_net(net)
    _spec(prop, threshold)
    result = verify(str(net), str(prop), VerifyConfig(timeout=60))
    assert result.verdict.value == expected, (result.reason, result.log)
    if result.verdict is Verdict.HOLDS:
        assert result.certificate_checked is True and result.certificate is not None
    else:
        x, y = result.counterexample.x, result.counterexample.y
        assert 0.5 <= x[0] <= 1.5 and -0.75 <= x[1] <= 0.5 and y[0] >= threshold
        assert y[0] == pytest.approx(np.floor(x[0]) + abs(x[0]) + np.floor(x[1]) + abs(x[1]), abs=1e-5)


def test_verify_floor_abs_network_by_relu_splitting_and_milp_refusal(tmp_path):
    """ReLU branch and bound splits only the relus of Abs (floor stays relaxed, so 3.2 is out of its
    reach: unknown, never a wrong or unchecked holds); at 4.5 it holds with a checked certificate.
    MILP, which has no floor encoding, refuses with the op's name."""
    from verifier.config import VerifyConfig
    from verifier.portfolio import verify

    net, prop = tmp_path / "net.onnx", tmp_path / "prop.vnnlib"
    _floor_abs_net(net)
    cfg = VerifyConfig.from_dict({"timeout": 30, "method": "bab", "bab": {"input_split_max_dims": 0}})
    for threshold in (3.2, 4.5):
        _spec(prop, threshold)
        result = verify(str(net), str(prop), cfg)
        assert result.verdict.value in ("holds", "unknown", "timeout"), (result.reason, result.log)
        if result.verdict.value == "holds":
            assert result.certificate_checked is True
    assert result.verdict.value == "holds"
    _spec(prop, 3.2)
    result = verify(str(net), str(prop), VerifyConfig(timeout=30, method="milp"))
    assert result.verdict.value == "unknown"
    assert any("MILP encoding does not support ops: floor" in line for line in result.log), result.log


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
def test_lowered_transformer_ops_get_sound_bounds(method):
    """MatMul -> LayerNorm -> Gelu -> Max(., const) -> {ReduceMax, ReduceL2} -> Concat: the engine's
    bounds over small boxes enclose the onnxruntime-checked forward values at sampled points."""
    from verifier.bounds import BoundEngine
    from verifier.config import AlphaConfig

    nodes = [N("MatMul", ["x", "w"], ["h"]), N("LayerNormalization", ["h", "scale", "bias"], ["n"]),
             N("Gelu", ["n"], ["g"]), N("Max", ["g", "k"], ["m"]), N("Abs", ["h"], ["a"]),
             N("ReduceMax", ["m", "ax"], ["r1"], keepdims=0), N("ReduceL2", ["a", "ax"], ["r2"], keepdims=0),
             N("Concat", ["r1", "r2"], ["y"], axis=-1)]
    inits = {"w": rand(RNG, 3, 5), "scale": 1 + 0.2 * rand(RNG, 5), "bias": 0.1 * rand(RNG, 5),
             "k": np.float32(-0.1), "ax": np.array([-1], np.int64)}
    data = make_onnx(nodes, [1, 2, 3], inits, opset=20)
    model = compare(data, rtol=1e-4, atol=1e-5)
    graph = model.graph
    engine = BoundEngine(graph)
    gen = torch.Generator().manual_seed(0)
    for width in (0.01, 0.2):
        centre = torch.randn((1,) + graph.input_shape, generator=gen)
        lo, hi = centre - width / 2, centre + width / 2
        res = engine.compute(lo, hi, method=method, alpha=AlphaConfig(iterations=3))
        x = lo + (hi - lo) * torch.rand((2000,) + graph.input_shape, generator=gen)
        y = graph.to(dtype=torch.float64).forward(torch.cat([lo, hi, x]).double()).reshape(2002, -1)
        tol = 1e-4 * (1 + y.abs())
        assert bool((y >= res.lower.double() - tol).all()) and bool((y <= res.upper.double() + tol).all())
        assert bool(torch.isfinite(res.lower).all()) and bool(torch.isfinite(res.upper).all())
