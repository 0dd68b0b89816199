"""Bound rules of the integer step ops: floor, ceil and round (half to even).

Each is a non-decreasing staircase with unit jumps: on the open piece after a jump it takes the
value ``v``, and the jump up to ``v`` sits at ``v - e`` (floor e = 0, ceil e = 1, round e = 1/2).
So ``x + e - 1 <= f(x) <= x + e`` everywhere (the *envelope*), whatever value a tie takes.

On [l, u] with a = f(l) < b = f(u) the upper line is a supporting line of the concave hull of
the staircase's upper corners (l, a), (j, a + 1), ..., (b - e, b), (u, b) (j = a + 1 - e is the
first jump), taken at the midpoint m: the chord from (l, a) to (j, a + 1) when m < j, the
constant b when m > b - e, else the envelope line. The lower line mirrors it: the constant a, the
chord from (b - e, b - 1) to (u, b), or the envelope. A chord steeper than ``MAX_SLOPE`` gives way
to the constant (a or b). Both corners of every jump lie on the hulls, so the lines hold whatever
value a tie takes. With a = b the op is the constant a. IBP is exact (the op is monotone).
"""
from __future__ import annotations

import torch

from verifier.bounds.base import ElementwiseOp
from verifier.bounds.smooth import round_line

OFFSET = {"floor": 0.0, "ceil": 1.0, "round": 0.5}
_FN = {"floor": torch.floor, "ceil": torch.ceil, "round": torch.round}
MAX_SLOPE = 1e4     # a steeper chord (an interval narrower than 2e-4 across a jump) gives way to the constant


def step_lines(op: str, l: torch.Tensor, u: torch.Tensor):
    """(lower slope, lower bias, upper slope, upper bias) in float64 on [l, u] (finite float64 tensors)."""
    e, fn = OFFSET[op], _FN[op]
    a, b = fn(l), fn(u)
    one, zero = torch.ones_like(l), torch.zeros_like(l)
    first, last = a + 1 - e, b - e               # the first and last jump inside (l, u]
    m = (l + u) / 2
    jumps = a < b
    left, right = jumps & (m < first), jumps & (m > last)
    chord_up = 1 / torch.where(left, first - l, one)
    chord_lo = 1 / torch.where(right, u - last, one)
    steep_up, steep_lo = left & (chord_up > MAX_SLOPE), right & (chord_lo > MAX_SLOPE)
    up_s = torch.where(left, chord_up, torch.where(right, zero, one))
    up_b = torch.where(left, a - up_s * l, torch.where(right, b, one * e))
    lo_s = torch.where(right, chord_lo, torch.where(left, zero, one))
    lo_b = torch.where(right, b - lo_s * u, torch.where(left, a, one * (e - 1)))
    flat_up, flat_lo = ~jumps | steep_up, ~jumps | steep_lo
    return (torch.where(flat_lo, zero, lo_s), torch.where(flat_lo, a, lo_b),
            torch.where(flat_up, zero, up_s), torch.where(flat_up, b, up_b))


def _rounded(slope, bias, l, u, dtype, envelope: float, upper: bool):
    """The line in ``dtype``: exact for constants (integers) and envelope lines, else rounded outwards."""
    exact = (slope == 0) | ((slope == 1) & (bias == envelope))
    s_r, b_r = round_line(slope, bias, l, u, dtype, upper)
    return torch.where(exact, slope.to(dtype), s_r), torch.where(exact, bias.to(dtype), b_r)


class StepOp(ElementwiseOp):
    """floor / ceil / round (chosen by ``node.op``)."""

    def unstable(self, node, lo, hi):
        """Neurons whose interval contains a jump (elsewhere the op is a constant)."""
        fn = _FN[node.op]
        return fn(lo) != fn(hi)

    def relax(self, node, lo, hi, alpha=None):
        """Hull lines (module docstring) rounded outwards; the envelope where an input bound is
        infinite, the constant IBP lines where a rounded chord overflows."""
        l64, u64 = lo.to(torch.float64), hi.to(torch.float64)
        finite = torch.isfinite(l64) & torch.isfinite(u64)
        l64, u64 = torch.where(finite, l64, 0.0), torch.where(finite, u64, 0.0)
        fn, e = _FN[node.op], OFFSET[node.op]
        lines = step_lines(node.op, l64, u64)
        ls, lb = _rounded(*lines[:2], l64, u64, lo.dtype, e - 1, upper=False)
        us, ub = _rounded(*lines[2:], l64, u64, lo.dtype, e, upper=True)
        one, zero = torch.ones_like(ls), torch.zeros_like(ls)
        bad_lo = ~(torch.isfinite(ls) & torch.isfinite(lb))
        bad_up = ~(torch.isfinite(us) & torch.isfinite(ub))
        ls, lb = torch.where(bad_lo, zero, ls), torch.where(bad_lo, fn(lo), lb)
        us, ub = torch.where(bad_up, zero, us), torch.where(bad_up, fn(hi), ub)
        ls, lb = torch.where(finite, ls, one), torch.where(finite, lb, one * (e - 1))
        us, ub = torch.where(finite, us, one), torch.where(finite, ub, one * e)
        return ls, lb, us, ub
