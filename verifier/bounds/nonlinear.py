"""Bound rules of the smooth nonlinear ops: pow, sin, cos, exp, reciprocal, sqrt, bilinear mul and matmul.

Curves (one input, ``CurveOp``): both relaxation lines share one slope ``s`` (the chord slope,
or the derivative at the midpoint on a degenerate interval), and their intercepts are the exact
minimum and maximum of ``g(x) = f(x) - s x`` over [l, u]. ``g`` is smooth, so its extremes lie
at the ends or at a critical point ``f'(x) = s``; every op lists its critical points in closed
form, so the lines are tight (upper = chord, lower = the parallel tangent on convex pieces) and
sound for any curvature pattern (odd powers across 0, sin/cos over several periods). Work is
in float64; the intercepts are padded and rounded outwards to the working dtype. Where a line is
not finite (overflow, unbounded input), the constant IBP lines are used instead.

Bilinear ``mul`` (two variable inputs): the mean of the two McCormick planes on each side,
``x y >= ((ly+uy) x + (lx+ux) y - (lx ly + ux uy)) / 2`` and
``x y <= ((ly+uy) x + (lx+ux) y - (lx uy + ux ly)) / 2``.
"""
from __future__ import annotations

import math

import torch

from verifier.bounds.base import BoundOp, ElementwiseOp, next_float, sum_dims

_NARROW = 1e-12      # below this width the chord is replaced by the midpoint derivative
_PAD = 1e-10         # relative padding of the float64 intercepts
TWO_PI = 2 * math.pi


class ZeroInIntervalError(ValueError):
    """A reciprocal / sqrt input interval includes a point outside the op's domain."""


# ------------------------------------------------------------------------------------ functions
def _pow_n(node) -> int:
    """The integer exponent of a pow node."""
    return int(node.attrs["exponent"])


def _value(node, x: torch.Tensor) -> torch.Tensor:
    """f(x) in the input's dtype."""
    op = node.op
    if op == "pow":
        return x ** _pow_n(node)
    return {"sin": torch.sin, "cos": torch.cos, "exp": torch.exp, "reciprocal": torch.reciprocal,
            "sqrt": torch.sqrt}[op](x)


def _derivative(node, x: torch.Tensor) -> torch.Tensor:
    """f'(x)."""
    op = node.op
    if op == "pow":
        n = _pow_n(node)
        return n * x ** (n - 1)
    return {"sin": torch.cos, "cos": lambda t: -torch.sin(t), "exp": torch.exp,
            "reciprocal": lambda t: -1.0 / (t * t), "sqrt": lambda t: 0.5 / torch.sqrt(t)}[op](x)


def _periodic_points(a: torch.Tensor, phase: torch.Tensor, l: torch.Tensor) -> list[torch.Tensor]:
    """The points a + phase + 2 pi k (two consecutive k) nearest above l."""
    k0 = torch.floor((l - a - phase) / TWO_PI)
    return [a + phase + TWO_PI * k0, a + phase + TWO_PI * (k0 + 1), a + phase + TWO_PI * (k0 + 2)]


def _critical(node, s: torch.Tensor, l: torch.Tensor) -> list[torch.Tensor]:
    """Points where f'(x) = s (may include points outside [l, u] or NaN: they are masked)."""
    op = node.op
    if op == "pow":
        n = _pow_n(node)
        r = (s / n).abs() ** (1.0 / (n - 1))
        return [torch.sign(s) * r] if n % 2 == 0 else [r, -r]
    if op in ("sin", "cos"):
        # sin: cos x = s -> x = +-a + 2 pi k; cos: -sin x = cos(x + pi/2) = s -> x = +-a - pi/2 + 2 pi k
        a = torch.acos(s.clamp(-1.0, 1.0))
        phase = torch.full_like(s, 0.0 if op == "sin" else -math.pi / 2)
        return _periodic_points(a, phase, l) + _periodic_points(-a, phase, l)
    if op == "exp":
        return [torch.log(s)]
    if op == "reciprocal":
        r = torch.sqrt(-1.0 / s)
        return [r, -r]
    if op == "sqrt":
        return [1.0 / (4 * s * s)]
    raise KeyError(op)


