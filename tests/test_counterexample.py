"""Tests for counterexample validation on onnxruntime and the VNN-COMP / JSON formats."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier.counterexample import (Counterexample, from_json, from_vnncomp, network_point, to_json,
                                     to_vnncomp, validate, validate_batch)
from verifier.spec.spec import Polytope, Region, Spec


class OrtRunner:
    """Minimal reference runner: onnxruntime on an in-memory ONNX model."""

    def __init__(self, model: onnx.ModelProto):
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.calls = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs [B, n_outputs] for inputs [B, n_inputs]."""
        self.calls += 1
        return self.session.run(None, {"x": np.asarray(x, dtype=np.float32)})[0]


def gemm_model(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """ONNX model y = x @ weight.T + bias in float32 (one Gemm)."""
    n_out, n_in = weight.shape
    inits = [numpy_helper.from_array(weight.astype(np.float32), "W"),
             numpy_helper.from_array(bias.astype(np.float32), "B")]
    node = helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n_out])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def one_region(lower, upper, polys) -> Spec:
    """A single-region spec from a box and (A, b) pairs."""
    region = Region(np.array(lower, float), np.array(upper, float), tuple(Polytope(np.array(A, float), np.array(b, float))
                                                                       for A, b in polys))
    return Spec(len(lower), len(polys[0][0][0]), (region,))


def identity_runner(n: int) -> OrtRunner:
    """Runner for y = x."""
    return OrtRunner(gemm_model(np.eye(n), np.zeros(n)))


# --- network_point -----------------------------------------------------------------------------

def test_network_point_is_float32_exact_and_inside_box():
    """Clipped values are float32-representable and lie inside the float64 box."""
    rng = np.random.default_rng(0)
    lower = rng.uniform(-1, 0, 200)
    upper = lower + rng.uniform(1e-6, 1e-3, 200)  # every box holds float32 values
    x = rng.uniform(-2, 2, 200)
    p = network_point(x, lower, upper)
    assert p is not None
    assert np.all(p >= lower) and np.all(p <= upper)
    assert np.array_equal(p.astype(np.float32).astype(np.float64), p)


def test_network_point_nudges_when_float32_rounds_out():
    """0.2 rounds up in float32; with upper bound 0.2 the value is nudged one ulp down."""
    assert np.float64(np.float32(0.2)) > 0.2
    p = network_point(np.array([0.2]), np.array([0.1]), np.array([0.2]))
    assert p[0] <= 0.2 and p[0] == np.nextafter(np.float32(0.2), np.float32(0))


def test_network_point_none_for_empty_float32_box_and_nan():
    """A width-0 box at a non-float32 value, or a NaN, has no network point."""
    assert network_point(np.array([0.1]), np.array([0.1]), np.array([0.1])) is None
    assert network_point(np.array([np.nan]), np.array([0.0]), np.array([1.0])) is None
    assert network_point(np.array([0.5]), np.array([0.5]), np.array([0.5]))[0] == 0.5


def test_network_point_inexact_keeps_box_value_where_no_float32_fits():
    """With exact=False a width-0 dim at 0.1 keeps 0.1 (inside the box); others stay float32."""
    p = network_point(np.array([0.3, 7.0]), np.array([0.1, 0.0]), np.array([0.1, 0.2]), exact=False)
    assert p[0] == 0.1 and p[1] == np.float64(np.nextafter(np.float32(0.2), np.float32(0)))


def test_network_point_follows_dtype():
    """For a float64 network the clipped value is kept as is; float16 values are float16-exact."""
    assert network_point(np.array([0.1]), np.array([0.1]), np.array([0.1]), dtype=np.float64)[0] == 0.1
    p = network_point(np.array([0.3]), np.array([0.0]), np.array([0.3]), dtype=np.float16)
    assert p[0] <= 0.3 and np.float64(np.float16(p[0])) == p[0]


# --- validate ----------------------------------------------------------------------------------

def test_validate_accepts_genuine_violation():
    """A point whose onnxruntime output satisfies the unsafe polytope is confirmed."""
    runner = OrtRunner(gemm_model(np.array([[1.0, -1.0]]), np.array([0.25])))
    spec = one_region([0, 0], [1, 1], [([[1.0]], [0.0])])  # unsafe: Y_0 <= 0
    cex = validate(runner, spec, np.array([0.0, 0.75]), source="milp")
    assert cex is not None and cex.source == "milp"
    assert spec.violation(cex.x, cex.y) == (0, 0)
    assert cex.margin == pytest.approx(-0.5) and cex.margin <= 0
    assert np.allclose(cex.y, runner.run(cex.x[None])[0])


