"""Bound rules of the piecewise-linear activations: relu, leaky_relu, sign."""
from __future__ import annotations

import torch

from verifier.bounds.base import ElementwiseOp, row_dot


def _leak(node) -> float:
    """Slope on the negative side (0 for relu)."""
    return float(node.attrs["alpha"]) if node.op == "leaky_relu" else 0.0


class LeakyReluOp(ElementwiseOp):
    """x if x >= 0 else a * x; relu is a = 0.

    For a <= 1 the function is convex: the upper line is the chord and the lower line passes
    through the origin with a free slope in [a, 1] (alpha-CROWN's alpha, slope = a + alpha (1 - a)).
    For a > 1 it is concave and the roles of the two lines swap.
    """

    has_alpha = True

    def ibp(self, node, in_bounds):
        """Min / max over the ends and 0 (handles a < 0, where the op is not monotone)."""
        lo, hi = in_bounds[0]
        a = _leak(node)
        f_lo, f_hi = torch.where(lo >= 0, lo, a * lo), torch.where(hi >= 0, hi, a * hi)
        cross = (lo < 0) & (hi > 0)
        zero = torch.zeros_like(lo)
        out_lo = torch.minimum(f_lo, f_hi)
        out_hi = torch.maximum(f_lo, f_hi)
        out_lo = torch.where(cross, torch.minimum(out_lo, zero), out_lo)
        out_hi = torch.where(cross, torch.maximum(out_hi, zero), out_hi)
        return out_lo, out_hi

    def unstable(self, node, lo, hi):
        """Neurons whose interval crosses 0."""
        return (lo < 0) & (hi > 0)

    def default_alpha(self, node, lo, hi):
        """CROWN's adaptive choice: slope 1 (alpha 1) when hi >= -lo, else slope a (alpha 0)."""
        a = _leak(node)
        pick_one = (hi >= -lo) if a <= 1 else (hi < -lo)
        return pick_one.to(lo.dtype)

    def relax(self, node, lo, hi, alpha=None):
        """Chord on one side, a line through 0 with slope between a and 1 on the other."""
        a = _leak(node)
        free, chord_s, chord_b = self._lines(a, lo, hi, self.default_alpha(node, lo, hi))
        if alpha is not None:
            if alpha.dim() > lo.dim():  # alpha has an objective dim: [B, C, *shape]
                lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
                free, chord_s, chord_b = free.unsqueeze(1), chord_s.unsqueeze(1), chord_b.unsqueeze(1)
            free = torch.where((lo < 0) & (hi > 0), a + alpha * (1.0 - a), free)
        zero = torch.zeros_like(chord_b)
        if a <= 1:
            return free, zero, chord_s, chord_b
        return chord_s, chord_b, free, zero

    def relax_fixed(self, node, lo, hi, alpha, cache):
        """``relax`` with the alpha-free lines computed once per (node, bounds) and kept in ``cache``."""
        if alpha.dim() <= lo.dim():
            return self.relax(node, lo, hi, alpha)
        a = _leak(node)
        if not cache:
            free, chord_s, chord_b = self._lines(a, lo, hi, self.default_alpha(node, lo, hi))
            cache.update(free=free.unsqueeze(1), chord_s=chord_s.unsqueeze(1), chord_b=chord_b.unsqueeze(1),
                         unstable=((lo < 0) & (hi > 0)).unsqueeze(1), zero=torch.zeros_like(chord_b).unsqueeze(1))
        free = torch.where(cache["unstable"], a + alpha * (1.0 - a), cache["free"])
        if a <= 1:
            return free, cache["zero"], cache["chord_s"], cache["chord_b"]
        return cache["chord_s"], cache["chord_b"], free, cache["zero"]

    def backward(self, node, A, in_bounds, relax_state):
        """Lower line where A >= 0, upper where A < 0; for a <= 1 the lower line has no intercept.

        The relu case is the inner loop of every CROWN pass: four passes over A instead of nine,
        with the intercepts as a matrix product over the negative part of A only.
        """
        if _leak(node) > 1:
            return super().backward(node, A, in_bounds, relax_state)
        s = relax_state
        neg = A.clamp(max=0)
        A_in = A * s.lower_slope + neg * (s.upper_slope - s.lower_slope)   # = pos * ls + neg * us
        if s.extra_A is not None:
            A_in = A_in + s.extra_A
        return [A_in], row_dot(neg, s.upper_bias)

    @staticmethod
    def _lines(a, lo, hi, alpha):
        """(free slope, chord slope, chord bias) with exact lines on stable neurons."""
        active, inactive = lo >= 0, hi <= 0
        width = (hi - lo).clamp(min=torch.finfo(lo.dtype).tiny)
        f_hi = torch.where(hi >= 0, hi, a * hi)
        chord_slope = (f_hi - torch.where(lo >= 0, lo, a * lo)) / width
        chord_bias = f_hi - chord_slope * hi
        # outward pad for the rounding of the chord slope over [lo, hi]
        pad = 4 * torch.finfo(lo.dtype).eps * torch.maximum(lo.abs(), hi.abs()) * (1 + abs(a))
        chord_bias = chord_bias + pad if a <= 1 else chord_bias - pad
        exact_slope = torch.where(active, torch.ones_like(lo), torch.full_like(lo, a))
        stable = active | inactive
        free = torch.where(stable, exact_slope, a + alpha * (1.0 - a))
        chord_s = torch.where(stable, exact_slope, chord_slope)
        chord_b = torch.where(stable, torch.zeros_like(chord_bias), chord_bias)
        return free, chord_s, chord_b


