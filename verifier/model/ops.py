"""Forward values of the canonical ops (the reference semantics every bound rule must enclose)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from verifier.model.node import Node

ForwardFn = Callable[[Node, list[torch.Tensor]], torch.Tensor]


def _linear(node, xs):
    return F.linear(xs[0], node.params["weight"], node.params.get("bias"))


def _conv(node, xs):
    x = xs[0]
    conv = {3: F.conv1d, 4: F.conv2d}[x.dim()]
    a = node.attrs
    return conv(x, node.params["weight"], node.params.get("bias"), a["stride"], a["padding"], a["dilation"], a["groups"])


def _affine(node, xs):
    return xs[0] * node.params["scale"] + node.params["bias"]


def _add(node, xs):
    return xs[0] + xs[1]


def _leaky_relu(node, xs):
    return F.leaky_relu(xs[0], node.attrs["alpha"])


def _maxpool(node, xs):
    x = xs[0]
    pool = {3: F.max_pool1d, 4: F.max_pool2d}[x.dim()]
    a = node.attrs
    return pool(x, a["kernel"], a["stride"], a["padding"], a["dilation"], ceil_mode=a.get("ceil_mode", False))


def _reshape(node, xs):
    return xs[0].reshape((xs[0].shape[0],) + tuple(node.shape))


def _gather(node, xs):
    x = xs[0]
    flat = x.reshape(x.shape[0], -1)
    index = node.params["index"].reshape(-1)
    valid = index >= 0
    out = flat[:, index.clamp(min=0)] * valid.to(flat.dtype)
    return out.reshape((x.shape[0],) + tuple(node.shape))


def _concat(node, xs):
    return torch.cat(xs, dim=node.attrs["axis"] + 1)


def _pow(node, xs):
    """x ** n for the integer exponent attr."""
    return xs[0] ** int(node.attrs["exponent"])


FORWARD: dict[str, ForwardFn] = {
    "linear": _linear,
    "conv": _conv,
    "affine": _affine,
    "add": _add,
    "relu": lambda node, xs: torch.relu(xs[0]),
    "leaky_relu": _leaky_relu,
    "sigmoid": lambda node, xs: torch.sigmoid(xs[0]),
    "tanh": lambda node, xs: torch.tanh(xs[0]),
    "sign": lambda node, xs: torch.sign(xs[0]),
    "maxpool": _maxpool,
    "reshape": _reshape,
    "gather": _gather,
    "concat": _concat,
    "mul": lambda node, xs: xs[0] * xs[1],
    "matmul": lambda node, xs: torch.matmul(xs[0], xs[1]),
    "pow": _pow,
    "sin": lambda node, xs: torch.sin(xs[0]),
    "cos": lambda node, xs: torch.cos(xs[0]),
    "exp": lambda node, xs: torch.exp(xs[0]),
    "reciprocal": lambda node, xs: torch.reciprocal(xs[0]),
    "sqrt": lambda node, xs: torch.sqrt(xs[0]),
    "erf": lambda node, xs: torch.erf(xs[0]),
    "floor": lambda node, xs: torch.floor(xs[0]),
    "ceil": lambda node, xs: torch.ceil(xs[0]),
    "round": lambda node, xs: torch.round(xs[0]),   # half to even, as ONNX Round
}


def evaluate(node: Node, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Value of ``node`` given the values of its inputs (batched)."""
    try:
        fn = FORWARD[node.op]
    except KeyError:
        raise NotImplementedError(f"no forward rule for canonical op {node.op!r} (node {node.name})") from None
    return fn(node, inputs)
