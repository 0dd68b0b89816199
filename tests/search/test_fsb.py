"""Filtered smart branching (``ReluSplitOptions(branching="fsb")``): its one-pass child bounds
(``beta.quick_domains``) are sound by sampling, and a search that branches with it gives MILP's
verdict with a certificate the checker accepts."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from verifier.bounds import BoundEngine
from verifier.bounds.beta import quick_domains, split_nodes
from verifier.certify import to_certificate
from verifier.check import check
from verifier.config import BabConfig
from verifier.model.ops import evaluate
from verifier.search.relu_split import ReluSplitOptions, relu_split
from verifier.spec.spec import Polytope, Region, Spec
from tests.search.test_shared_root import N_IN, N_OUT, POLYTOPES, _validator, net  # noqa: F401


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quick_domain_bounds_hold_on_the_split_domains(net, seed):
    """lower <= C y at every sampled point of the box that satisfies the domain's random relu splits."""
    g, spec = net
    region = spec.regions[0]
    eng = BoundEngine(g, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    n_dom, C = 6, torch.tensor(rng.standard_normal((1, 4, N_OUT)))
    xs = rng.uniform(region.lower, region.upper, (20000, N_IN))
    acts = {}
    g64 = g.to(dtype=torch.float64)
    values = {g.input_name: torch.tensor(xs)}
    for node in g64.nodes:      # pre-activation values, to know which points satisfy a split
        values[node.name] = evaluate(node, [values[i] for i in node.inputs])
        if node.op == "relu":
            acts[node.name] = values[node.inputs[0]]
    splits = {}
    for name in split_nodes(eng):
        size = eng.nodes[name].size
        s = torch.zeros((n_dom, size), dtype=torch.int8)
        for d in range(n_dom):
            k = rng.integers(size)
            s[d, k] = rng.choice([-1, 1])
        splits[name] = s
    lo, hi = (torch.tensor(v).reshape(1, N_IN).expand(n_dom, N_IN) for v in (region.lower, region.upper))
    low, empty = quick_domains(eng, lo, hi, C, splits)
    y = values[g.output_name]
    checked = 0
    for d in range(n_dom):
        inside = torch.ones(len(xs), dtype=torch.bool)
        for name, s in splits.items():
            k = int(torch.nonzero(s[d]).flatten()[0])
            z = acts[name][:, k]
            inside &= (z <= 0) if s[d, k] < 0 else (z >= 0)
        if not bool(inside.any()):
            continue
        assert not bool(empty[d])
        checked += 1
        sampled = (y[inside] @ C[0].T).min(0).values
        assert bool((low[d] <= sampled + 1e-9).all()), (d, low[d], sampled)
    assert checked > 0


@pytest.mark.parametrize("pi", range(len(POLYTOPES)))
def test_fsb_search_gives_the_known_verdict_and_a_checked_certificate(net, pi):
    g, spec = net
    region = spec.regions[0]
    A, b, truth = POLYTOPES[pi]
    options = ReluSplitOptions(branching="fsb", fsb_candidates=3)
    out = relu_split(BoundEngine(g), g, region.lower, region.upper, A, b, _validator(g, region, A, b),
                     time.monotonic() + 30, BabConfig(batch=64), options=options)
    assert out.status == truth, out.stats
    if truth == "holds":
        cert = to_certificate("m", "s", [(0, 0, out.log.tree())])
        report = check(g, Spec(N_IN, N_OUT, (Region(region.lower, region.upper, (Polytope(A, b),)),)), cert)
        assert report.ok, report.reasons


def test_unknown_branching_is_refused():
    with pytest.raises(ValueError, match="unknown branching"):
        ReluSplitOptions(branching="best")
