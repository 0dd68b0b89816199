"""Exact MILP verification: verdicts against an independent pattern-enumeration oracle."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from milp_nets import conv_net, dag_net, mlp, tiny_conv
from milp_oracle import brute_force_min
from verifier.exact.milp import (GUROBI_SIZE_LIMIT, MilpProblem, MilpUnsupported, choose_backend,
                                 gurobi_size_limited, verify_milp)
from verifier.model.graph import Graph, Node
from verifier.spec.spec import Polytope, Region
from verifier.shared_data import absent_reason, benchmarks_root



def _margins(graph: Graph, x: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """max_i (A_i f(x) - b_i) per row of a batch of flat inputs (float64 forward)."""
    xt = torch.as_tensor(x, dtype=torch.float64).reshape((-1,) + tuple(graph.input_shape))
    y = graph.to(dtype=torch.float64).forward(xt).reshape(xt.shape[0], -1).numpy()
    return (y @ A.T - b).max(axis=1)


def _instances(graph: Graph, seed: int, count: int):
    """Random boxes and polytopes (1-2 rows, thresholds at sampled output quantiles)."""
    rng = np.random.default_rng(seed)
    n, m = graph.n_inputs, graph.n_outputs
    for _ in range(count):
        centre = rng.uniform(-1, 1, n)
        radius = rng.uniform(0.1, 0.6, n)
        lo, hi = centre - radius, centre + radius
        A = rng.normal(size=(int(rng.integers(1, 3)), m))
        pts = lo + rng.random((300, n)) * (hi - lo)
        xt = torch.as_tensor(pts).reshape((-1,) + tuple(graph.input_shape))
        y = graph.to(dtype=torch.float64).forward(xt).reshape(300, -1).numpy() @ A.T
        yield lo, hi, A, np.quantile(y, rng.uniform(0.0, 0.5), axis=0)


def _check_against_oracle(graph: Graph, seed: int, count: int, **kw) -> set[str]:
    """Assert MILP verdicts equal the oracle's; return the verdicts seen.

    Shifting every threshold by s shifts the exact min margin by -s, so each instance is asked
    twice, with the min margin moved to +delta (holds) and to -delta (violated, barely).
    """
    seen = set()
    for lo, hi, A, b in _instances(graph, seed, count):
        truth = brute_force_min(graph, lo, hi, A, b)
        for delta in (0.01, -0.01):
            b2 = b + truth - delta  # exact min margin is now delta
            # no probing: the violation must come out of the MILP search itself
            res = verify_milp(graph, Region(lo, hi, ()), Polytope(A, b2), timeout=30, probe_points=0, **kw)
            expected = "holds" if delta > 0 else "violated"
            assert res.status == expected, (res, delta)
            if expected == "violated":
                assert np.all(res.x >= lo) and np.all(res.x <= hi)
                assert _margins(graph, res.x, A, b2)[0] <= 0
            else:
                assert 0 < res.bound <= delta + 1e-6
            seen.add(res.status)
    return seen


@pytest.mark.parametrize("act, backend", [("relu", "highs"), ("leaky_relu", "highs"), ("relu", "auto")])
def test_mlp_verdicts_match_enumeration(act, backend):
    seen = set()
    for seed, (n_in, hidden, n_out) in enumerate([(2, (4, 4), 2), (3, (5, 4), 3), (4, (5, 3), 2)]):
        seen |= _check_against_oracle(mlp(seed, n_in, hidden, n_out, act=act), seed, 2, backend=backend)
    assert seen == {"holds", "violated"}


@pytest.mark.parametrize("pool", [False, True])
def test_conv_and_maxpool_verdicts_match_enumeration(pool):
    seen = _check_against_oracle(tiny_conv(7, pool=pool), 11, 1, backend="highs")
    assert seen == {"holds", "violated"}


def test_gather_concat_add_affine_match_enumeration():
    seen = _check_against_oracle(dag_net(3), 5, 3, backend="highs")
    assert seen == {"holds", "violated"}


def test_without_lp_tightening_and_with_caller_bounds():
    g = mlp(4, 3, (5, 5), 2)
    loose = {n.name: (torch.full((1,) + n.shape, -50.0), torch.full((1,) + n.shape, 50.0)) for n in g.nodes}
    seen = _check_against_oracle(g, 4, 3, bounds=loose, tighten=False, backend="highs")
    assert seen == {"holds", "violated"}


def test_larger_conv_and_pool_nets_agree_with_sampling():
    for pool in (False, True):
        g = conv_net(2, pool=pool)
        rng = np.random.default_rng(1)
        lo, hi = -np.ones(16) * 0.5, np.ones(16) * 0.5
        pts = lo + rng.random((2000, 16)) * (hi - lo)
        A = np.array([[1.0, -1.0, 0.0]])
        m = _margins(g, pts, A, np.zeros(1))
        for b, expect_violated in ((np.array([m.min() + 0.01]), True), (np.array([m.min() - 1.0]), None)):
            res = verify_milp(g, Region(lo, hi, ()), Polytope(A, b), timeout=30, backend="highs")
            assert res.status in ("holds", "violated")
            if expect_violated or res.status == "violated":
                assert res.status == "violated" and _margins(g, res.x, A, b)[0] <= 0
            else:
                assert np.all(_margins(g, pts, A, b) > 0)


def test_unsupported_ops_are_listed():
    nodes = (Node("fc", "linear", ("x",), (2,), {"weight": torch.eye(2), "bias": None}),
             Node("s", "sigmoid", ("fc",), (2,)), Node("t", "sign", ("s",), (2,)))
    g = Graph("x", (2,), nodes, "t")
    with pytest.raises(MilpUnsupported, match="sigmoid, sign"):
        verify_milp(g, Region(np.zeros(2), np.ones(2), ()), Polytope(np.eye(2), np.zeros(2)))


def test_tie_is_never_holds():
    # y = x on [0, 1]: the unsafe set y <= 0 is touched exactly at x = 0 (min margin 0)
    g = Graph("x", (1,), (Node("y", "relu", ("x",), (1,)),), "y")
    res = verify_milp(g, Region(np.zeros(1), np.ones(1), ()), Polytope(np.eye(1), np.zeros(1)))
    assert res.status != "holds"
    if res.status == "violated":
        assert res.x[0] == 0.0


def test_timeout_gives_unknown_not_holds():
    g = mlp(5, 5, (24, 24, 24), 3)
    A = np.array([[1.0, -1.0, 0.0]])
    res = verify_milp(g, Region(-np.ones(5), np.ones(5), ()), Polytope(A, np.array([-2.9])), timeout=1.0,
                      backend="highs", tighten=False)
    assert res.status == "unknown" and res.stats["time"] < 10


def test_empty_polytope_is_violated_anywhere():
    g = mlp(0, 2, (3,), 2)
    res = verify_milp(g, Region(-np.ones(2), np.ones(2), ()), Polytope(np.zeros((0, 2)), np.zeros(0)))
    assert res.status == "violated" and np.all(np.abs(res.x) <= 1)


def _fake_problem(n_cols: int) -> MilpProblem:
    """A placeholder problem of a given width, only for backend selection."""
    import scipy.sparse as sp

    z = np.zeros(n_cols)
    return MilpProblem(sp.csr_matrix((1, n_cols)), z[:1], z[:1], z, z, z.astype(bool), 0, 1, {})


def test_backend_choice_honours_size_limited_licence():
    name, _ = choose_backend(_fake_problem(10), "highs")
    assert name == "highs"
    with pytest.raises(ValueError):
        choose_backend(_fake_problem(10), "cplex")
    limited = gurobi_size_limited()
    big, why = choose_backend(_fake_problem(GUROBI_SIZE_LIMIT + 5), "auto")
    if limited is None:
        assert big == "highs" and "gurobipy" in why
    elif limited:
        assert big == "highs" and "size-limited" in why
    else:
        assert big == "gurobi"


def test_gurobi_matches_enumeration():
    pytest.importorskip("gurobipy", reason="gurobipy not installed (the [gurobi] extra)")
    if gurobi_size_limited() is None:
        pytest.skip("gurobipy installed but not licensed")
    seen = _check_against_oracle(mlp(9, 3, (5, 5), 2), 9, 3, backend="gurobi")
    assert seen == {"holds", "violated"}


def test_unsound_caller_bounds_are_refused():
    g = mlp(1, 2, (3,), 2)
    wrong = {"fc0": (torch.full((3,), 5.0), torch.full((3,), 6.0))}
    with pytest.raises(ValueError, match="unsound bounds"):
        verify_milp(g, Region(-np.ones(2), np.ones(2), ()), Polytope(np.eye(2), np.full(2, -100.0)), bounds=wrong)


@pytest.mark.parametrize("shape, attrs", [
    ((2, 5, 5), {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "ceil_mode": False}),
    ((1, 5, 6), {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0), "dilation": (1, 1), "ceil_mode": True}),
    ((1, 6, 6), {"kernel": (2, 3), "stride": (1, 2), "padding": (0, 1), "dilation": (2, 1), "ceil_mode": False}),
    ((2, 7), {"kernel": (3,), "stride": (2,), "padding": (1,), "dilation": (1,), "ceil_mode": True}),
])
def test_pool_windows_reproduce_torch_maxpool(shape, attrs):
    from verifier.exact.milp import _pool_windows
    from verifier.model.ops import evaluate

    probe = Node("p", "maxpool", ("x",), (), attrs=attrs)
    x = torch.randn((1,) + shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = evaluate(probe, [x]).reshape(-1).numpy()
    node = Node("p", "maxpool", ("x",), tuple(evaluate(probe, [x]).shape[1:]), attrs=attrs)
    windows = _pool_windows(node, shape)
    flat = x.reshape(-1).numpy()
    got = np.array([flat[w[w >= 0]].max() for w in windows])
    np.testing.assert_array_equal(got, ref)


BENCH = benchmarks_root() / "vnncomp2021" / "test"


@pytest.mark.skipif(not (BENCH / "truth.csv").exists(), reason=absent_reason(BENCH / "truth.csv"))
def test_vnncomp_test_benchmark_verdicts():
    from verifier.model.onnx_loader import load_onnx
    from verifier.spec.vnnlib import load_vnnlib

    for row in csv.DictReader(open(BENCH / "truth.csv")):
        graph = load_onnx(str(BENCH / row["onnx"])).graph
        spec = load_vnnlib(str(BENCH / row["vnnlib"]))
        statuses = []
        for region in spec.regions:
            for poly in region.unsafe:
                res = verify_milp(graph, region, poly, timeout=20)
                assert res.status in ("holds", "violated"), (row, res.reason)
                if res.status == "violated":
                    assert region.contains(res.x) and _margins(graph, res.x, poly.A, poly.b)[0] <= 0
                statuses.append(res.status)
        assert ("sat" if "violated" in statuses else "unsat") == row["truth"], row
