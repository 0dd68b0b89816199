"""Interval (IBP) rules of the checker, one per canonical op: (lower, upper) in, (lower, upper) out.

Every value is ``[B, *shape]`` in float64. Affine ops split weights into positive and negative
parts; monotone ops apply to both ends; re-indexing ops move both ends alike.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from verifier.model.graph import Node

Interval = tuple[torch.Tensor, torch.Tensor]


def _linear(node: Node, ins: list[Interval]) -> Interval:
    """x @ W.T + b with W split by sign."""
    (l, u), w, b = ins[0], node.params["weight"], node.params.get("bias")
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    return F.linear(l, wp, b) + F.linear(u, wn), F.linear(u, wp, b) + F.linear(l, wn)


def _conv(node: Node, ins: list[Interval]) -> Interval:
    """Convolution with the kernel split by sign."""
    (l, u), w, b = ins[0], node.params["weight"], node.params.get("bias")
    a = node.attrs
    conv = {3: F.conv1d, 4: F.conv2d}[l.dim()]

    def run(x, k, bias):
        return conv(x, k, bias, a["stride"], a["padding"], a["dilation"], a["groups"])

    wp, wn = w.clamp(min=0), w.clamp(max=0)
    return run(l, wp, b) + run(u, wn, None), run(u, wp, b) + run(l, wn, None)


def _affine(node: Node, ins: list[Interval]) -> Interval:
    """x * scale + bias with the scale split by sign."""
    (l, u), s, b = ins[0], node.params["scale"], node.params["bias"]
    sp, sn = s.clamp(min=0), s.clamp(max=0)
    return l * sp + u * sn + b, u * sp + l * sn + b


def _add(node: Node, ins: list[Interval]) -> Interval:
    return ins[0][0] + ins[1][0], ins[0][1] + ins[1][1]


def _monotone(fn: Callable[[Node, torch.Tensor], torch.Tensor]):
    """The interval rule of a non-decreasing op: apply it to both ends."""
    return lambda node, ins: (fn(node, ins[0][0]), fn(node, ins[0][1]))


def _maxpool(node: Node, x: torch.Tensor) -> torch.Tensor:
    a = node.attrs
    pool = {3: F.max_pool1d, 4: F.max_pool2d}[x.dim()]
    return pool(x, a["kernel"], a["stride"], a["padding"], a["dilation"], ceil_mode=a.get("ceil_mode", False))


def _reshape(node: Node, x: torch.Tensor) -> torch.Tensor:
    return x.reshape((x.shape[0],) + tuple(node.shape))


def _gather(node: Node, x: torch.Tensor) -> torch.Tensor:
    """out.flat[k] = x.flat[index[k]], 0 where index[k] == -1 (moves both ends alike)."""
    flat = x.reshape(x.shape[0], -1)
    index = node.params["index"].reshape(-1).to(x.device)
    out = flat[:, index.clamp(min=0)] * (index >= 0).to(flat.dtype)
    return out.reshape((x.shape[0],) + tuple(node.shape))


def _concat(node: Node, ins: list[Interval]) -> Interval:
    axis = node.attrs["axis"] + 1
    return torch.cat([i[0] for i in ins], dim=axis), torch.cat([i[1] for i in ins], dim=axis)


def _mul(node: Node, ins: list[Interval]) -> Interval:
    """x * y: min / max of the four corner products."""
    (lx, ux), (ly, uy) = ins
    corners = torch.stack([lx * ly, lx * uy, ux * ly, ux * uy])
    return corners.amin(0), corners.amax(0)


def _matmul(node: Node, ins: list[Interval]) -> Interval:
    """x1 @ x2 over the last two axes: corner products of every term, summed over k."""
    (l1, u1), (l2, u2) = ins
    a, b, c, d = l1.unsqueeze(-1), u1.unsqueeze(-1), l2.unsqueeze(-3), u2.unsqueeze(-3)
    corners = torch.stack([a * c, a * d, b * c, b * d])
    return corners.amin(0).sum(-2), corners.amax(0).sum(-2)


def _pow(node: Node, ins: list[Interval]) -> Interval:
    """x ** n (integer n >= 2): monotone for odd n; for even n the minimum is 0 on a mixed interval."""
    (l, u), n = ins[0], int(node.attrs["exponent"])
    a, b = l ** n, u ** n
    if n % 2:
        return a, b
    lo = torch.where((l <= 0) & (u >= 0), torch.zeros_like(a), torch.minimum(a, b))
    return lo, torch.maximum(a, b)


def _periodic(peak: float):
    """Interval rule of sin (peak at pi/2) / cos (peak at 0): ends, plus +-1 where a peak / trough lies inside."""
    def rule(node: Node, ins: list[Interval]) -> Interval:
        l, u = ins[0]
        fn = torch.sin if node.op == "sin" else torch.cos
        a, b = fn(l), fn(u)
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        period = 2 * math.pi
        has_max = torch.ceil((l - peak) / period) * period + peak <= u
        has_min = torch.ceil((l - peak - math.pi) / period) * period + peak + math.pi <= u
        full = (u - l) >= period
        hi = torch.where(has_max | full, torch.ones_like(hi), hi)
        lo = torch.where(has_min | full, -torch.ones_like(lo), lo)
        pad = 1e-12 * (1 + torch.maximum(l.abs(), u.abs()))   # float64 error of the peak positions
        return (lo - pad).clamp(min=-1.0), (hi + pad).clamp(max=1.0)
    return rule


def _erf(node: Node, ins: list[Interval]) -> Interval:
    """erf (increasing): both ends, padded for float64 error and kept in [-1, 1]."""
    l, u = ins[0]
    a, b = torch.erf(l), torch.erf(u)
    return (a - 1e-15 * (1 + a.abs())).clamp(min=-1.0), (b + 1e-15 * (1 + b.abs())).clamp(max=1.0)


def _reciprocal(node: Node, ins: list[Interval]) -> Interval:
    """1 / x: decreasing on each side of 0; unbounded when the interval touches 0."""
    l, u = ins[0]
    bad = (l <= 0) & (u >= 0)
    inf = torch.full_like(l, math.inf)
    return torch.where(bad, -inf, 1.0 / u), torch.where(bad, inf, 1.0 / l)


def _sqrt(node: Node, ins: list[Interval]) -> Interval:
    """sqrt(x) on x >= 0; NaN (rejected downstream) where the interval has negative values."""
    l, u = ins[0]
    nan = torch.full_like(l, math.nan)
    return torch.where(l < 0, nan, torch.sqrt(l.clamp(min=0))), torch.sqrt(u)


INTERVAL: dict[str, Callable[[Node, list[Interval]], Interval]] = {
    "linear": _linear,
    "conv": _conv,
    "affine": _affine,
    "add": _add,
    "relu": _monotone(lambda node, x: torch.relu(x)),
    "leaky_relu": _monotone(lambda node, x: F.leaky_relu(x, node.attrs["alpha"])),
    "sigmoid": _monotone(lambda node, x: torch.sigmoid(x)),
    "tanh": _monotone(lambda node, x: torch.tanh(x)),
    "maxpool": _monotone(_maxpool),
    "reshape": _monotone(_reshape),
    "gather": _monotone(_gather),
    "concat": _concat,
    "mul": _mul,
    "matmul": _matmul,
    "pow": _pow,
    "sin": _periodic(math.pi / 2),
    "cos": _periodic(0.0),
    "exp": _monotone(lambda node, x: torch.exp(x)),
    "reciprocal": _reciprocal,
    "sqrt": _sqrt,
    "erf": _erf,
    "floor": _monotone(lambda node, x: torch.floor(x)),
    "ceil": _monotone(lambda node, x: torch.ceil(x)),
    "round": _monotone(lambda node, x: torch.round(x)),   # half to even, as ONNX Round
}
