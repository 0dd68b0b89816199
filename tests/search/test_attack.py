"""Tests for the PGD / random-search falsifier: every returned witness is onnxruntime-confirmed."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier.config import AttackConfig
from verifier.model.graph import Graph, Node
from verifier.search.attack import attack, cosine_alpha, region_margins, region_rows, spec_tensors, target_loss
from verifier.spec.spec import Polytope, Region, Spec
from verifier.shared_data import absent_reason, benchmarks_root

BENCH = benchmarks_root() / "vnncomp2021" / "test"


class OrtRunner:
    """Minimal reference runner: onnxruntime on an in-memory ONNX model."""

    def __init__(self, model: onnx.ModelProto):
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.calls = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs [B, n_outputs] for inputs [B, n_inputs]."""
        self.calls += 1
        return self.session.run(None, {"x": np.asarray(x, dtype=np.float32)})[0]


def mlp(layers: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Graph, OrtRunner]:
    """The same ReLU MLP as a canonical Graph and as an onnxruntime runner (Gemm/Relu)."""
    nodes, onnx_nodes, inits, prev = [], [], [], "x"
    for i, (w, b) in enumerate(layers):
        w32, b32 = w.astype(np.float32), b.astype(np.float32)
        nodes.append(Node(f"fc{i}", "linear", (prev,), (w.shape[0],),
                          {"weight": torch.from_numpy(w32), "bias": torch.from_numpy(b32)}))
        inits += [numpy_helper.from_array(w32, f"W{i}"), numpy_helper.from_array(b32, f"B{i}")]
        onnx_nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [f"fc{i}"], transB=1))
        prev = f"fc{i}"
        if i < len(layers) - 1:
            nodes.append(Node(f"relu{i}", "relu", (prev,), (w.shape[0],)))
            onnx_nodes.append(helper.make_node("Relu", [prev], [f"relu{i}"]))
            prev = f"relu{i}"
    n_in, n_out = layers[0][0].shape[1], layers[-1][0].shape[0]
    g = helper.make_graph(onnx_nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_in])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [None, n_out])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    return Graph("x", (n_in,), tuple(nodes), prev), OrtRunner(model)


def l1_ball_net(center: np.ndarray, radius: float):
    """y_0 = ||x - center||_1 - radius: negative only in a tiny L1 ball (needs PGD to find)."""
    n = center.shape[0]
    w1 = np.concatenate([np.eye(n), -np.eye(n)])
    b1 = np.concatenate([-center, center])
    return mlp([(w1, b1), (np.ones((1, 2 * n)), np.array([-radius]))])


def spec_of(regions: list[tuple[list, list, list]], n_out: int) -> Spec:
    """Spec from (lower, upper, [(A, b), ...]) triples."""
    built = tuple(Region(np.array(lo, float), np.array(hi, float),
                         tuple(Polytope(np.array(A, float), np.array(b, float)) for A, b in polys))
                  for lo, hi, polys in regions)
    return Spec(len(regions[0][0]), n_out, built)


CENTER = np.random.default_rng(0).uniform(0.2, 0.8, 10)
CONFIG = AttackConfig(restarts=8, steps=60, step_size=0.1, seed=0)


def test_pgd_finds_violation_in_small_ball():
    """The unsafe set is an L1 ball of radius 0.05 in [0,1]^10: PGD finds a confirmed witness."""
    graph, runner = l1_ball_net(CENTER, 0.05)
    spec = spec_of([([0.0] * 10, [1.0] * 10, [([[1.0]], [0.0])])], 1)
    cex = attack(graph, spec, runner, CONFIG)
    assert cex is not None and cex.source == "attack"
    assert spec.violation(cex.x, cex.y) == (0, 0)
    assert np.abs(cex.x - CENTER).sum() <= 0.05
    assert np.array_equal(cex.y, runner.run(cex.x[None])[0].astype(np.float64))


def test_random_search_alone_misses_the_small_ball():
    """With zero PGD steps only sampling runs, and it cannot hit the tiny ball: PGD is needed."""
    graph, runner = l1_ball_net(CENTER, 0.05)
    spec = spec_of([([0.0] * 10, [1.0] * 10, [([[1.0]], [0.0])])], 1)
    assert attack(graph, spec, runner, AttackConfig(restarts=8, steps=0, seed=0)) is None


def test_safe_property_returns_none():
    """||x - c||_1 - r >= -r everywhere, so Y_0 <= -2r is unreachable: no witness."""
    graph, runner = l1_ball_net(CENTER, 0.05)
    spec = spec_of([([0.0] * 10, [1.0] * 10, [([[1.0]], [-0.1])])], 1)
    assert attack(graph, spec, runner, AttackConfig(restarts=4, steps=20)) is None
    assert runner.calls == 0  # nothing ever looked violated in torch either


