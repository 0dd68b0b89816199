"""Small random canonical graphs for the MILP tests (fixed seeds, float32 params)."""
from __future__ import annotations

import torch

from verifier.model.graph import Graph, Node


def mlp(seed: int, n_in: int, hidden: tuple[int, ...], n_out: int, act: str = "relu", alpha: float = 0.1) -> Graph:
    """A fully connected net: linear -> act for every hidden width, then a linear output."""
    g = torch.Generator().manual_seed(seed)
    nodes, prev, width = [], "x", n_in
    for i, h in enumerate(hidden):
        w = torch.randn(h, width, generator=g) / width ** 0.5
        b = torch.randn(h, generator=g) * 0.3
        nodes.append(Node(f"fc{i}", "linear", (prev,), (h,), {"weight": w, "bias": b}))
        attrs = {"alpha": alpha} if act == "leaky_relu" else {}
        nodes.append(Node(f"act{i}", act, (f"fc{i}",), (h,), attrs=attrs))
        prev, width = f"act{i}", h
    w = torch.randn(n_out, width, generator=g) / width ** 0.5
    nodes.append(Node("out", "linear", (prev,), (n_out,), {"weight": w, "bias": torch.randn(n_out, generator=g) * 0.3}))
    return Graph("x", (n_in,), tuple(nodes), "out")


def conv_net(seed: int, pool: bool = False) -> Graph:
    """[1, 4, 4] input -> conv 2x3x3 (pad 1) -> affine -> relu [-> maxpool 2] -> reshape -> linear 3."""
    g = torch.Generator().manual_seed(seed)
    conv_attrs = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    nodes = [
        Node("conv", "conv", ("x",), (2, 4, 4), {"weight": torch.randn(2, 1, 3, 3, generator=g) / 3,
                                                  "bias": torch.randn(2, generator=g) * 0.2}, conv_attrs),
        Node("bn", "affine", ("conv",), (2, 4, 4), {"scale": torch.tensor([1.5, 0.7]).reshape(2, 1, 1),
                                                    "bias": torch.tensor([0.1, -0.1]).reshape(2, 1, 1)}),
        Node("relu", "relu", ("bn",), (2, 4, 4)),
    ]
    prev, shape = "relu", (2, 4, 4)
    if pool:
        pool_attrs = {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0), "dilation": (1, 1), "ceil_mode": False}
        nodes.append(Node("pool", "maxpool", ("relu",), (2, 2, 2), attrs=pool_attrs))
        prev, shape = "pool", (2, 2, 2)
    n = shape[0] * shape[1] * shape[2]
    nodes.append(Node("flat", "reshape", (prev,), (n,)))
    w = torch.randn(3, n, generator=g) / n ** 0.5
    nodes.append(Node("out", "linear", ("flat",), (3,), {"weight": w, "bias": torch.zeros(3)}))
    return Graph("x", (1, 4, 4), tuple(nodes), "out")


def tiny_conv(seed: int, pool: bool = False) -> Graph:
    """[1, 3, 3] -> conv 2x2x2 -> relu (8 neurons) [-> maxpool 2 (two windows of 4)] -> linear 2."""
    g = torch.Generator().manual_seed(seed)
    conv_attrs = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
    nodes = [Node("conv", "conv", ("x",), (2, 2, 2), {"weight": torch.randn(2, 1, 2, 2, generator=g) / 2,
                                                      "bias": torch.randn(2, generator=g) * 0.2}, conv_attrs),
             Node("relu", "relu", ("conv",), (2, 2, 2))]
    prev, n = "relu", 8
    if pool:
        pool_attrs = {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0), "dilation": (1, 1), "ceil_mode": False}
        nodes.append(Node("pool", "maxpool", ("relu",), (2, 1, 1), attrs=pool_attrs))
        prev, n = "pool", 2
    nodes.append(Node("flat", "reshape", (prev,), (n,)))
    w = torch.randn(2, n, generator=g) / n ** 0.5
    nodes.append(Node("out", "linear", ("flat",), (2,), {"weight": w, "bias": torch.randn(2, generator=g) * 0.1}))
    return Graph("x", (1, 3, 3), tuple(nodes), "out")


def dag_net(seed: int) -> Graph:
    """A DAG using gather (with a -1 slot), concat, add and affine around two relu layers."""
    g = torch.Generator().manual_seed(seed)
    nodes = [
        Node("fc1", "linear", ("x",), (4,), {"weight": torch.randn(4, 3, generator=g), "bias": torch.randn(4, generator=g) * 0.3}),
        Node("r1", "relu", ("fc1",), (4,)),
        Node("perm", "gather", ("r1",), (5,), {"index": torch.tensor([2, 0, -1, 3, 1])}),
        Node("skip", "linear", ("x",), (5,), {"weight": torch.randn(5, 3, generator=g), "bias": None}),
        Node("sum", "add", ("perm", "skip"), (5,)),
        Node("aff", "affine", ("sum",), (5,), {"scale": torch.randn(5, generator=g), "bias": torch.randn(5, generator=g) * 0.2}),
        Node("r2", "leaky_relu", ("aff",), (5,), attrs={"alpha": 0.2}),
        Node("cat", "concat", ("r2", "fc1"), (9,), attrs={"axis": 0}),
        Node("out", "linear", ("cat",), (2,), {"weight": torch.randn(2, 9, generator=g) / 3, "bias": None}),
    ]
    return Graph("x", (3,), tuple(nodes), "out")
