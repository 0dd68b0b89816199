"""Linear relaxations of the elementwise nonlinear ops on [l, u]: ``lw*z + lb <= f(z) <= uw*z + ub``.

Each rule returns (lw, lb, uw, ub), all ``[B, *shape]``, valid for every z in [l, u]. ReLU and
leaky ReLU take an optional lower slope ``alpha`` (NaN entries mean "default slope").
Sigmoid, tanh and erf are convex for z <= 0 and concave for z >= 0: on a one-signed interval the
chord bounds one side and the tangent at the midpoint the other. On a mixed interval (l < 0 < u)
the upper line is the tangent at a point d >= 0 that passes on or above (l, f(l)): the tangent
at d >= 0 is above f on [0, inf) (concavity), above f(0), and above f(l), so above the chord of
the convex part [l, 0] too. d is found by bisection on [0, u] and the condition is re-checked
at the d used; when even the tangent at u stays below f(l), the chord from l to u is above f.
Where neither holds numerically, the lines with the smallest derivative on the interval as slope
(through f(l) below and f(u) above) are used: f(z) - f(l) >= d_min (z - l), f(u) - f(z) >= d_min (u - z).
The lower line is the upper line of the point-reflected function.

Floor, ceil and round are staircases with unit jumps; see ``step``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Relaxation = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
_NARROW = 1e-9  # below this width the chord slope is numerically unreliable: use the d_min lines
STEEPEST = 1e4  # a step chord steeper than this is replaced by a constant line


def _default_slope(l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor | None, low: float, high: float):
    """Per-neuron lower slope: ``alpha`` where given, else ``high`` if u >= -l else ``low``."""
    default = torch.where(u >= -l, torch.full_like(l, high), torch.full_like(l, low))
    if alpha is None:
        return default
    return torch.where(torch.isnan(alpha), default, alpha)


def relu(l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor | None = None) -> Relaxation:
    """ReLU: exact when stable; triangle upper line and slope alpha in [0, 1] below when unstable."""
    return leaky_relu(l, u, 0.0, alpha)


def leaky_relu(l: torch.Tensor, u: torch.Tensor, slope: float, alpha: torch.Tensor | None = None) -> Relaxation:
    """z if z >= 0 else slope*z (slope >= 0): chord on one side, a line through 0 on the other."""
    active, inactive = l >= 0, u <= 0
    unstable = ~(active | inactive)
    width = torch.where(unstable, u - l, torch.ones_like(l))
    chord_w = torch.where(unstable, (u - slope * l) / width, torch.zeros_like(l))
    chord_b = torch.where(unstable, slope * l - chord_w * l, torch.zeros_like(l))
    lo, hi = min(slope, 1.0), max(slope, 1.0)
    free = _default_slope(l, u, alpha, lo, hi)          # any slope in [lo, hi] through 0 is valid
    stable_w = torch.where(active, torch.ones_like(l), torch.full_like(l, slope))
    zero = torch.zeros_like(l)
    if slope <= 1:      # convex: chord above, the free line below
        lw, lb, uw, ub = free, zero, chord_w, chord_b
    else:               # concave: chord below, the free line above
        lw, lb, uw, ub = chord_w, chord_b, free, zero
    lw, uw = torch.where(unstable, lw, stable_w), torch.where(unstable, uw, stable_w)
    lb, ub = torch.where(unstable, lb, zero), torch.where(unstable, ub, zero)
    return lw, lb, uw, ub


_BISECT = 40      # bisection steps for the mixed-interval tangent point
_PAD = 1e-12     # relative padding of a mixed-interval tangent line's intercept


def _mixed_upper(f: Callable, df: Callable, l: torch.Tensor, u: torch.Tensor):
    """(slope, intercept, valid) of an upper line on [l, u] with l < 0 < u (see the module docstring)."""
    fl, fu = f(l), f(u)
    lo, hi = torch.zeros_like(u), u.clone()
    for _ in range(_BISECT):
        mid = (lo + hi) / 2
        above = f(mid) + df(mid) * (l - mid) >= fl
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    slope = df(hi)
    bias = f(hi) - slope * hi
    bias = bias + _PAD * (1 + bias.abs() + slope.abs() * torch.maximum(l.abs(), u.abs()))
    tangent_ok = slope * l + bias >= fl
    at_u = df(u) * (l - u) + fu < fl                   # the tangent at u stays below f(l): the chord is valid
    chord = (fu - fl) / (u - l).clamp(min=_NARROW)
    chord_b = fl - chord * l + _PAD * (1 + fl.abs() + chord.abs() * torch.maximum(l.abs(), u.abs()))
    slope = torch.where(tangent_ok, slope, chord)
    bias = torch.where(tangent_ok, bias, chord_b)
    return slope, bias, tangent_ok | at_u


def _s_shaped(f: Callable, df: Callable, l: torch.Tensor, u: torch.Tensor, centre: float = 0.0) -> Relaxation:
    """Sigmoid-like op (convex below 0, concave above, derivative peaking at 0, f(-z) = 2 centre - f(z))."""
    fl, fu = f(l), f(u)
    d_min = torch.minimum(df(l), df(u))
    lw, lb, uw, ub = d_min, fl - d_min * l, d_min.clone(), fu - d_min * u
    mixed = ((u - l) > _NARROW) & (l < 0) & (u > 0)
    us, ubias, u_ok = _mixed_upper(f, df, l, u)
    ls, nbias, l_ok = _mixed_upper(f, df, -u, -l)       # upper line of -f(-z) reflected: a lower line of f
    uw, ub = torch.where(mixed & u_ok, us, uw), torch.where(mixed & u_ok, ubias, ub)
    lw, lb = torch.where(mixed & l_ok, ls, lw), torch.where(mixed & l_ok, 2 * centre - nbias, lb)
    wide = (u - l) > _NARROW
    chord = (fu - fl) / torch.where(wide, u - l, torch.ones_like(l))
    chord_b = fl - chord * l
    mid = (l + u) / 2
    tan_w = df(mid)
    tan_b = f(mid) - tan_w * mid
    convex, concave = wide & (u <= 0), wide & (l >= 0)
    lw, lb = torch.where(convex, tan_w, lw), torch.where(convex, tan_b, lb)
    uw, ub = torch.where(convex, chord, uw), torch.where(convex, chord_b, ub)
    lw, lb = torch.where(concave, chord, lw), torch.where(concave, chord_b, lb)
    uw, ub = torch.where(concave, tan_w, uw), torch.where(concave, tan_b, ub)
    return lw, lb, uw, ub


def sigmoid(l: torch.Tensor, u: torch.Tensor) -> Relaxation:
    """Sigmoid relaxation."""
    return _s_shaped(torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)), l, u, 0.5)


def tanh(l: torch.Tensor, u: torch.Tensor) -> Relaxation:
    """Tanh relaxation."""
    return _s_shaped(torch.tanh, lambda z: 1 - torch.tanh(z) ** 2, l, u)


def erf(l: torch.Tensor, u: torch.Tensor) -> Relaxation:
    """Erf relaxation."""
    scale = 2.0 / math.sqrt(math.pi)
    return _s_shaped(torch.erf, lambda z: scale * torch.exp(-z * z), l, u)


# the value after a jump at p is p + offset: floor's jumps sit at integers (value p), ceil's at
# integers (value p + 1), round's at half-integers (value p + 1/2)
STEP_OFFSET = {"floor": 0.0, "ceil": 1.0, "round": 0.5}
STEP_FN = {"floor": torch.floor, "ceil": torch.ceil, "round": torch.round}


def step(op: str, l: torch.Tensor, u: torch.Tensor) -> Relaxation:
    """Floor / ceil / round (ties to even): z + k - 1 <= f(z) <= z + k with k the op's offset.

    With f(l) = f(u) the op is that constant on [l, u]. Otherwise each line is the supporting line,
    at the midpoint, of the convex (lower) or concave (upper) hull of both corners of every jump in
    [l, u] and the two end points: below, the constant f(l) (midpoint before the first jump), the
    chord from the last jump's lower corner to (u, f(u)) (midpoint after the last jump), else
    z + k - 1; above, symmetrically, the chord from (l, f(l)) to the first jump's upper corner, the
    constant f(u), or z + k. Chords steeper than ``STEEPEST`` become constants. Intercepts are padded
    for float64 error; infinite ends give the envelope lines.
    """
    k, fn = STEP_OFFSET[op], STEP_FN[op]
    finite = torch.isfinite(l) & torch.isfinite(u)
    l, u = torch.where(finite, l, torch.zeros_like(l)), torch.where(finite, u, torch.zeros_like(u))
    v_lo, v_hi = fn(l), fn(u)
    p, q, mid = v_lo + 1 - k, v_hi - k, (l + u) / 2
    ones = torch.ones_like(l)
    jump = v_hi > v_lo
    before, after = jump & (mid < p), jump & (mid > q)
    up_chord = torch.where(before, 1.0 / torch.where(before, p - l, ones), ones)
    lo_chord = torch.where(after, 1.0 / torch.where(after, u - q, ones), ones)
    up_const = ~jump | after | (before & (up_chord > STEEPEST))
    lo_const = ~jump | before | (after & (lo_chord > STEEPEST))
    uw = torch.where(up_const, 0.0 * ones, torch.where(before, up_chord, ones))
    ub = torch.where(up_const, v_hi, torch.where(before, v_lo - up_chord * l, k * ones))
    lw = torch.where(lo_const, 0.0 * ones, torch.where(after, lo_chord, ones))
    lb = torch.where(lo_const, v_lo, torch.where(after, v_hi - lo_chord * u, (k - 1) * ones))
    reach = torch.maximum(l.abs(), u.abs())
    ub = ub + 1e-12 * (1 + ub.abs() + uw.abs() * reach)
    lb = lb - 1e-12 * (1 + lb.abs() + lw.abs() * reach)
    lw, uw = torch.where(finite, lw, ones), torch.where(finite, uw, ones)
    lb, ub = torch.where(finite, lb, (k - 1) * ones), torch.where(finite, ub, k * ones)
    return lw, lb, uw, ub