class SignOp(ElementwiseOp):
    """ONNX Sign: -1 for x < 0, 0 at 0, +1 for x > 0.

    Lines used on [l, u] with l < 0 < u: lower is -1 or -1 + 2x/u; upper is +1 or 1 + 2x/(-l)
    (each picked by which side of the interval is wider). With l = 0 < u: x/u <= sign(x) <= 1;
    with l < 0 = u: -1 <= sign(x) <= x/(-l). Stable intervals are exact constants.
    """

    def unstable(self, node, lo, hi):
        """Any interval that contains 0 and is not the single point 0."""
        return (lo <= 0) & (hi >= 0) & (lo < hi)

    def relax(self, node, lo, hi, alpha=None):
        """Lines bounding the step (see class docstring)."""
        one, zero = torch.ones_like(lo), torch.zeros_like(lo)
        tiny = torch.finfo(lo.dtype).tiny
        pos_w, neg_w = hi.clamp(min=tiny), (-lo).clamp(min=tiny)
        const = torch.sign(lo)  # value where lo == hi or the sign is constant
        positive, negative = lo > 0, hi < 0
        at_zero = (lo == 0) & (hi == 0)
        l_zero, u_zero = (lo == 0) & (hi > 0), (lo < 0) & (hi == 0)
        cross = (lo < 0) & (hi > 0)
        use_slope_low = cross & (hi >= -lo)
        use_slope_up = cross & (-lo >= hi)
        ls = torch.where(l_zero, 1.0 / pos_w, torch.where(use_slope_low, 2.0 / pos_w, zero))
        lb = torch.where(l_zero, zero, -one)
        us = torch.where(u_zero, 1.0 / neg_w, torch.where(use_slope_up, 2.0 / neg_w, zero))
        ub = torch.where(u_zero, zero, one)
        pad = 4 * torch.finfo(lo.dtype).eps
        lb, ub = lb - pad * (ls != 0), ub + pad * (us != 0)
        exact = positive | negative | at_zero
        ls, us = torch.where(exact, zero, ls), torch.where(exact, zero, us)
        lb, ub = torch.where(exact, const, lb), torch.where(exact, const, ub)
        return ls, lb, us, ub
