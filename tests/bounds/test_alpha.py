"""alpha-CROWN: never worse than CROWN, alphas in [0, 1], reusable alphas, early stop."""
from __future__ import annotations

import time

import torch

from verifier.bounds import SPEC, BoundEngine
from verifier.config import AlphaConfig


def _setup(helpers, nets, seed=0):
    """A relu MLP with many unstable neurons, a box and a spec matrix."""
    graph = nets.mlp([5, 24, 24, 24, 4], "relu", seed=seed)
    gen = torch.Generator().manual_seed(seed)
    lo, hi = helpers.random_box(2, (5,), gen, width=1.5)
    C = torch.randn(2, 3, 4, generator=gen)
    return graph, lo, hi, C


def test_alpha_improves_and_is_sound(helpers, nets):
    """Optimised bounds are >= CROWN's per row, strictly better somewhere, and sound."""
    graph, lo, hi, C = _setup(helpers, nets)
    engine = BoundEngine(graph)
    crown = engine.compute(lo, hi, C)
    alpha = engine.compute(lo, hi, C, method="alpha", alpha=AlphaConfig(iterations=20, early_stop=False))
    assert bool((alpha.lower >= crown.lower).all()) and bool((alpha.upper <= crown.upper).all())
    assert float((alpha.lower - crown.lower).sum()) > 1e-3
    helpers.assert_sound(alpha, graph, lo, hi, C=C, n=2000)
    for aset in alpha.alphas.values():
        for t in aset.slopes.values():
            assert float(t.min()) >= 0 and float(t.max()) <= 1


def test_alphas_have_documented_shapes(helpers, nets):
    """Per start: [B, rows, *node.shape]; intermediate starts carry their refined rows."""
    graph, lo, hi, C = _setup(helpers, nets)
    res = BoundEngine(graph).compute(lo, hi, C, method="alpha", alpha=AlphaConfig(iterations=2))
    spec = res.alphas[SPEC]
    assert spec.rows is None and spec.slopes["act2"].shape == (2, 6, 24)
    inner = res.alphas["fc2"]
    assert inner.slopes["act0"].shape == (2, 2 * inner.rows.numel(), 24)


def test_given_alphas_reproduce_in_float64(helpers, nets):
    """Evaluating the returned alphas once in float64 (the certificate check) is sound and close."""
    graph, lo, hi, C = _setup(helpers, nets, seed=1)
    res = BoundEngine(graph).compute(lo, hi, C, method="alpha", alpha=AlphaConfig(iterations=15, early_stop=False))
    engine64 = BoundEngine(graph, dtype=torch.float64)
    check = engine64.compute(lo.double(), hi.double(), C.double(), method="alpha",
                             alpha=AlphaConfig(iterations=0), alphas=res.alphas)
    crown64 = engine64.compute(lo.double(), hi.double(), C.double())
    assert bool((check.lower >= crown64.lower - 1e-9).all())
    # the sum over rows is what the returned alphas were chosen for
    assert float(check.lower.sum()) >= float(res.lower.sum()) - 0.05 * float(res.lower.abs().sum()) - 1e-3
    helpers.assert_sound(check, graph.to(dtype=torch.float64), lo.double(), hi.double(), C=C.double(), rtol=1e-12)


def test_early_stop_when_verified(helpers, nets):
    """Once every lower bound is positive the optimisation stops; result still >= CROWN."""
    graph = nets.mlp([3, 8, 2], "relu", seed=3)
    x = torch.zeros(1, 3)
    y = graph.forward(x)
    C = torch.tensor([[[1.0, -1.0]]]) * torch.sign(y[0, 0] - y[0, 1])
    engine = BoundEngine(graph)
    res = engine.compute(x - 1e-3, x + 1e-3, C, method="alpha", alpha=AlphaConfig(iterations=50, early_stop=True))
    assert float(res.lower.min()) > 0


def test_deadline_ends_the_iterations(helpers, nets, monkeypatch):
    """A deadline already passed stops after the first evaluated iteration; the bound stays sound."""
    graph, lo, hi, C = _setup(helpers, nets)
    engine = BoundEngine(graph)
    calls = []
    original = engine.propagate
    monkeypatch.setattr(engine, "propagate", lambda *a, **k: calls.append(k.get("alphas")) or original(*a, **k))
    cfg = AlphaConfig(iterations=30, early_stop=False)
    res = engine.compute(lo, hi, C, method="alpha", alpha=cfg, deadline=time.monotonic())
    assert sum(a is not None for a in calls) == 1
    helpers.assert_sound(res, graph, lo, hi, C=C, n=500)
    calls.clear()
    engine.compute(lo, hi, C, method="alpha", alpha=cfg, deadline=time.monotonic() + 60)
    assert sum(a is not None for a in calls) == 30


def test_alpha_on_other_activations(helpers, nets):
    """Leaky relu networks get alphas; sigmoid-only networks fall back to CROWN (no alphas)."""
    for act, has in (("leaky_relu", True), ("sigmoid", False)):
        graph = nets.mlp([4, 12, 12, 3], act)
        lo, hi = helpers.random_box(1, (4,), torch.Generator().manual_seed(4), width=1.0)
        engine = BoundEngine(graph)
        res = engine.compute(lo, hi, method="alpha", alpha=AlphaConfig(iterations=5))
        crown = engine.compute(lo, hi)
        assert bool((res.lower >= crown.lower - 1e-6).all())
        assert bool(res.alphas[SPEC].slopes) == has
