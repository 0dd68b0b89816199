"""Forward-mode linear bounds: every value bounded by linear functions of the input.

A ``LinFn`` holds ``lw x + lb <= v <= uw x + ub`` for x in the input box, with weights
``[B, n_in, *shape]`` and biases ``[B, *shape]``. Cost per op is n_in times its forward cost, so
this is the cheap way to get tight intermediate bounds when the input has few dimensions and
the layers are wide (where one backward CROWN pass per unstable neuron would be too costly).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from verifier.bounds.base import Bounds
from verifier.bounds.nonlinear import mccormick, mm_planes
from verifier.bounds.pool import MaxPoolOp
from verifier.model.ops import FORWARD


@dataclass(frozen=True)
class LinFn:
    """Lower and upper linear functions of the input."""

    lw: torch.Tensor
    lb: torch.Tensor
    uw: torch.Tensor
    ub: torch.Tensor


def input_fn(box: Bounds) -> LinFn:
    """The identity on the input box."""
    lo = box[0]
    n = lo[0].numel()
    eye = torch.eye(n, dtype=lo.dtype, device=lo.device).reshape((1, n) + tuple(lo.shape[1:]))
    zero = torch.zeros_like(lo)
    return LinFn(eye, zero, eye, zero)


def concretize(fn: LinFn, box: Bounds) -> Bounds:
    """Interval of the functions over the box."""
    lo, hi = box
    center = ((hi + lo) / 2).flatten(1)
    radius = ((hi - lo) / 2).flatten(1)
    shape = fn.lb.shape

    def ends(w, b, sign):
        flat = w.flatten(2)
        val = torch.matmul(center.unsqueeze(1), flat).squeeze(1)
        rad = torch.matmul(radius.unsqueeze(1), flat.abs()).squeeze(1)
        return (val + sign * rad).reshape((-1,) + tuple(shape[1:])) + b

    return ends(fn.lw, fn.lb, -1.0), ends(fn.uw, fn.ub, 1.0)


def _batched(op_fn, w: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample linear map to weights [B, n, *shape] (n folded into the batch)."""
    b, n = w.shape[:2]
    out = op_fn(w.reshape((b * n,) + tuple(w.shape[2:])))
    return out.reshape((b, n) + tuple(out.shape[1:]))


def _signed(apply_pos, apply_neg, fn: LinFn, bias) -> LinFn:
    """A linear map split by weight sign: lower takes pos.lower + neg.upper, and vice versa."""
    lw = _batched(apply_pos, fn.lw) + _batched(apply_neg, fn.uw)
    uw = _batched(apply_pos, fn.uw) + _batched(apply_neg, fn.lw)
    lb = apply_pos(fn.lb) + apply_neg(fn.ub) + bias
    ub = apply_pos(fn.ub) + apply_neg(fn.lb) + bias
    return LinFn(lw, lb, uw, ub)


def _linear(node, fns, bounds, lines):
    """Dense layer."""
    w, b = node.params["weight"], node.params.get("bias")
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    return _signed(lambda t: F.linear(t, wp), lambda t: F.linear(t, wn), fns[0], 0.0 if b is None else b)


def _conv(node, fns, bounds, lines):
    """Convolution (bias added once)."""
    a, w, b = node.attrs, node.params["weight"], node.params.get("bias")
    conv = {3: F.conv1d, 4: F.conv2d}[w.dim()]
    args = (a["stride"], a["padding"], a["dilation"], a["groups"])
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    bias = 0.0 if b is None else b.reshape((-1,) + (1,) * (w.dim() - 2))
    return _signed(lambda t: conv(t, wp, None, *args), lambda t: conv(t, wn, None, *args), fns[0], bias)


def _affine(node, fns, bounds, lines):
    """Elementwise scale and shift."""
    s, b = node.params["scale"], node.params["bias"]
    sp, sn = s.clamp(min=0), s.clamp(max=0)
    return _signed(lambda t: t * sp, lambda t: t * sn, fns[0], b)


def _add(node, fns, bounds, lines):
    """Sum of two functions."""
    f, g = fns
    return LinFn(f.lw + g.lw, f.lb + g.lb, f.uw + g.uw, f.ub + g.ub)


def _reindex(node, fns, bounds, lines):
    """Pure re-indexing ops (reshape, gather, concat) apply to weights and biases alike."""

    def apply(parts):
        return FORWARD[node.op](node, parts)

    lw = _batched_multi(apply, [f.lw for f in fns])
    uw = _batched_multi(apply, [f.uw for f in fns])
    return LinFn(lw, apply([f.lb for f in fns]), uw, apply([f.ub for f in fns]))