def test_zero_width_dims_stay_fixed():
    """Dims with lower == upper never move; the witness keeps them exactly."""
    graph, runner = l1_ball_net(CENTER, 0.05)
    lower, upper = np.zeros(10), np.ones(10)
    fixed = np.float64(np.float32(CENTER[:3]))
    lower[:3] = upper[:3] = fixed
    spec = spec_of([(lower.tolist(), upper.tolist(), [([[1.0]], [0.0])])], 1)
    cex = attack(graph, spec, runner, CONFIG)
    assert cex is not None and np.array_equal(cex.x[:3], fixed)


def test_width0_dims_off_the_float32_grid_need_the_rounding_opt_in():
    """Dims fixed at non-float32 values: no exact witness exists; exact_inputs=False finds one
    whose fixed X values are the box values themselves."""
    graph, runner = l1_ball_net(CENTER, 0.05)
    lower, upper = np.zeros(10), np.ones(10)
    lower[:3] = upper[:3] = CENTER[:3]
    assert np.all(np.float64(np.float32(CENTER[:3])) != CENTER[:3])
    spec = spec_of([(lower.tolist(), upper.tolist(), [([[1.0]], [0.0])])], 1)
    assert attack(graph, spec, runner, AttackConfig(restarts=2, steps=5)) is None
    cex = attack(graph, spec, runner, CONFIG, exact_inputs=False)
    assert cex is not None and cex.input_rounded and np.array_equal(cex.x[:3], CENTER[:3])
    assert spec.violation(cex.x, cex.y) == (0, 0)


def test_refuted_region_does_not_block_other_regions():
    """Region 0 looks violated in torch but the runner refutes it everywhere; region 1's
    smaller-margin witness must still be validated and returned."""
    graph, runner = mlp([(np.eye(1), np.zeros(1))])  # y = x

    class Disagreeing:
        def run(self, x):
            y = runner.run(x)
            return np.where(np.asarray(x)[:, :1] < 0, 10.0, y)

    spec = spec_of([([-1.0], [-0.5], [([[1.0]], [2.0])]), ([0.5], [1.0], [([[1.0]], [2.0])])], 1)
    cex = attack(graph, spec, Disagreeing(), AttackConfig(restarts=4, steps=3))
    assert cex is not None and cex.region == 1 and spec.violation(cex.x, cex.y) == (1, 0)


def test_regions_without_float32_points_are_skipped():
    """A width-0 region off the float32 grid cannot hold an exact witness: never sent to the runner."""
    graph, runner = mlp([(np.eye(1), np.zeros(1))])
    spec = spec_of([([0.1], [0.1], [([[1.0]], [2.0])])], 1)
    assert attack(graph, spec, runner, AttackConfig(restarts=4, steps=3)) is None
    assert runner.calls == 0


def test_disjunction_and_regions_report_the_violated_pair():
    """Only the second region's second polytope is reachable; the witness names it."""
    rng = np.random.default_rng(1)
    graph, runner = mlp([(rng.standard_normal((16, 4)), rng.standard_normal(16)),
                         (rng.standard_normal((3, 16)), rng.standard_normal(3))])
    box = ([-1.0] * 4, [1.0] * 4)
    y = runner.run(rng.uniform(-1, 1, (4000, 4)).astype(np.float32)).astype(np.float64)
    lo0 = float(y[:, 0].min())
    diff = y[:, 1] - y[:, 2]
    unreachable = ([[1.0, 0.0, 0.0]], [lo0 - 100.0])
    reachable = ([[0.0, 1.0, -1.0], [0.0, 0.0, 0.0]], [float(np.quantile(diff, 0.01)), 0.0])
    spec = spec_of([(*box, [unreachable]), (*box, [unreachable, reachable])], 3)
    cex = attack(graph, spec, runner, CONFIG)
    assert cex is not None and (cex.region, cex.polytope) == (1, 1)
    assert spec.regions[1].contains(cex.x) and spec.regions[1].unsafe[1].satisfied_by(cex.y)


def test_expired_deadline_returns_immediately_without_running():
    """A deadline already past: no search, no reference run, None."""
    graph, runner = l1_ball_net(CENTER, 0.05)
    spec = spec_of([([0.0] * 10, [1.0] * 10, [([[1.0]], [0.0])])], 1)
    assert attack(graph, spec, runner, CONFIG, deadline=time.monotonic() - 1.0) is None
    assert runner.calls == 0


def test_short_deadline_stops_a_long_search():
    """A million-step search on a safe property stops soon after a 0.2 s deadline."""
    graph, runner = l1_ball_net(CENTER, 0.05)
    spec = spec_of([([0.0] * 10, [1.0] * 10, [([[1.0]], [-0.1])])], 1)
    start = time.monotonic()
    assert attack(graph, spec, runner, AttackConfig(restarts=8, steps=10**6), deadline=start + 0.2) is None
    assert time.monotonic() - start < 5.0