def interval64(node, l: torch.Tensor, u: torch.Tensor):
    """Exact range of f over [l, u] in float64 (before outward rounding)."""
    op = node.op
    fl, fu = _value(node, l), _value(node, u)
    lo, hi = torch.minimum(fl, fu), torch.maximum(fl, fu)
    if op == "pow" and _pow_n(node) % 2 == 0:
        lo = torch.where((l < 0) & (u > 0), torch.zeros_like(lo), lo)
    elif op in ("sin", "cos"):
        shift = math.pi / 2 if op == "sin" else 0.0          # where the maximum 1 sits (mod 2 pi)
        top = torch.ceil((l - shift) / TWO_PI) * TWO_PI + shift
        bot = torch.ceil((l - shift - math.pi) / TWO_PI) * TWO_PI + shift + math.pi
        hi = torch.where(top <= u, torch.ones_like(hi), hi)
        lo = torch.where(bot <= u, -torch.ones_like(lo), lo)
        wide = (u - l) >= TWO_PI
        hi, lo = torch.where(wide, torch.ones_like(hi), hi), torch.where(wide, -torch.ones_like(lo), lo)
    return lo, hi


def _check_domain(node, l: torch.Tensor, u: torch.Tensor) -> None:
    """Refuse reciprocal over intervals containing 0 and sqrt over negative inputs."""
    if node.op == "reciprocal" and bool(((l <= 0) & (u >= 0)).any()):
        raise ZeroInIntervalError(f"reciprocal {node.name}: an input interval contains 0 (division by a "
                                  "value that may be zero cannot be bounded)")
    if node.op == "sqrt" and bool((l < 0).any()):
        raise ZeroInIntervalError(f"sqrt {node.name}: an input interval contains negative values")


