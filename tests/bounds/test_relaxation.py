"""Relaxation lines of elementwise ops hold on dense grids of [lo, hi]."""
from __future__ import annotations

import pytest
import torch

from verifier.bounds.registry import OPS
from verifier.model.graph import Node
from verifier.model.ops import FORWARD

OPS_UNDER_TEST = [("relu", {}), ("leaky_relu", {"alpha": 0.1}), ("leaky_relu", {"alpha": -0.3}),
                  ("leaky_relu", {"alpha": 1.7}), ("sigmoid", {}), ("tanh", {}), ("sign", {})]


def _intervals(dtype):
    """Intervals covering the regimes: around 0, one-sided, far out, tiny, degenerate, ends at 0."""
    gen = torch.Generator().manual_seed(1)
    c = torch.cat([torch.randn(200, generator=gen) * s for s in (0.1, 1.0, 4.0, 20.0)]).double()
    w = torch.cat([torch.rand(200, generator=gen) * s for s in (0.01, 1.0, 6.0, 30.0)]).double()
    lo, hi = c - w / 2, c + w / 2
    special = torch.tensor([[0, 0], [0, 1], [-1, 0], [-2, 2], [-1e-7, 1e-7], [3, 3], [-3, -3], [-8, 0.5],
                            [-0.5, 8], [-30, 30], [1e-8, 2e-8], [-50, -40], [40, 50], [0, 1e-6]], dtype=torch.float64)
    lo, hi = torch.cat([lo, special[:, 0]]), torch.cat([hi, special[:, 1]])
    return lo.to(dtype), hi.to(dtype)


def _grid(lo, hi, n=801):
    """n points per interval including both ends, plus 0 where it lies inside: [N, n + 1]."""
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    g = lo.double().unsqueeze(1) + (hi - lo).double().unsqueeze(1) * t
    g[:, -1] = hi.double()
    zero = torch.where((lo <= 0) & (hi >= 0), torch.zeros_like(lo), lo).double().unsqueeze(1)
    return torch.cat([g, zero], dim=1).to(lo.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("op,attrs", OPS_UNDER_TEST)
def test_lines_enclose_function(op, attrs, dtype):
    """ls*x + lb <= f(x) <= us*x + ub on every grid point, for default and random alphas."""
    node = Node("y", op, ("x",), (1,), {}, attrs)
    rule = OPS[op]
    lo, hi = _intervals(dtype)
    x = _grid(lo, hi)
    fx = FORWARD[op](node, [x.double()])
    alphas = [None]
    if rule.has_alpha:
        gen = torch.Generator().manual_seed(2)
        alphas += [torch.rand(lo.shape, generator=gen, dtype=dtype), torch.zeros_like(lo), torch.ones_like(lo)]
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for alpha in alphas:
        ls, lb, us, ub = (t.double().unsqueeze(1) for t in rule.relax(node, lo, hi, alpha))
        xd = x.double()
        low, up = ls * xd + lb, us * xd + ub
        scale = 1 + fx.abs() + (ls.abs() + us.abs()) * xd.abs()
        assert bool((low <= fx + tol * scale).all()), f"{op} lower line above f"
        assert bool((up >= fx - tol * scale).all()), f"{op} upper line below f"


@pytest.mark.parametrize("op", ["relu", "leaky_relu"])
def test_relu_lines_exact_when_stable(op):
    """Stable neurons get the exact line on both sides."""
    node = Node("y", op, ("x",), (1,), {}, {"alpha": 0.1})
    lo = torch.tensor([0.5, -3.0, 0.0])
    hi = torch.tensor([2.0, -1.0, 1.0])
    ls, lb, us, ub = OPS[op].relax(node, lo, hi)
    slope_neg = 0.0 if op == "relu" else 0.1
    assert torch.equal(ls, torch.tensor([1.0, slope_neg, 1.0])) and torch.equal(ls, us)
    assert torch.equal(lb, torch.zeros(3)) and torch.equal(ub, torch.zeros(3))


def test_smooth_lines_tight_on_small_interval():
    """On a narrow interval the sigmoid lines are within a few 1e-4 of each other."""
    node = Node("y", "sigmoid", ("x",), (1,))
    lo, hi = torch.tensor([-0.51, 0.3, -0.02], dtype=torch.float64), torch.tensor([-0.49, 0.32, 0.0],
                                                                                  dtype=torch.float64)
    ls, lb, us, ub = OPS["sigmoid"].relax(node, lo, hi)
    for x in (lo, hi, (lo + hi) / 2):
        assert bool(((us * x + ub) - (ls * x + lb) < 1e-4).all())


def test_sign_at_zero():
    """Sign(0) = 0 is enclosed; [0, 0] is exact."""
    node = Node("y", "sign", ("x",), (1,))
    lo, hi = torch.tensor([0.0, 0.0, -1.0]), torch.tensor([0.0, 2.0, 0.0])
    ls, lb, us, ub = OPS["sign"].relax(node, lo, hi)
    assert float(ls[0]) == 0 and float(lb[0]) == 0 and float(us[0]) == 0 and float(ub[0]) == 0
    assert bool((lb <= 0).all()) and bool((ub >= 0).all())