def test_deterministic_for_a_seed():
    """Same seed, same witness."""
    graph, runner = l1_ball_net(CENTER, 0.05)
    spec = spec_of([([0.0] * 10, [1.0] * 10, [([[1.0]], [0.0])])], 1)
    a, b = attack(graph, spec, runner, CONFIG), attack(graph, spec, runner, CONFIG)
    assert np.array_equal(a.x, b.x)


def test_spec_graph_mismatch_is_an_error():
    """A spec over a different number of inputs is rejected."""
    graph, runner = l1_ball_net(CENTER, 0.05)
    with pytest.raises(ValueError):
        attack(graph, spec_of([([0.0], [1.0], [([[1.0]], [0.0])])], 1), runner, CONFIG)


def test_region_margins_match_numpy():
    """Packed padded margins equal max_i (A_i y - b_i) per polytope; padding never wins."""
    spec = spec_of([([0.0], [1.0], [([[1.0, 2.0]], [0.5])]),
                    ([0.0], [1.0], [([[1.0, 0.0], [0.0, -1.0]], [0.0, 1.0]), ([[-1.0, 0.0]], [2.0])])], 2)
    st = spec_tensors(spec, "cpu")
    y = torch.tensor([[1.0, -3.0], [0.5, 2.0]])
    m = region_margins(st, y, torch.tensor([0, 1]))
    assert m[0, 0].item() == pytest.approx(1.0 - 6.0 - 0.5)
    assert m[1, 0].item() == pytest.approx(max(0.5, -3.0)) and m[1, 1].item() == pytest.approx(-2.5)
    assert m[0, 1].item() > 1e29  # sentinel slot of a one-polytope region


def test_target_loss_focus_and_smooth():
    """Focused samples use their polytope; -1 takes the smaller; smooth sums unmet rows."""
    rows = torch.tensor([[[1.0, 2.0], [-1.0, 0.5]]]).repeat(4, 1, 1)  # K=2 polytopes, m=2 rows
    focus = torch.tensor([0, 1, -1, -1])
    hard = target_loss(rows, focus, torch.zeros(4, dtype=torch.bool))
    assert hard.tolist() == [2.0, 0.5, 0.5, 0.5]
    soft = target_loss(rows, focus, torch.ones(4, dtype=torch.bool))
    assert soft.tolist() == [3.0, 0.5, 0.5, 0.5]
    deep = target_loss(torch.tensor([[[-1.0, -2.0]]]), torch.tensor([0]), torch.tensor([True]))
    assert deep.tolist() == [-1.0]
    st = spec_tensors(spec_of([([0.0], [1.0], [([[1.0, 0.0]], [0.0])])], 2), "cpu")
    assert region_rows(st, torch.tensor([[2.0, 0.0]]), torch.tensor([0])).shape == (1, 1, 1)


def test_cosine_alpha_decays_to_floor():
    """Step size starts at step_size and decays monotonically to a small positive floor."""
    alphas = [cosine_alpha(0.1, t, 20) for t in range(20)]
    assert alphas[0] == pytest.approx(0.1) and all(a > b for a, b in zip(alphas, alphas[1:]))
    assert 0 < alphas[-1] < 0.01


def _real_apis():
    """The loader / reference runner / VNN-LIB parser, or a skip reason."""
    try:
        from verifier.model.onnx_loader import load_onnx
        from verifier.model.reference import OnnxRunner
        from verifier.spec.vnnlib import load_vnnlib
    except ImportError as err:
        pytest.skip(f"real ONNX loader / runner not available yet: {err}")
    return load_onnx, OnnxRunner, load_vnnlib


@pytest.mark.skipif(not BENCH.is_dir(), reason=absent_reason(BENCH))
def test_vnncomp_test_sat_instance():
    """test_sat.onnx + test_prop.vnnlib is violated: the attack finds a confirmed witness."""
    load_onnx, OnnxRunner, load_vnnlib = _real_apis()
    model, spec = load_onnx(BENCH / "onnx/test_sat.onnx"), load_vnnlib(BENCH / "vnnlib/test_prop.vnnlib")
    runner = OnnxRunner(BENCH / "onnx/test_sat.onnx")
    cex = attack(model.graph, spec, runner, AttackConfig())
    assert cex is not None and spec.violation(cex.x, cex.y) is not None


@pytest.mark.skipif(not BENCH.is_dir(), reason=absent_reason(BENCH))
def test_vnncomp_test_unsat_instance():
    """test_unsat.onnx + test_prop.vnnlib holds: the attack must not return a witness."""
    load_onnx, OnnxRunner, load_vnnlib = _real_apis()
    model, spec = load_onnx(BENCH / "onnx/test_unsat.onnx"), load_vnnlib(BENCH / "vnnlib/test_prop.vnnlib")
    assert attack(model.graph, spec, OnnxRunner(BENCH / "onnx/test_unsat.onnx"), AttackConfig()) is None
