"""Shared helpers for the bound tests: tiny graph builders and the sampling soundness check."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from verifier.model.graph import Graph, Node


def single(op, in_shape, out_shape, params=None, attrs=None) -> Graph:
    """A graph made of one node."""
    node = Node("y", op, ("x",), tuple(out_shape), params or {}, attrs or {})
    return Graph("x", tuple(in_shape), (node,), "y")


def sample_box(lo, hi, n, gen) -> torch.Tensor:
    """n points per box [n, B, *shape]: random corners, uniform points, the two extreme corners."""
    shape = (n,) + tuple(lo.shape)
    corners = torch.where(torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5, lo, hi)
    uniform = lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64).to(lo.dtype)
    pts = torch.cat([corners[: n // 3], uniform[n // 3:], lo.unsqueeze(0), hi.unsqueeze(0)])
    return torch.minimum(torch.maximum(pts, lo), hi)


def outputs(graph, x, C=None) -> torch.Tensor:
    """Flat outputs (or C @ y) of sampled points x [N, B, *in] -> [N, B, m]."""
    n, b = x.shape[:2]
    y = graph.forward(x.reshape((n * b,) + tuple(graph.input_shape))).reshape(n, b, -1)
    if C is None:
        return y
    return torch.einsum("bmo,nbo->nbm", C.to(y.dtype), y)


def assert_sound(result, graph, lo, hi, C=None, n=3000, seed=0, rtol=1e-5):
    """Every sampled point of the box lies within the result's bounds."""
    gen = torch.Generator().manual_seed(seed)
    x = sample_box(lo, hi, n, gen)
    v = outputs(graph, x, C)
    tol = rtol * (1 + v.abs())
    assert bool((v >= result.lower.unsqueeze(0) - tol).all()), "lower bound violated"
    if result.upper is not None:
        assert bool((v <= result.upper.unsqueeze(0) + tol).all()), "upper bound violated"


def random_box(batch, shape, gen, scale=1.0, width=1.0, dtype=torch.float32):
    """A box with random center and width; some dims are degenerate (width 0)."""
    c = torch.randn((batch,) + tuple(shape), generator=gen, dtype=torch.float64) * scale
    w = torch.rand((batch,) + tuple(shape), generator=gen, dtype=torch.float64) * width
    w = torch.where(torch.rand(w.shape, generator=gen, dtype=torch.float64) < 0.1, torch.zeros_like(w), w)
    return (c - w / 2).to(dtype), (c + w / 2).to(dtype)


def _w(gen, *shape, fan_in):
    """Random weights scaled by 1/sqrt(fan_in)."""
    return torch.randn(shape, generator=gen) / fan_in ** 0.5


def mlp(sizes, act="relu", seed=0, leak=0.1) -> Graph:
    """Linear / activation stack."""
    gen = torch.Generator().manual_seed(seed)
    nodes, prev = [], "x"
    for i in range(len(sizes) - 1):
        params = {"weight": _w(gen, sizes[i + 1], sizes[i], fan_in=sizes[i]),
                  "bias": 0.1 * torch.randn(sizes[i + 1], generator=gen)}
        nodes.append(Node(f"fc{i}", "linear", (prev,), (sizes[i + 1],), params))
        prev = f"fc{i}"
        if i < len(sizes) - 2:
            attrs = {"alpha": leak} if act == "leaky_relu" else {}
            nodes.append(Node(f"act{i}", act, (prev,), (sizes[i + 1],), {}, attrs))
            prev = f"act{i}"
    return Graph("x", (sizes[0],), tuple(nodes), prev)