def _round_out(lo64: torch.Tensor, hi64: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Cast an interval to ``dtype``, rounding each end outwards."""
    lo, hi = lo64.to(dtype), hi64.to(dtype)
    lo = torch.where(lo.to(torch.float64) > lo64, next_float(lo, -math.inf), lo)
    hi = torch.where(hi.to(torch.float64) < hi64, next_float(hi, math.inf), hi)
    return lo, hi


# ------------------------------------------------------------------------------------ curve op
def parallel_lines(node, l: torch.Tensor, u: torch.Tensor):
    """(slope, lower intercept, upper intercept) in float64 with s x + b_lo <= f(x) <= s x + b_hi."""
    width = u - l
    narrow = width <= _NARROW * (1 + l.abs() + u.abs())
    mid = (l + u) / 2
    chord = (_value(node, u) - _value(node, l)) / torch.where(narrow, torch.ones_like(width), width)
    s = torch.where(narrow, _derivative(node, mid), chord)
    pts = [l, u] + [torch.where((p >= l) & (p <= u), p, l) for p in _critical(node, s, l)]
    g = torch.stack([_value(node, p) - s * p for p in pts])
    b_lo, b_hi = g.min(0).values, g.max(0).values
    pad = _PAD * (1 + b_lo.abs().maximum(b_hi.abs()) + s.abs() * l.abs().maximum(u.abs()))
    b_lo, b_hi = b_lo - pad, b_hi + pad
    if node.op in ("sin", "cos"):        # over a full period the constant lines are exact
        wide = width >= TWO_PI
        s = torch.where(wide, torch.zeros_like(s), s)
        b_lo = torch.where(wide, -torch.ones_like(b_lo), b_lo)
        b_hi = torch.where(wide, torch.ones_like(b_hi), b_hi)
    return s, b_lo, b_hi


def _round_lines(s, b_lo, b_hi, l, u, dtype):
    """Cast the float64 lines to ``dtype`` keeping each on its safe side over [l, u]."""
    s_r = s.to(dtype)
    ds = s - s_r.to(torch.float64)
    b_lo = b_lo + torch.minimum(ds * l, ds * u)
    b_hi = b_hi + torch.maximum(ds * l, ds * u)
    b_lo, b_hi = _round_out(b_lo, b_hi, dtype)
    return s_r, b_lo, b_hi


class CurveOp(ElementwiseOp):
    """pow (integer exponent >= 2), sin, cos, exp, reciprocal, sqrt (chosen by ``node.op``)."""

    def ibp(self, node, in_bounds):
        """Exact range (extremes inside the interval included), rounded outwards."""
        lo, hi = in_bounds[0]
        l64, u64 = lo.to(torch.float64), hi.to(torch.float64)
        _check_domain(node, l64, u64)
        return _round_out(*interval64(node, l64, u64), lo.dtype)

    def relax(self, node, lo, hi, alpha=None):
        """Two parallel lines (see module docstring); constant IBP lines where not finite."""
        l64, u64 = lo.to(torch.float64), hi.to(torch.float64)
        _check_domain(node, l64, u64)
        s, b_lo, b_hi = parallel_lines(node, l64, u64)
        s, b_lo, b_hi = _round_lines(s, b_lo, b_hi, l64, u64, lo.dtype)
        i_lo, i_hi = _round_out(*interval64(node, l64, u64), lo.dtype)
        finite = torch.isfinite(s) & torch.isfinite(b_lo) & torch.isfinite(b_hi) & torch.isfinite(l64) & torch.isfinite(u64)
        zero = torch.zeros_like(s)
        s = torch.where(finite, s, zero)
        return s, torch.where(finite, b_lo, i_lo), s.clone(), torch.where(finite, b_hi, i_hi)

    def backward(self, node, A, in_bounds, relax_state):
        """As ``ElementwiseOp.backward``, but an infinite line used with a nonzero coefficient gives -inf."""
        st = relax_state
        return lines_backward(A, st.lower_slope, st.lower_bias, st.upper_slope, st.upper_bias, st.extra_A)


def lines_backward(A, ls, lb, us, ub, extra_A=None):
    """Lower line where A > 0, upper where A < 0; NaN-free when an intercept is infinite."""
    pos, neg = A.clamp(min=0), A.clamp(max=0)
    ok_lo, ok_hi = torch.isfinite(lb), torch.isfinite(ub)
    lb_f = torch.where(ok_lo, lb, torch.zeros_like(lb))
    ub_f = torch.where(ok_hi, ub, torch.zeros_like(ub))
    A_in = pos * ls + neg * us
    if extra_A is not None:
        A_in = A_in + extra_A
    bias = sum_dims(pos * lb_f + neg * ub_f)
    bad = ((A > 0) & ~ok_lo) | ((A < 0) & ~ok_hi)
    if bool(bad.any()):
        bias = torch.where(bad.flatten(2).any(-1), torch.full_like(bias, -math.inf), bias)
    return [A_in], bias


# ------------------------------------------------------------------------------------ bilinear
def mccormick(lx, ux, ly, uy):
    """(slope on x, slope on y, lower intercept, upper intercept) of the averaged McCormick planes."""
    ax, ay = (ly + uy) / 2, (lx + ux) / 2
    return ax, ay, -(lx * ly + ux * uy) / 2, -(lx * uy + ux * ly) / 2


class MulOp(BoundOp):
    """y = x1 * x2 elementwise, both inputs variable and of the node's shape."""

    nonlinear = True

    def ibp(self, node, in_bounds):
        """Min / max of the four corner products."""
        (lx, ux), (ly, uy) = in_bounds
        c = torch.stack([lx * ly, lx * uy, ux * ly, ux * uy])
        return c.min(0).values, c.max(0).values

    def backward(self, node, A, in_bounds, relax_state):
        """Both inputs get A times the plane slopes; the intercept depends on the sign of A."""
        (lx, ux), (ly, uy) = ((b[0].unsqueeze(1), b[1].unsqueeze(1)) for b in in_bounds)
        ax, ay, b_lo, b_hi = mccormick(lx, ux, ly, uy)
        bias = sum_dims(A.clamp(min=0) * b_lo + A.clamp(max=0) * b_hi)
        return [A * ax, A * ay], bias


# ------------------------------------------------------------------------------------ matmul
def mm_planes(in_bounds):
    """Per-sample (mid1, mid2, lower intercept, upper intercept) of the averaged McCormick planes of x1 @ x2."""
    (l1, u1), (l2, u2) = in_bounds
    mid1, mid2 = (l1 + u1) / 2, (l2 + u2) / 2
    return mid1, mid2, -(l1 @ l2 + u1 @ u2) / 2, -(l1 @ u2 + u1 @ l2) / 2


class MatMulOp(BoundOp):
    """y = x1 @ x2 over the last two axes, both inputs variable with equal leading (per-sample) dims.

    Every product term x1[m, k] x2[k, n] is bounded by the averaged McCormick planes (see
    ``mccormick``); summed over k, the slopes and intercepts become matrix products.
    """

    nonlinear = True

    def ibp(self, node, in_bounds):
        """Exact interval of every term (four corner products), summed over k."""
        (l1, u1), (l2, u2) = in_bounds
        l1, u1, l2, u2 = l1.unsqueeze(-1), u1.unsqueeze(-1), l2.unsqueeze(-3), u2.unsqueeze(-3)   # [.., M, K, N]
        c = torch.stack([l1 * l2, l1 * u2, u1 * l2, u1 * u2])
        return c.min(0).values.sum(-2), c.max(0).values.sum(-2)

    def backward(self, node, A, in_bounds, relax_state):
        """A_x1 = A @ mid2^T, A_x2 = mid1^T @ A; the intercept depends on the sign of A."""
        mid1, mid2, b_lo, b_hi = (t.unsqueeze(1) for t in mm_planes(in_bounds))
        bias = sum_dims(A.clamp(min=0) * b_lo + A.clamp(max=0) * b_hi)
        return [A @ mid2.transpose(-1, -2), mid1.transpose(-1, -2) @ A], bias
