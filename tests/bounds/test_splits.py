"""ReLU splits: clamped bounds still enclose every sample satisfying the split constraints."""
from __future__ import annotations

import pytest
import torch

from verifier.bounds import BoundEngine
from verifier.config import AlphaConfig


def _split_setup(helpers, nets):
    """A relu MLP, a box, and splits on unstable neurons of both hidden layers (batch of 3 domains)."""
    graph = nets.mlp([3, 10, 10, 2], "relu", seed=5)
    lo, hi = helpers.random_box(1, (3,), torch.Generator().manual_seed(6), width=2.0)
    lo, hi = lo.expand(3, 3).clone(), hi.expand(3, 3).clone()
    inter = BoundEngine(graph).compute(lo, hi).intermediate
    anchors = helpers.sample_box(lo, hi, 30, torch.Generator().manual_seed(8))[[3, 17, 25], [0, 1, 2]]
    anchor_vals = graph.forward(anchors, keep=True)
    splits = {}
    for relu, pre in (("act0", "fc0"), ("act1", "fc1")):
        unstable = ((inter[pre][0] < 0) & (inter[pre][1] > 0))[0].nonzero().flatten()[:3]
        s = torch.zeros(3, 10, dtype=torch.int8)
        for b in range(3):  # split as the anchor point of domain b lies, so every domain is non-empty
            chosen = unstable[b % max(1, len(unstable)):][:2]
            s[b, chosen] = torch.where(anchor_vals[pre][b, chosen] >= 0, 1, -1).to(torch.int8)
        splits[relu] = s
    return graph, lo, hi, splits


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
def test_split_bounds_enclose_feasible_points(helpers, nets, method):
    """Rejection-sample points obeying each domain's splits; they stay within the bounds."""
    graph, lo, hi, splits = _split_setup(helpers, nets)
    engine = BoundEngine(graph)
    res = engine.compute(lo, hi, method=method, splits=splits, alpha=AlphaConfig(iterations=5))
    x = helpers.sample_box(lo, hi, 6000, torch.Generator().manual_seed(7))
    vals = graph.forward(x.reshape(-1, 3), keep=True)
    ok = torch.ones(x.shape[:2], dtype=torch.bool)
    for relu, pre in (("act0", "fc0"), ("act1", "fc1")):
        z = vals[pre].reshape(x.shape[0], 3, 10)
        s = splits[relu].unsqueeze(0)
        ok &= ((s <= 0) | (z >= 0)).all(-1) & ((s >= 0) | (z <= 0)).all(-1)
    y = vals[graph.output_name].reshape(x.shape[0], 3, 2)
    assert all(int(ok[:, b].sum()) > 10 for b in range(3))
    for b in range(3):
        yb = y[ok[:, b], b]
        assert bool((yb >= res.lower[b] - 1e-5).all()) and bool((yb <= res.upper[b] + 1e-5).all())


def test_split_clamps_preactivation(helpers, nets):
    """Forced-active neurons get lo >= 0, forced-inactive hi <= 0; outputs tighten on the whole.

    (Per row CROWN is not monotone in its intermediate bounds, so only the total is compared.)
    """
    graph, lo, hi, splits = _split_setup(helpers, nets)
    engine = BoundEngine(graph)
    free = engine.compute(lo, hi)
    res = engine.compute(lo, hi, splits=splits)
    pre_lo, pre_hi = res.intermediate["fc0"]
    s = splits["act0"]
    assert bool((pre_lo[s > 0] >= 0).all()) and bool((pre_hi[s < 0] <= 0).all())
    assert float((res.upper - res.lower).sum()) < float((free.upper - free.lower).sum())