def _batched_multi(apply, ws):
    """``_batched`` for ops with several inputs (all with the same [B, n] leading dims)."""
    b = max(w.shape[0] for w in ws)
    n = ws[0].shape[1]
    flat = [w.expand((b,) + tuple(w.shape[1:])).reshape((b * n,) + tuple(w.shape[2:])) for w in ws]
    out = apply(flat)
    return out.reshape((b, n) + tuple(out.shape[1:]))


def _elementwise(node, fns, bounds, lines):
    """Compose the relaxation lines (any slope sign) with the input functions."""
    f = fns[0]
    ls, lb, us, ub = lines
    lsp, lsn, usp, usn = ls.clamp(min=0), ls.clamp(max=0), us.clamp(min=0), us.clamp(max=0)
    lw = lsp.unsqueeze(1) * f.lw + lsn.unsqueeze(1) * f.uw
    uw = usp.unsqueeze(1) * f.uw + usn.unsqueeze(1) * f.lw
    return LinFn(lw, lsp * f.lb + lsn * f.ub + lb, uw, usp * f.ub + usn * f.lb + ub)


def _maxpool(node, fns, bounds, lines):
    """Lower: x_j (j = argmax of lower bounds); upper: x_j if decided, else max upper bound."""
    f = fns[0]
    lo, hi = bounds[0]
    j, decided, u_max = MaxPoolOp().relaxation(node, lo, hi)
    jf = j.flatten(1)
    n = f.lw.shape[1]
    batch = max(f.lw.shape[0], jf.shape[0])

    def pick(w):
        w = w.expand((batch,) + tuple(w.shape[1:])).flatten(2)
        return torch.gather(w, 2, jf.unsqueeze(1).expand(batch, n, -1)).reshape((batch, n) + tuple(node.shape))

    def pick_b(b):
        return torch.gather(b.expand((batch,) + tuple(b.shape[1:])).flatten(1), 1, jf).reshape(j.shape)

    lw, lb = pick(f.lw), pick_b(f.lb)
    uw = pick(f.uw) * decided.unsqueeze(1)
    ub = torch.where(decided, pick_b(f.ub), u_max)
    return LinFn(lw, lb, uw, ub)


def _scaled(fn, a: torch.Tensor):
    """Linear bounds (lw, lb, uw, ub) of ``a * v`` given a LinFn of v and per-neuron ``a``."""
    ap, an = a.clamp(min=0), a.clamp(max=0)
    lw = ap.unsqueeze(1) * fn.lw + an.unsqueeze(1) * fn.uw
    uw = ap.unsqueeze(1) * fn.uw + an.unsqueeze(1) * fn.lw
    return lw, ap * fn.lb + an * fn.ub, uw, ap * fn.ub + an * fn.lb


def _bilinear(node, fns, bounds, lines):
    """Forward-mode rule of ``mul``: the McCormick planes composed with both inputs' functions."""
    (lx, ux), (ly, uy) = bounds
    ax, ay, b_lo, b_hi = mccormick(lx, ux, ly, uy)
    xl = _scaled(fns[0], ax)
    yl = _scaled(fns[1], ay)
    return LinFn(xl[0] + yl[0], xl[1] + yl[1] + b_lo, xl[2] + yl[2], xl[3] + yl[3] + b_hi)


def _matmul(node, fns, bounds, lines):
    """Forward-mode rule of ``matmul``: the summed McCormick planes composed with both inputs' functions."""
    mid1, mid2, b_lo, b_hi = mm_planes(bounds)
    f1, f2 = fns
    p2, n2 = mid2.clamp(min=0), mid2.clamp(max=0)
    p1, n1 = mid1.clamp(min=0), mid1.clamp(max=0)
    P2, N2, P1, N1 = (t.unsqueeze(1) for t in (p2, n2, p1, n1))
    lw = f1.lw @ P2 + f1.uw @ N2 + P1 @ f2.lw + N1 @ f2.uw
    uw = f1.uw @ P2 + f1.lw @ N2 + P1 @ f2.uw + N1 @ f2.lw
    lb = f1.lb @ p2 + f1.ub @ n2 + p1 @ f2.lb + n1 @ f2.ub + b_lo
    ub = f1.ub @ p2 + f1.lb @ n2 + p1 @ f2.ub + n1 @ f2.lb + b_hi
    return LinFn(lw, lb, uw, ub)


RULES = {"linear": _linear, "conv": _conv, "affine": _affine, "add": _add, "reshape": _reindex,
         "gather": _reindex, "concat": _reindex, "relu": _elementwise, "leaky_relu": _elementwise,
         "sigmoid": _elementwise, "tanh": _elementwise, "sign": _elementwise, "maxpool": _maxpool,
         "mul": _bilinear, "matmul": _matmul, "pow": _elementwise, "sin": _elementwise, "cos": _elementwise,
         "exp": _elementwise, "reciprocal": _elementwise, "sqrt": _elementwise, "erf": _elementwise,
         "floor": _elementwise, "ceil": _elementwise, "round": _elementwise}
