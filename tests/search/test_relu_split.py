"""ReLU-split BaB against exact MILP ground truth on small random nets; proofs pass the checker."""
from __future__ import annotations

import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from verifier.bounds import BoundEngine
from verifier.certify import certify
from verifier.config import BabConfig
from verifier.exact.milp import verify_milp
from verifier.search.input_split import input_split
from verifier.search.relu_split import ReluSplitOptions, relu_split
from verifier.spec.spec import Polytope, Region, Spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exact"))
from milp_nets import conv_net, mlp  # noqa: E402

NETS = {"6-12-12": (0, 6, (12, 12)), "8-10-10-10": (2, 8, (10, 10, 10)), "12-8-12-8": (3, 12, (8, 12, 8)),
        "cnn-4x4": (1, 16, None)}
N_OUT = 3
BUDGET = 20.0


def _net(name):
    seed, n_in, hidden = NETS[name]
    graph = conv_net(seed) if hidden is None else mlp(seed, n_in, hidden, N_OUT)
    gen = np.random.default_rng(seed)
    centre = gen.uniform(-0.5, 0.5, n_in)
    region = Region(centre - 0.4, centre + 0.4, ())
    c = np.zeros((1, N_OUT))
    c[0, seed % N_OUT], c[0, (seed + 1) % N_OUT] = 1.0, -1.0
    return graph, region, c


@lru_cache(maxsize=None)
def _bracket(name, steps=3):
    """(a, b): MILP proves min c.y > a and finds a point with c.y <= b (bisection from CROWN / samples)."""
    graph, region, c = _net(name)
    engine = BoundEngine(graph)
    C = torch.tensor(c, dtype=torch.float32).unsqueeze(0)
    res = engine.compute(np.array(region.lower[None]), np.array(region.upper[None]), C, want_upper=False)
    a = float(res.lower[0, 0]) - 1e-4
    x = np.random.default_rng(0).uniform(region.lower, region.upper, (2000, region.lower.size))
    y = graph.to(dtype=torch.float64).forward(torch.as_tensor(x).reshape((-1,) + graph.input_shape)).numpy()
    b = float((y.reshape(len(x), -1) @ c.T).min())
    for _ in range(steps):
        m = (a + b) / 2
        status = verify_milp(graph, region, Polytope(c, np.array([m])), timeout=20).status
        assert status in ("holds", "violated"), status
        a, b = (m, b) if status == "holds" else (a, m)
    return a, b


def _validator(graph, c, t):
    """A stand-in for the onnxruntime check: float64 re-evaluation inside the polytope."""
    g64 = graph.to(dtype=torch.float64)

    def validate(x):
        y = g64.forward(torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape((1,) + graph.input_shape)).numpy()
        y = y.reshape(-1)
        return x if bool(np.all(c @ y <= t)) else None

    return validate


def _cases():
    """(net, which side of the optimum): below -> holds, above -> violated."""
    return [(n, side) for n in NETS for side in ("holds", "violated")]


@pytest.mark.parametrize("name,truth", _cases())
def test_verdicts_match_milp(name, truth):
    """relu_split and input_split (every branching score) give MILP's verdict; relu_split proofs pass the checker."""
    graph, region, c = _net(name)
    a, b = _bracket(name)
    t = a - 3 * (b - a) if truth == "holds" else b + (b - a)
    bvec = np.array([t])
    validate = _validator(graph, c, bvec)
    engine = BoundEngine(graph)
    out = relu_split(engine, graph, region.lower, region.upper, c, bvec, validate,
                     time.monotonic() + BUDGET, BabConfig(batch=256))
    assert out.status == truth, out.stats
    if truth == "holds":
        spec = Spec(graph.n_inputs, N_OUT, (Region(region.lower, region.upper, (Polytope(c, bvec),)),))
        _, report = certify(graph, spec, "m", "s", [(0, 0, out.log.tree())])
        assert report.ok, report.reasons
        assert report.leaves == len(out.log.leaves)
    else:
        y = graph.to(dtype=torch.float64).forward(
            torch.as_tensor(out.counterexample).reshape((1,) + graph.input_shape)).numpy().reshape(-1)
        assert np.all(c @ y <= bvec)
    if NETS[name][2] is None:
        return  # 16 inputs: input splitting only probes box centres, it is no falsifier there
    for branching in ("both", "coeff", "gradient"):
        other = input_split(engine, graph, region.lower, region.upper, c, bvec, validate,
                            time.monotonic() + BUDGET, BabConfig(batch=256, input_branching=branching))
        assert other.status == truth, (branching, other.stats)


@pytest.mark.parametrize("mode", ["checker", "hybrid", "root"])
def test_bound_modes_branch_and_agree(mode):
    """A threshold the root bound cannot settle: every bounds mode branches and proves it.

    "checker" and "hybrid" proofs are accepted by the independent checker by construction.
    """
    name = "12-8-12-8"
    graph, region, c = _net(name)
    a, b = _bracket(name)
    bvec = np.array([a - (b - a)])
    out = relu_split(BoundEngine(graph), graph, region.lower, region.upper, c, bvec, _validator(graph, c, bvec),
                     time.monotonic() + BUDGET, BabConfig(batch=64), options=ReluSplitOptions(bounds=mode))
    assert out.status == "holds"
    assert out.stats["domains"] > 1 and out.log.splits
    tree = out.log.tree()
    assert tree["split"]["kind"] == "relu"
    if mode != "root":
        spec = Spec(graph.n_inputs, N_OUT, (Region(region.lower, region.upper, (Polytope(c, bvec),)),))
        _, report = certify(graph, spec, "m", "s", [(0, 0, tree)])
        assert report.ok, report.reasons


def test_two_row_polytope_matches_milp():
    """A band polytope (t - w <= c.y <= t): some row's positive bound proves each domain."""
    name = "6-12-12"
    graph, region, c = _net(name)
    a, b = _bracket(name)
    A = np.vstack([c, -c])
    for t in (a - (b - a), b + 2 * (b - a)):
        bvec = np.array([t, -(t - 0.5)])
        truth = verify_milp(graph, region, Polytope(A, bvec), timeout=20).status
        out = relu_split(BoundEngine(graph), graph, region.lower, region.upper, A, bvec, _validator(graph, A, bvec),
                         time.monotonic() + BUDGET, BabConfig(batch=128))
        assert out.status == truth


def test_deadline_and_domain_limit():
    """A past deadline gives timeout; a domain limit below what the proof needs gives unknown."""
    name = "12-8-12-8"
    graph, region, c = _net(name)
    a, b = _bracket(name)
    bvec = np.array([a - (b - a)])
    engine, validate = BoundEngine(graph), _validator(graph, c, bvec)
    past = relu_split(engine, graph, region.lower, region.upper, c, bvec, validate, time.monotonic() - 1,
                      BabConfig())
    assert past.status == "timeout"
    capped = relu_split(engine, graph, region.lower, region.upper, c, bvec, validate, time.monotonic() + BUDGET,
                        BabConfig(batch=1, max_domains=1))
    assert capped.status == "unknown" and capped.stats["note"] == "domain limit"
    tiny = relu_split(engine, graph, region.lower, region.upper, c, bvec, validate, time.monotonic() + BUDGET,
                      BabConfig(batch=2), options=ReluSplitOptions(max_memory_bytes=1))
    assert tiny.status == "unknown" and tiny.stats["note"] == "domain limit"
