"""The checker's forward linear bounds, for networks with few inputs.

Every value v gets two affine functions of the flat input x, ``lw.x + lb <= v <= uw.x + ub`` on
the leaf box (coefficients ``[B, n, *shape]``, offsets ``[B, *shape]``). Linear ops map them
exactly (positive and negative weight parts send the lower and upper function to the right
side); an elementwise op composes its relaxation lines (``relaxation.py``) with them, using the
interval bounds of its input. Any op without a rule here becomes a box: constant functions at its
interval bounds, which is always sound. Concretised at the box, these bounds are intersected with
the IBP/CROWN ones, never used alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from verifier.check import relaxation
from verifier.model.graph import Node

Fn = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]   # lw, lb, uw, ub


def input_fn(lower: torch.Tensor) -> Fn:
    """The identity on the input box [B, *shape]."""
    B, n = lower.shape[0], lower[0].numel()
    eye = torch.eye(n, dtype=lower.dtype, device=lower.device).reshape((1, n) + tuple(lower.shape[1:]))
    eye = eye.expand((B,) + tuple(eye.shape[1:])).clone()
    zero = torch.zeros_like(lower)
    return eye, zero, eye, zero


def concretize(fn: Fn, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval of the two functions over the box [B, *input_shape]."""
    lw, lb, uw, ub = fn
    B, n = lw.shape[0], lw.shape[1]
    lo, hi = lower.reshape(B, n, *([1] * (lw.dim() - 2))), upper.reshape(B, n, *([1] * (lw.dim() - 2)))
    low = (lw.clamp(min=0) * lo + lw.clamp(max=0) * hi).sum(1) + lb
    high = (uw.clamp(min=0) * hi + uw.clamp(max=0) * lo).sum(1) + ub
    return low, high


def _through(op, fn: Fn, B: int, n: int) -> Fn:
    """Apply a linear op with nonnegative action (reshape, gather) to both functions."""
    lw, lb, uw, ub = fn
    flat = lambda w: op(w.reshape((B * n,) + tuple(w.shape[2:])))
    out_w = lambda w: flat(w).reshape((B, n) + tuple(flat(w).shape[1:]))
    return out_w(lw), op(lb), out_w(uw), op(ub)


def _signed(op_pos, op_neg, fn: Fn, B: int, n: int, bias) -> Fn:
    """A linear op split into its positive and negative parts: lower <- pos(lower) + neg(upper)."""
    lw, lb, uw, ub = fn
    def coef(w_a, w_b):
        a = op_pos(w_a.reshape((B * n,) + tuple(w_a.shape[2:])))
        b = op_neg(w_b.reshape((B * n,) + tuple(w_b.shape[2:])))
        return (a + b).reshape((B, n) + tuple(a.shape[1:]))
    new_lb, new_ub = op_pos(lb) + op_neg(ub) + bias, op_pos(ub) + op_neg(lb) + bias
    return coef(lw, uw), new_lb, coef(uw, lw), new_ub


def _linear(node: Node, fn: Fn, B: int, n: int) -> Fn | None:
    w, b = node.params["weight"], node.params.get("bias")
    return _signed(lambda t: F.linear(t, w.clamp(min=0)), lambda t: F.linear(t, w.clamp(max=0)), fn, B, n,
                   0.0 if b is None else b)


def _conv(node: Node, fn: Fn, B: int, n: int) -> Fn | None:
    w, b, a = node.params["weight"], node.params.get("bias"), node.attrs
    conv = {3: F.conv1d, 4: F.conv2d}.get(fn[1].dim())
    if conv is None:
        return None
    run = lambda weight: (lambda t: conv(t, weight, None, a["stride"], a["padding"], a["dilation"], a["groups"]))
    bias = 0.0 if b is None else b.reshape((-1,) + (1,) * (fn[1].dim() - 2))
    return _signed(run(w.clamp(min=0)), run(w.clamp(max=0)), fn, B, n, bias)


def _affine(node: Node, fn: Fn, B: int, n: int) -> Fn | None:
    s, c = node.params["scale"], node.params["bias"]
    lw, lb, uw, ub = fn
    sp, sn = s.clamp(min=0), s.clamp(max=0)
    return (lw * sp + uw * sn, lb * sp + ub * sn + c, uw * sp + lw * sn, ub * sp + lb * sn + c)


def _reshape(node: Node, fn: Fn, B: int, n: int) -> Fn | None:
    return _through(lambda t: t.reshape((t.shape[0],) + tuple(node.shape)), fn, B, n)


def _gather(node: Node, fn: Fn, B: int, n: int) -> Fn | None:
    index = node.params["index"].reshape(-1)
    valid = (index >= 0)

    def op(t):
        flat = t.reshape(t.shape[0], -1)[:, index.clamp(min=0)] * valid.to(t.dtype)
        return flat.reshape((t.shape[0],) + tuple(node.shape))
    return _through(op, fn, B, n)


LINEAR = {"linear": _linear, "conv": _conv, "affine": _affine, "reshape": _reshape, "gather": _gather}


def _elementwise(node: Node, fn: Fn, l: torch.Tensor, u: torch.Tensor) -> Fn | None:
    """Compose the op's relaxation lines (at input bounds [l, u]) with the input's functions."""
    if node.op == "relu":
        lines = relaxation.relu(l, u)
    elif node.op == "leaky_relu" and float(node.attrs["alpha"]) >= 0:
        lines = relaxation.leaky_relu(l, u, float(node.attrs["alpha"]))
    elif node.op in ("sigmoid", "tanh", "erf"):
        lines = getattr(relaxation, node.op)(l, u)
    elif node.op in relaxation.STEP_FN:
        lines = relaxation.step(node.op, l, u)
    else:
        return None
    sl, il, su, iu = lines
    lw, lb, uw, ub = fn
    slp, sln, sup, sun = sl.clamp(min=0), sl.clamp(max=0), su.clamp(min=0), su.clamp(max=0)
    return (lw * slp.unsqueeze(1) + uw * sln.unsqueeze(1), lb * slp + ub * sln + il,
            uw * sup.unsqueeze(1) + lw * sun.unsqueeze(1), ub * sup + lb * sun + iu)


def box(lu: tuple[torch.Tensor, torch.Tensor], n: int) -> Fn:
    """Constant functions at interval bounds (for values no rule covers)."""
    l, u = lu
    zero = torch.zeros((l.shape[0], n) + tuple(l.shape[1:]), dtype=l.dtype, device=l.device)
    return zero, l, zero, u


def step(node: Node, fns: dict[str, Fn], bounds: dict, n: int) -> Fn | None:
    """The functions of ``node``, or None where no rule applies; ``bounds`` holds its inputs' intervals."""
    out = None
    if all(i in fns for i in node.inputs):
        first = fns[node.inputs[0]]
        B = first[1].shape[0]
        if node.op in LINEAR:
            out = LINEAR[node.op](node, first, B, n)
        elif node.op == "add":
            a, b = fns[node.inputs[0]], fns[node.inputs[1]]
            out = tuple(x + y for x, y in zip(a, b))
        elif node.op in ("relu", "leaky_relu", "sigmoid", "tanh", "erf", "floor", "ceil", "round"):
            out = _elementwise(node, first, *bounds[node.inputs[0]])
    return out
