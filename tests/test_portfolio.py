"""End-to-end verdicts of ``verify`` against exact MILP ground truth, and its routes and edge cases."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier.config import VerifyConfig
from verifier.exact.milp import verify_milp
from verifier.model.onnx_loader import load_onnx
from verifier.portfolio import verify
from verifier.result import Verdict
from verifier.spec.vnnlib import load_vnnlib


def write_mlp(path: Path, seed: int, sizes: list[int]) -> None:
    """A fixed-seed ReLU MLP as an ONNX file (Gemm + Relu)."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array((rng.standard_normal(b) * 0.3).astype(np.float32), f"b{i}")]
        out = f"h{i}" if i < len(sizes) - 2 else "y"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out], transB=1))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        prev = out
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, sizes[-1]])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def write_spec(path: Path, lower, upper, rows: list[tuple[dict[int, float], float]], n_out: int) -> None:
    """VNN-LIB: box on X, one conjunction of rows sum(c_j * Y_j) <= d."""
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lower))] + [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        lines += [f"(assert (>= X_{i} {float(lo)!r}))", f"(assert (<= X_{i} {float(hi)!r}))"]
    for coeffs, d in rows:
        terms = " ".join(f"(* {c!r} Y_{j})" for j, c in coeffs.items())
        lines.append(f"(assert (<= (+ {terms}) {d!r}))")
    path.write_text("\n".join(lines) + "\n")


CASES = [(seed, sizes) for seed, sizes in [(1, [4, 12, 12, 3]), (2, [6, 16, 8, 2]), (3, [3, 10, 10, 10, 2]),
                                           (4, [20, 16, 16, 3]), (5, [24, 12, 4])]]


@pytest.mark.parametrize("seed,sizes", CASES)
@pytest.mark.parametrize("delta", [-0.05, 0.05])
def test_verdict_matches_milp_ground_truth(tmp_path, seed, sizes, delta):
    """Threshold each property at MILP's exact optimum +- delta: holds / violated must follow."""
    onnx_path, spec_path = tmp_path / "net.onnx", tmp_path / "prop.vnnlib"
    write_mlp(onnx_path, seed, sizes)
    rng = np.random.default_rng(seed + 100)
    centre = rng.uniform(-1, 1, sizes[0])
    lower, upper = centre - 0.3, centre + 0.3
    # unsafe: Y_0 - Y_1 <= d; find the exact minimum of Y_0 - Y_1 first
    write_spec(spec_path, lower, upper, [({0: 1.0, 1: -1.0}, 1e9)], sizes[-1])
    graph = load_onnx(onnx_path).graph
    region = load_vnnlib(spec_path).regions[0]
    optimum = exact_minimum(graph, region)
    # unsafe iff Y_0 - Y_1 <= optimum + delta: reachable exactly when delta >= 0
    write_spec(spec_path, lower, upper, [({0: 1.0, 1: -1.0}, float(optimum) + delta)], sizes[-1])
    result = verify(str(onnx_path), str(spec_path), VerifyConfig(timeout=60))
    expected = Verdict.VIOLATED if delta > 0 else Verdict.HOLDS
    assert result.verdict is expected, (result.reason, result.log)
    if expected is Verdict.HOLDS:
        if result.method.startswith("milp"):  # exact, but the solver's word: labelled unchecked
            assert result.certificate_checked is False
        else:
            assert result.certificate_checked is True and result.certificate is not None
    else:
        x, y = result.counterexample.x, result.counterexample.y
        assert region.contains(x) and y[0] - y[1] <= optimum + delta + 1e-12


def exact_minimum(graph, region) -> float:
    """min over the box of the polytope's single row, to within 5e-3, by bisection on MILP verdicts.

    The upper end starts at the best sampled value (reachable); MILP decides each midpoint exactly.
    """
    import torch

    from verifier.spec.spec import Polytope

    row = region.unsafe[0].A
    xs = np.random.default_rng(0).uniform(region.lower, region.upper, (4000, region.lower.size))
    ys = graph.to(dtype=torch.float64).forward(torch.tensor(xs)).numpy()
    hi = float((ys @ row.T).min())
    lo = hi - 10.0
    assert verify_milp(graph, region, Polytope(row, np.array([lo])), timeout=60).status == "holds"
    while hi - lo > 5e-3:
        mid = (lo + hi) / 2
        res = verify_milp(graph, region, Polytope(row, np.array([mid])), timeout=60)
        assert res.status in ("holds", "violated")
        lo, hi = (mid, hi) if res.status == "holds" else (lo, mid)
    return (lo + hi) / 2


def test_spec_with_no_regions_holds_vacuously(tmp_path):
    onnx_path = tmp_path / "net.onnx"
    write_mlp(onnx_path, 0, [2, 4, 2])
    spec = tmp_path / "p.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                    "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n(assert false)\n")
    assert verify(str(onnx_path), str(spec)).verdict is Verdict.HOLDS


def test_mismatched_outputs_is_error(tmp_path):
    onnx_path = tmp_path / "net.onnx"
    write_mlp(onnx_path, 0, [2, 4, 3])
    spec = tmp_path / "p.vnnlib"
    write_spec(spec, [0, 0], [1, 1], [({0: 1.0}, 0.0)], 2)
    res = verify(str(onnx_path), str(spec))
    assert res.verdict is Verdict.ERROR and "outputs" in res.reason


def test_low_dimensional_input_routes_to_input_splitting(tmp_path):
    onnx_path, spec = tmp_path / "net.onnx", tmp_path / "p.vnnlib"
    write_mlp(onnx_path, 3, [3, 8, 2])
    write_spec(spec, [0, 0, 0], [1, 1, 1], [({0: 1.0}, -1e6)], 2)
    res = verify(str(onnx_path), str(spec), VerifyConfig(timeout=30))
    assert res.route == "input-split" and res.verdict is Verdict.HOLDS


def test_zero_budget_ends_in_timeout_or_unknown(tmp_path):
    onnx_path, spec = tmp_path / "net.onnx", tmp_path / "p.vnnlib"
    write_mlp(onnx_path, 4, [20, 16, 16, 3])
    write_spec(spec, [-1] * 20, [1] * 20, [({0: 1.0, 1: -1.0}, -0.5)], 3)
    res = verify(str(onnx_path), str(spec), VerifyConfig(timeout=0.0))
    assert res.verdict in (Verdict.TIMEOUT, Verdict.UNKNOWN, Verdict.VIOLATED)
    if res.verdict is Verdict.VIOLATED:
        assert res.counterexample is not None


def write_bnn(path: Path, seed: int) -> None:
    """Sign -> MatMul(+-1) -> Add -> batch-norm (Mul, Add) -> Sign -> MatMul: a binarized net on 8 inputs."""
    rng = np.random.default_rng(seed)
    inits = {"w1": (rng.integers(0, 2, (8, 6)) * 2 - 1).astype(np.float32), "b1": rng.integers(-2, 3, 6).astype(np.float32),
             "g": rng.uniform(0.5, 1.5, 6).astype(np.float32), "beta": rng.normal(size=6).astype(np.float32),
             "w2": rng.normal(size=(6, 2)).astype(np.float32)}
    nodes = [helper.make_node("Sign", ["x"], ["s0"]), helper.make_node("MatMul", ["s0", "w1"], ["m1"]),
             helper.make_node("Add", ["m1", "b1"], ["a1"]), helper.make_node("Mul", ["a1", "g"], ["n1"]),
             helper.make_node("Add", ["n1", "beta"], ["n2"]), helper.make_node("Sign", ["n2"], ["s1"]),
             helper.make_node("MatMul", ["s1", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "bnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("delta", [-0.5, 0.5])
def test_binarized_network_goes_to_sat_and_matches_enumeration(tmp_path, delta):
    """Every reachable sign pattern comes from inputs in {-1, 0, 1}: enumerate them on onnxruntime."""
    import itertools

    onnx_path, spec = tmp_path / "bnn.onnx", tmp_path / "p.vnnlib"
    write_bnn(onnx_path, 11)
    points = np.array(list(itertools.product([-1.0, 0.0, 1.0], repeat=8)))
    from verifier.model.reference import OnnxRunner

    ys = OnnxRunner(str(onnx_path)).run(points)
    d_min = float((ys[:, 0] - ys[:, 1]).min())
    write_spec(spec, [-1.0] * 8, [1.0] * 8, [({0: 1.0, 1: -1.0}, d_min + delta)], 2)
    res = verify(str(onnx_path), str(spec), VerifyConfig(timeout=60))
    assert res.route == "sat"
    assert res.verdict is (Verdict.VIOLATED if delta > 0 else Verdict.HOLDS), res.reason


def test_relu_networks_need_neither_sat_nor_milp_packages():
    """Verifying a relu network imports no SAT solver and no scipy (lighter start-up; GPU images lack them)."""
    code = ("import sys\n"
            "from verifier.model.onnx_loader import load_onnx\n"
            "from verifier.spec.vnnlib import load_vnnlib\n"
            "from verifier.portfolio import verify\n"
            "from verifier.config import VerifyConfig\n"
            "r = verify(load_onnx('examples/mlp.onnx'), load_vnnlib('examples/robust.vnnlib'), VerifyConfig(timeout=30))\n"
            "print(r.verdict.value, sorted({m.split('.')[0] for m in sys.modules} & {'pysat', 'scipy', 'highspy'}))\n")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["holds", "[]"]


def test_budget_ending_inside_bound_propagation_is_a_timeout(monkeypatch):
    """When the deadline passes inside one CROWN pass, verify answers timeout (not error) at once."""
    import time

    from verifier.bounds import BoundEngine

    original = BoundEngine.propagate

    def slow(self, *args, **kwargs):
        time.sleep(max(0.0, self.deadline - time.monotonic()) + 0.01)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BoundEngine, "propagate", slow)
    root = Path(__file__).resolve().parents[1]
    res = verify(str(root / "examples" / "mlp.onnx"), str(root / "examples" / "robust.vnnlib"),
                 VerifyConfig(timeout=1.0))
    assert res.verdict is Verdict.TIMEOUT, (res.verdict, res.reason)
    assert any("bound propagation stopped at the deadline" in line for line in res.log)


def test_worker_processes_only_for_single_threaded_cpu_runs_outside_daemons(monkeypatch):
    """Two processes on a 2-core CPU run with one torch thread; one on GPU, with more threads,
    or inside a daemonic process (a pool worker may not start children)."""
    import multiprocessing
    import os
    import types

    import torch

    from verifier.portfolio import _workers, cpu_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    run = types.SimpleNamespace(device=torch.device("cpu"), config=VerifyConfig(workers=2))
    with cpu_threads(1):
        assert _workers(run) == 2
        assert _workers(types.SimpleNamespace(device=torch.device("cuda"), config=run.config)) == 1
        monkeypatch.setattr(multiprocessing.current_process(), "_config", {"daemon": True})
        assert _workers(run) == 1
    with cpu_threads(2):
        monkeypatch.undo()
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
        assert _workers(run) == 1


def test_branch_and_bound_takes_the_worst_bounded_goal_first(tmp_path, monkeypatch):
    """ReLU splitting starts with the open goal whose bound is lowest (the likeliest to be violated)."""
    import verifier.search.relu_split as relu_split_module
    from verifier.search.input_split import SplitOutcome

    onnx_path, spec_path = tmp_path / "net.onnx", tmp_path / "prop.vnnlib"
    write_mlp(onnx_path, 4, [20, 16, 16, 3])
    centre = np.random.default_rng(104).uniform(-1, 1, 20)
    lower, upper = centre - 0.3, centre + 0.3
    graph = load_onnx(onnx_path).graph
    minima = []
    for j in (1, 2):     # the exact minimum of Y_0 - Y_j over the box
        write_spec(spec_path, lower, upper, [({0: 1.0, j: -1.0}, 1e9)], 3)
        minima.append(exact_minimum(graph, load_vnnlib(spec_path).regions[0]))
    lines = [f"(declare-const X_{i} Real)" for i in range(20)] + [f"(declare-const Y_{j} Real)" for j in range(3)]
    lines += [f"(assert (>= X_{i} {float(lo)!r}))\n(assert (<= X_{i} {float(hi)!r}))" for i, (lo, hi) in enumerate(zip(lower, upper))]
    # two unsafe polytopes just below the exact minima: both hold, by a margin bounds alone do not show
    d1, d2 = minima[0] - 0.01, minima[1] - 0.01
    # the Y_0 - Y_1 goal has the worse alpha-CROWN bound (-0.71 against -0.58) and comes second
    lines.append(f"(assert (or (and (<= (- Y_0 Y_2) {d2!r})) (and (<= (- Y_0 Y_1) {d1!r}))))")
    spec_path.write_text("\n".join(lines) + "\n")
    seen = []

    def record(engine, graph, lower, upper, A, b, *args, **kwargs):
        seen.append((A.tolist(), b.tolist()))
        return SplitOutcome("timeout")

    monkeypatch.setattr(relu_split_module, "relu_split", record)
    result = verify(str(onnx_path), str(spec_path), VerifyConfig(timeout=30, method="bab"))
    open_bounds = {b["polytope"]: b["lower"] for b in result.bounds}
    assert len(seen) == 1 and all(v <= 0 for v in open_bounds.values()), (result.bounds, result.log)
    assert open_bounds[1] < open_bounds[0]
    worst = min(open_bounds, key=open_bounds.get)
    spec = load_vnnlib(spec_path)
    assert seen[0] == (spec.regions[0].unsafe[worst].A.tolist(), spec.regions[0].unsafe[worst].b.tolist())
