"""Lowering of the max-like and normalising ONNX ops to existing canonical ops.

``max(a, b) = a + relu(b - a)`` and ``min(a, b) = a - relu(a - b)`` are exact, so Abs
(``relu(x) + relu(-x)``), Max / Min (variadic; variables and constants broadcast together) and
ReduceMax / ReduceMin (a pairwise tournament over the reduced positions) need no new op, and branch
and bound and the MILP encoding can split their relus. LayerNormalization and ReduceL2 lower to
``pow`` 2, summing ``linear``s, ``sqrt``, ``reciprocal`` and ``mul``; Gelu to ``erf`` (or ``tanh``) and
``mul``.
"""
from __future__ import annotations

import math

import numpy as np

from verifier.model.onnx_builder import (Builder, NodeUnsupported, Var, constant, flat_index, linear_last,
                                         reduce_axes, reduced_last, reduced_shape, variable)


def pair_max(b: Builder, x: Var, y: Var, base: str, smallest: bool = False) -> Var:
    """max(x, y) = x + relu(y - x) (or min(x, y) = x - relu(x - y)) of two variables of one shape."""
    a, c = (x, y) if smallest else (y, x)          # the relu's argument is a - c
    d = b.emit(base, "add", [a, b.affine(c, -1.0, None, base)], x.shape)
    r = b.emit(base, "relu", [d], x.shape)
    return b.emit(base, "add", [x, b.affine(r, -1.0, None, base) if smallest else r], x.shape)


def const_max(b: Builder, x: Var, k: np.ndarray, base: str, smallest: bool = False) -> Var:
    """max(x, k) = k + relu(x - k) (or min(x, k) = k - relu(k - x)) for a finite constant k."""
    sign = -1.0 if smallest else 1.0
    d = b.affine(x, sign, -sign * k, base)
    return b.affine(b.emit(base, "relu", [d], d.shape), sign, k, base)


def _lower_abs(b, node, ins, at):
    """Abs(x) = relu(x) + relu(-x)."""
    x, base = variable(ins[0]), node.output[0]
    pos = b.emit(base, "relu", [x], x.shape)
    neg = b.emit(base, "relu", [b.affine(x, -1.0, None, base)], x.shape)
    return [b.emit(base, "add", [pos, neg], x.shape)]


def _lower_max_min(b, node, ins, at):
    """Max / Min of any number of variables and constants (numpy broadcasting), chained pairwise."""
    base, smallest = node.output[0], node.op_type == "Min"
    xs = [v for v in ins if isinstance(v, Var)]
    ks = [np.asarray(v, np.float64) for v in ins if v is not None and not isinstance(v, Var)]
    k = None
    if ks:
        k = (np.minimum if smallest else np.maximum).reduce(np.broadcast_arrays(*ks)) if len(ks) > 1 else ks[0]
        if not np.isfinite(k).all():
            raise NodeUnsupported("non-finite constant operand")
    shape = tuple(np.broadcast_shapes(*[x.shape for x in xs], *([] if k is None else [k.shape])))
    xs = [x if x.shape == shape else b.expand(x, shape, base) for x in xs]
    out = xs[0]
    for x in xs[1:]:
        out = pair_max(b, out, x, base, smallest)
    return [out if k is None else const_max(b, out, k, base, smallest)]


def _tournament(b: Builder, g: Var, base: str, smallest: bool) -> Var:
    """Max (min) over the last axis of g: halves compared pairwise (one differences ``linear``,
    a relu and an add per round); an odd last column waits and joins at the end."""
    waiting = []
    while g.shape[-1] > 1:
        w = g.shape[-1]
        h = w // 2
        idx = flat_index(g)
        if w % 2:
            waiting.append(b.reindex(g, idx[..., -1:], base))
        first = b.reindex(g, idx[..., :h], base)
        diff = np.zeros((h, w))
        diff[np.arange(h), np.arange(h)] = -1.0          # second half minus first half
        diff[np.arange(h), h + np.arange(h)] = 1.0
        r = b.emit(base, "relu", [linear_last(b, g, -diff if smallest else diff, None, base)], first.shape)
        g = b.emit(base, "add", [first, b.affine(r, -1.0, None, base) if smallest else r], first.shape)
    for x in waiting:
        g = pair_max(b, g, x, base, smallest)
    return g