def test_validate_rejects_float64_only_violation():
    """y = x - fl32(0.1) at x = 0.1 is negative in float64 but exactly 0 in float32."""
    bias = -np.float64(np.float32(0.1))
    runner = OrtRunner(gemm_model(np.array([[1.0]]), np.array([bias])))
    spec = one_region([0.0], [1.0], [([[1.0]], [-1e-10])])  # unsafe: Y_0 <= -1e-10
    x = np.array([0.1])
    assert spec.violation(x, x + bias) is not None  # the float64 reading says "violated"
    assert validate(runner, spec, x) is None


def test_validate_clips_outside_point_into_box():
    """Outside points are clipped: rejected if the clipped point is safe, else confirmed inside."""
    runner = identity_runner(2)
    spec = one_region([0, 0], [1, 1], [([[1.0, 0.0]], [-0.5])])  # unsafe: Y_0 <= -0.5 (outside only)
    assert validate(runner, spec, np.array([-1.0, 0.5])) is None
    spec2 = one_region([0, 0], [1, 1], [([[1.0, 0.0]], [0.0])])  # unsafe: Y_0 <= 0 (the box face)
    cex = validate(runner, spec2, np.array([-1.0, 2.0]))
    assert cex is not None and spec2.regions[0].contains(cex.x)
    assert np.array_equal(cex.x, [0.0, 1.0])


def test_validate_zero_margin_is_accepted_and_tiny_positive_is_not():
    """A y <= b holds at equality (VNN-LIB <=) and fails one float above it: no tolerance."""
    runner = identity_runner(1)
    spec = one_region([0.0], [1.0], [([[1.0]], [0.5])])  # unsafe: Y_0 <= 0.5
    assert validate(runner, spec, np.array([0.5])).margin == 0.0
    above = float(np.nextafter(np.float32(0.5), np.float32(1)))
    assert validate(runner, spec, np.array([above])) is None


def test_validate_width0_box_needs_explicit_rounding_opt_in():
    """A box fixed at 0.1 has no float32 point: rejected by default, accepted and marked with
    exact_inputs=False (x stays exactly 0.1; y is the runner's output for float32(0.1))."""
    runner = identity_runner(1)
    spec = one_region([0.1], [0.1], [([[1.0]], [1.0])])  # unsafe: Y_0 <= 1
    assert validate(runner, spec, np.array([0.1])) is None
    cex = validate(runner, spec, np.array([0.1]), exact_inputs=False)
    assert cex.input_rounded and cex.x[0] == 0.1 and spec.regions[0].contains(cex.x)
    assert cex.y[0] == np.float64(np.float32(0.1))


def test_validate_uses_runner_dtype():
    """A runner that declares float64 inputs gets the clipped value unchanged, not rounded."""

    class Float64Runner:
        dtype = np.float64

        def run(self, x):
            return np.asarray(x, dtype=np.float64) * 3.0

    spec = one_region([0.1], [0.1], [([[1.0]], [0.3 + 1e-16])])
    cex = validate(Float64Runner(), spec, np.array([0.5]))
    assert cex is not None and cex.x[0] == 0.1 and not cex.input_rounded


def test_validate_batch_picks_best_over_regions_and_polytopes():
    """Among candidates and regions, the most negative margin wins; one reference call."""
    runner = identity_runner(2)
    r0 = Region(np.array([0.0, 0.0]), np.array([1.0, 1.0]), (Polytope(np.array([[1.0, 0.0]]), np.array([0.2])),))
    r1 = Region(np.array([2.0, 2.0]), np.array([3.0, 3.0]),
                (Polytope(np.array([[0.0, 1.0]]), np.array([1.0])), Polytope(np.array([[1.0, 0.0]]), np.array([2.5]))))
    spec = Spec(2, 2, (r0, r1))
    cex = validate_batch(runner, spec, np.array([[0.1, 0.1], [2.0, 2.0]]))
    assert (cex.region, cex.polytope) == (1, 1) and cex.margin == -0.5
    assert runner.calls == 1
    hinted = validate_batch(runner, spec, np.array([[0.1, 0.1]]), regions=[0])
    assert (hinted.region, hinted.polytope) == (0, 0)


