"""Bound rules of the S-shaped activations: sigmoid, tanh and erf.

All are increasing, convex on x <= 0 and concave on x >= 0, and point-symmetric about
(0, c) (c = 1/2 for sigmoid, 0 for tanh and erf). Upper line on [l, u]:

* u <= 0 (convex part): the chord;
* l >= 0 (concave part): the tangent at the midpoint;
* l < 0 < u: the tangent at the point d in [0, u] whose tangent passes through (l, f(l)) (found
  by bisection, keeping the end whose tangent is provably above f(l)); if no such d <= u exists
  the chord from l to u is valid and used.

The lower line is the upper line of the reflected interval [-u, -l], reflected back. Lines are
computed in float64 and rounded outwards to the working dtype (slope rounded, bias corrected
for the slope rounding over [l, u], then padded and rounded away from f). IBP applies f to both
ends in float64 and rounds outwards.
"""
from __future__ import annotations

import math

import torch

from verifier.bounds.base import ElementwiseOp, next_float

_BISECT_STEPS = 30
_SMALL_WIDTH = 1e-9


def _sigmoid_pair(x):
    """sigmoid and its derivative."""
    s = torch.sigmoid(x)
    return s, s * (1 - s)


def _tanh_pair(x):
    """tanh and its derivative."""
    t = torch.tanh(x)
    return t, 1 - t * t


_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def _erf_pair(x):
    """erf and its derivative."""
    return torch.erf(x), _TWO_OVER_SQRT_PI * torch.exp(-x * x)


_FUNCS = {"sigmoid": (_sigmoid_pair, 0.5), "tanh": (_tanh_pair, 0.0), "erf": (_erf_pair, 0.0)}
_PAD = 1e-15    # relative error allowance of the float64 function values


def _tangent(fn, d):
    """Slope and intercept of the tangent at d."""
    f, df = fn(d)
    return df, f - df * d


def upper_line(fn, l, u):
    """An upper line of an S-shaped function on [l, u] (float64 tensors)."""
    fl, _ = fn(l)
    fu, _ = fn(u)
    width = u - l
    chord_s = torch.where(width > _SMALL_WIDTH, (fu - fl) / width.clamp(min=_SMALL_WIDTH), torch.zeros_like(l))
    chord_b = torch.where(width > _SMALL_WIDTH, fu - chord_s * u, fu)
    mid_s, mid_b = _tangent(fn, (l + u) / 2)
    # mixed case: g(d) = tangent_d(l) - f(l) is non-decreasing in d >= 0
    mixed = (l < 0) & (u > 0)
    us_, ub_ = _tangent(fn, u)
    chord_ok = (us_ * l + ub_ - fl) <= 0
    lo_d, hi_d = torch.zeros_like(u), u.clone()
    for _ in range(_BISECT_STEPS):
        mid = (lo_d + hi_d) / 2
        ms, mb = _tangent(fn, mid)
        above = (ms * l + mb - fl) >= 0
        hi_d = torch.where(above, mid, hi_d)
        lo_d = torch.where(above, lo_d, mid)
    tan_s, tan_b = _tangent(fn, hi_d)
    use_chord = (u <= 0) | (mixed & chord_ok) | (width <= _SMALL_WIDTH)
    slope = torch.where(use_chord, chord_s, torch.where(mixed, tan_s, mid_s))
    bias = torch.where(use_chord, chord_b, torch.where(mixed, tan_b, mid_b))
    return slope, bias


def round_line(slope, bias, l, u, dtype, upper: bool):
    """Cast a float64 line to ``dtype`` while keeping it on the safe side over [l, u]."""
    s_r = slope.to(dtype)
    ds = slope - s_r.to(torch.float64)
    shift = torch.maximum(ds * l, ds * u) if upper else torch.minimum(ds * l, ds * u)
    b = bias + shift
    pad = 1e-12 * (1 + b.abs() + slope.abs() * torch.maximum(l.abs(), u.abs()))
    b = b + pad if upper else b - pad
    b_r = b.to(dtype)
    wrong = (b_r.to(torch.float64) < b) if upper else (b_r.to(torch.float64) > b)
    b_r = torch.where(wrong, next_float(b_r, math.inf if upper else -math.inf), b_r)
    return s_r, b_r


class SmoothOp(ElementwiseOp):
    """sigmoid / tanh / erf (chosen by ``node.op``)."""

    def ibp(self, node, in_bounds):
        """f at both ends (the ops are increasing) in float64, padded and rounded outwards."""
        lo, hi = in_bounds[0]
        fn, _ = _FUNCS[node.op]
        f_lo, _ = fn(lo.to(torch.float64))
        f_hi, _ = fn(hi.to(torch.float64))
        f_lo, f_hi = f_lo - _PAD * (1 + f_lo.abs()), f_hi + _PAD * (1 + f_hi.abs())
        out_lo, out_hi = f_lo.to(lo.dtype), f_hi.to(hi.dtype)
        out_lo = torch.where(out_lo.to(torch.float64) > f_lo, next_float(out_lo, -math.inf), out_lo)
        out_hi = torch.where(out_hi.to(torch.float64) < f_hi, next_float(out_hi, math.inf), out_hi)
        return out_lo, out_hi

    def relax(self, node, lo, hi, alpha=None):
        """Tangent / chord lines (see module docstring)."""
        fn, c = _FUNCS[node.op]
        l64, u64 = lo.to(torch.float64), hi.to(torch.float64)
        us, ub = upper_line(fn, l64, u64)
        ls, nb = upper_line(fn, -u64, -l64)
        lb = 2 * c - nb
        us, ub = round_line(us, ub, l64, u64, lo.dtype, upper=True)
        ls, lb = round_line(ls, lb, l64, u64, lo.dtype, upper=False)
        return ls, lb, us, ub