def _lower_reduce_max(b, node, ins, at):
    """ReduceMax / ReduceMin over the given axes (keepdims and opset-18 axes input honoured)."""
    x, base = variable(ins[0]), node.output[0]
    axes = reduce_axes(x, ins, at)
    if axes is None:
        return [x]
    if any(x.shape[a] == 0 for a in axes):
        raise NodeUnsupported("reduction over an empty axis")
    g = _tournament(b, reduced_last(b, x, axes, base), base, node.op_type == "ReduceMin")
    return [b.reindex(g, flat_index(g).reshape(reduced_shape(x, axes, at.get("keepdims", 1))), base)]


def _lower_reduce_l2(b, node, ins, at):
    """ReduceL2 = sqrt(sum of squares) over the given axes."""
    x, base = variable(ins[0]), node.output[0]
    axes = reduce_axes(x, ins, at)
    if axes is None:
        raise NodeUnsupported("noop_with_empty_axes with empty axes")
    sq = b.emit(base, "pow", [x], x.shape, attrs={"exponent": 2})
    g = reduced_last(b, sq, axes, base)
    total = linear_last(b, g, np.ones((1, g.shape[-1])), None, base)
    root = b.emit(base, "sqrt", [total], total.shape)
    return [b.reindex(root, flat_index(root).reshape(reduced_shape(x, axes, at.get("keepdims", 1))), base)]


def _lower_layer_norm(b, node, ins, at):
    """LayerNormalization over the axes from ``axis`` on, as the ONNX function defines it:
    centred = x - mean (one ``linear``), var = mean(centred ** 2) + epsilon, y = centred / sqrt(var),
    then scale and bias (an ``affine``)."""
    x, base = variable(ins[0]), node.output[0]
    if any(node.output[1:]):
        raise NodeUnsupported("Mean / InvStdDev outputs")
    scale = constant(ins[1], "scale").astype(np.float64)
    bias = constant(ins[2], "bias").astype(np.float64) if len(ins) > 2 and ins[2] is not None else None
    axis = int(at.get("axis", -1)) % len(x.shape)
    lead, n = x.shape[:axis], int(np.prod(x.shape[axis:]))
    g = b.reindex(x, flat_index(x).reshape(lead + (n,)), base)
    centred = linear_last(b, g, np.eye(n) - 1.0 / n, None, base)
    square = b.emit(base, "pow", [centred], centred.shape, attrs={"exponent": 2})
    var = linear_last(b, square, np.full((1, n), 1.0 / n), np.array([float(at.get("epsilon", 1e-5))]), base)
    inv = b.emit(base, "reciprocal", [b.emit(base, "sqrt", [var], var.shape)], var.shape)
    y = b.emit(base, "mul", [centred, b.expand(inv, centred.shape, base)], centred.shape)
    y = b.reindex(y, flat_index(y).reshape(x.shape), base)
    return [b.affine(y, scale, bias, base)]


def _lower_gelu(b, node, ins, at):
    """Gelu (opset 20): x * (1 + erf(x / sqrt 2)) / 2, or with approximate="tanh"
    x * (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2; the product is a bilinear ``mul``."""
    x, base = variable(ins[0]), node.output[0]
    mode = at.get("approximate", "none")
    if mode == "none":
        t = b.emit(base, "erf", [b.affine(x, 1.0 / math.sqrt(2.0), None, base)], x.shape)
    elif mode == "tanh":
        cube = b.affine(b.emit(base, "pow", [x], x.shape, attrs={"exponent": 3}), 0.044715, None, base)
        inner = b.affine(b.emit(base, "add", [x, cube], x.shape), math.sqrt(2.0 / math.pi), None, base)
        t = b.emit(base, "tanh", [inner], x.shape)
    else:
        raise NodeUnsupported(f"approximate={mode}")
    return [b.emit(base, "mul", [x, b.affine(t, 0.5, 0.5, base)], x.shape)]


REDUCE_OPS = {
    "Abs": _lower_abs,
    "Max": _lower_max_min,
    "Min": _lower_max_min,
    "ReduceMax": _lower_reduce_max,
    "ReduceMin": _lower_reduce_max,
    "ReduceL2": _lower_reduce_l2,
    "LayerNormalization": _lower_layer_norm,
    "Gelu": _lower_gelu,
}