def test_validate_rejects_nonfinite_outputs_and_bad_runner_shape():
    """NaN outputs never confirm; a runner returning the wrong shape is an error."""

    class NanRunner:
        def run(self, x):
            return np.full((x.shape[0], 1), np.nan, dtype=np.float32)

    class BadRunner:
        def run(self, x):
            return np.zeros((x.shape[0], 3), dtype=np.float32)

    spec = one_region([0.0], [1.0], [([[1.0]], [10.0])])
    assert validate(NanRunner(), spec, np.array([0.5])) is None
    with pytest.raises(ValueError):
        validate(BadRunner(), spec, np.array([0.5]))
    with pytest.raises(ValueError):
        validate(NanRunner(), spec, np.array([0.5, 0.5]))


# --- Counterexample and formats ----------------------------------------------------------------

def _cex(rng, n_in=5, n_out=3) -> Counterexample:
    """A counterexample with awkward float values (tiny, huge, negative, non-decimal)."""
    x = np.concatenate([[0.1, -1e-30, 3.4e38, 1 / 3], rng.standard_normal(n_in)])
    y = np.concatenate([[-0.0, 2.5e-310], rng.standard_normal(n_out)])
    return Counterexample(x, y, 1, 2, -1e-7, "attack", True)


def test_counterexample_rejects_positive_margin_and_unknown_source():
    """The record itself enforces margin <= 0, finite values and a known source."""
    with pytest.raises(ValueError):
        Counterexample(np.zeros(1), np.zeros(1), 0, 0, 1e-12, "attack")
    with pytest.raises(ValueError):
        Counterexample(np.zeros(1), np.zeros(1), 0, 0, -1.0, "guess")
    with pytest.raises(ValueError):
        Counterexample(np.array([np.inf]), np.zeros(1), 0, 0, -1.0, "sat")
    cex = Counterexample([1, 2], [3], 0, 0, 0, "bab")
    assert cex.x.dtype == np.float64 and not cex.x.flags.writeable


def test_to_vnncomp_layout():
    """First line sat, one pair per line, X then Y, closing parens on the last line."""
    cex = Counterexample(np.array([0.1, -0.2]), np.array([3.0]), 0, 0, -1.0, "attack")
    assert to_vnncomp(cex) == "sat\n((X_0 0.1)\n (X_1 -0.2)\n (Y_0 3.0))\n"


def test_to_vnncomp_round_trips_values_exactly():
    """Parsing the printed block gives back bit-identical float64 values."""
    cex = _cex(np.random.default_rng(1))
    x, y = from_vnncomp(to_vnncomp(cex))
    assert np.array_equal(x, cex.x) and np.array_equal(y, cex.y)
    assert np.array_equal(np.signbit(y), np.signbit(cex.y))


def test_from_vnncomp_rejects_malformed_blocks():
    """Wrong first line, unknown names and gaps in numbering are errors."""
    with pytest.raises(ValueError):
        from_vnncomp("unsat\n")
    with pytest.raises(ValueError):
        from_vnncomp("sat\n((X_0 1.0)\n (Z_0 2.0))")
    with pytest.raises(ValueError):
        from_vnncomp("sat\n((X_0 1.0)\n (X_2 2.0)\n (Y_0 1.0))")


def test_json_round_trip_is_exact():
    """to_json -> json text -> from_json reproduces every field exactly."""
    cex = _cex(np.random.default_rng(2))
    back = from_json(json.loads(json.dumps(to_json(cex))))
    assert np.array_equal(back.x, cex.x) and np.array_equal(back.y, cex.y)
    assert (back.region, back.polytope, back.margin, back.source, back.input_rounded) == (1, 2, -1e-7, "attack", True)


def test_from_json_rejects_unknown_keys_and_formats():
    """A misspelt key or another format version is an error, never ignored."""
    data = to_json(_cex(np.random.default_rng(3)))
    with pytest.raises(ValueError):
        from_json({**data, "extra": 1})
    with pytest.raises(ValueError):
        from_json({**data, "version": 99})
