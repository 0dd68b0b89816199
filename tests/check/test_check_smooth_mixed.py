"""The checker's S-shaped relaxations on intervals that straddle 0: sound by sampling, and tangent-tight."""
from __future__ import annotations

import math

import pytest
import torch

from verifier.check import relaxation

FUNCS = {"sigmoid": (relaxation.sigmoid, torch.sigmoid), "tanh": (relaxation.tanh, torch.tanh),
         "erf": (relaxation.erf, torch.erf)}


@pytest.mark.parametrize("op", sorted(FUNCS))
@pytest.mark.parametrize("scale", [0.01, 1.0, 8.0, 60.0])
def test_lines_enclose_the_function_on_mixed_and_one_signed_intervals(op, scale):
    rule, f = FUNCS[op]
    g = torch.Generator().manual_seed(int(scale * 100))
    a = (torch.rand(4000, generator=g, dtype=torch.float64) - 0.7) * scale
    b = (torch.rand(4000, generator=g, dtype=torch.float64) - 0.3) * scale
    l, u = torch.minimum(a, b), torch.maximum(a, b)
    lw, lb, uw, ub = rule(l, u)
    t = torch.rand(64, 4000, generator=g, dtype=torch.float64)
    z = torch.cat([l[None], u[None], torch.zeros_like(l)[None].clamp(min=l, max=u), l + t * (u - l)])
    y = f(z)
    assert torch.all(lw * z + lb <= y + 1e-15) and torch.all(y <= uw * z + ub + 1e-15)


@pytest.mark.parametrize("op", sorted(FUNCS))
def test_mixed_interval_lines_are_tighter_than_the_min_slope_lines(op):
    """On [-1, 3] the upper tangent line touches f, far below the d_min line through f(u)."""
    rule, f = FUNCS[op]
    l, u = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64)
    lw, lb, uw, ub = rule(l, u)
    z = torch.linspace(-1, 3, 4001, dtype=torch.float64)
    gap = float((uw * z + ub - f(z)).min())
    assert 0 <= gap < 1e-6                                    # the line touches f somewhere
    area = float((uw * z + ub - (lw * z + lb)).mean())
    d_min = torch.minimum(*(torch.func.grad(lambda v: f(v))(x) for x in (l[0], u[0])))
    loose = float(((f(u) - d_min * u) + d_min * z - ((f(l) - d_min * l) + d_min * z)).mean())
    assert area < loose and not math.isnan(area)