def conv_node(name, inp, in_shape, cout, k, stride, pad, gen, groups=1, dil=1):
    """A conv node with random weights and its output shape computed."""
    cin, sp = in_shape[0], in_shape[1:]
    out_sp = tuple((s + 2 * pad - dil * (k - 1) - 1) // stride + 1 for s in sp)
    w = _w(gen, cout, cin // groups, *([k] * len(sp)), fan_in=cin // groups * k ** len(sp))
    attrs = {"stride": stride, "padding": pad, "dilation": dil, "groups": groups}
    return Node(name, "conv", (inp,), (cout,) + out_sp, {"weight": w, "bias": 0.1 * torch.randn(cout, generator=gen)},
                attrs)


def cnn(seed=0) -> Graph:
    """conv(s2, pad) -> BN affine -> relu -> grouped conv -> maxpool(pad) -> relu -> flatten -> linear."""
    gen = torch.Generator().manual_seed(seed)
    c1 = conv_node("c1", "x", (2, 9, 9), 4, 3, 2, 1, gen)
    bn = Node("bn", "affine", ("c1",), c1.shape, {"scale": 0.5 + torch.rand(4, 1, 1, generator=gen),
                                                   "bias": 0.1 * torch.randn(4, 1, 1, generator=gen)})
    r1 = Node("r1", "relu", ("bn",), c1.shape)
    c2 = conv_node("c2", "r1", c1.shape, 4, 3, 1, 1, gen, groups=2, dil=1)
    mp = Node("mp", "maxpool", ("c2",), (4, 3, 3), {}, {"kernel": 2, "stride": 2, "padding": 1, "dilation": 1,
                                                        "ceil_mode": False})
    r2 = Node("r2", "relu", ("mp",), mp.shape)
    fl = Node("flat", "reshape", ("r2",), (36,))
    fc = Node("fc", "linear", ("flat",), (3,), {"weight": _w(gen, 3, 36, fan_in=36), "bias": torch.zeros(3)})
    return Graph("x", (2, 9, 9), (c1, bn, r1, c2, mp, r2, fl, fc), "fc")


def residual(seed=0) -> Graph:
    """x -> fc -> relu -> fc -> add(skip) -> relu -> fc: a DAG with a node read twice."""
    gen = torch.Generator().manual_seed(seed)
    n = 8
    lin = lambda name, inp, o, i: Node(name, "linear", (inp,), (o,), {"weight": _w(gen, o, i, fan_in=i),
                                                                     "bias": 0.1 * torch.randn(o, generator=gen)})
    nodes = (lin("f1", "x", n, 4), Node("r1", "relu", ("f1",), (n,)), lin("f2", "r1", n, n),
             Node("s", "add", ("f2", "f1"), (n,)), Node("r2", "relu", ("s",), (n,)), lin("f3", "r2", 3, n))
    return Graph("x", (4,), nodes, "f3")


def concat_gather(seed=0) -> Graph:
    """Two branches (tanh, leaky relu) concatenated, permuted by gather (with -1 holes), linear."""
    gen = torch.Generator().manual_seed(seed)
    lin = lambda name, inp, o, i: Node(name, "linear", (inp,), (o,), {"weight": _w(gen, o, i, fan_in=i),
                                                                     "bias": 0.1 * torch.randn(o, generator=gen)})
    index = torch.randperm(10, generator=gen)
    index = torch.cat([index, torch.tensor([-1, 3])]).reshape(2, 6)
    nodes = (lin("a", "x", 5, 4), Node("ta", "tanh", ("a",), (5,)), lin("b", "x", 5, 4),
             Node("lb", "leaky_relu", ("b",), (5,), {}, {"alpha": 0.2}), Node("cat", "concat", ("ta", "lb"), (10,),
                                                                              {}, {"axis": 0}),
             Node("g", "gather", ("cat",), (2, 6), {"index": index}), Node("fl", "reshape", ("g",), (12,)),
             Node("r", "relu", ("fl",), (12,)), lin("out", "r", 3, 12))
    return Graph("x", (4,), nodes, "out")


@pytest.fixture(autouse=True)
def single_thread(one_torch_thread):
    """Every bounds test runs on one torch thread (``one_torch_thread``)."""


@pytest.fixture
def nets():
    """The network builders, as one namespace."""
    return SimpleNamespace(mlp=mlp, cnn=cnn, residual=residual, concat_gather=concat_gather, conv_node=conv_node)


@pytest.fixture
def helpers():
    """The helper functions, as one namespace."""
    return SimpleNamespace(single=single, sample_box=sample_box, outputs=outputs, assert_sound=assert_sound,
                           random_box=random_box)
