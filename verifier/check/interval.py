"""Interval (IBP) rules of the checker, one per canonical op: (lower, upper) in, (lower, upper) out.

Every value is ``[B, *shape]`` in float64. Affine ops split weights into positive and negative
parts; monotone ops apply to both ends; re-indexing ops move both ends alike.
"""
from __future__ import annotations

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
}
