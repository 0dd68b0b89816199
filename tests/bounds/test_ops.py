"""Per-op soundness by sampling: single-node graphs, random boxes, IBP / CROWN / alpha."""
from __future__ import annotations

import pytest
import torch

from verifier.bounds import BoundEngine, interval_bounds
from verifier.config import AlphaConfig
from verifier.model.graph import Graph, Node

METHODS = ["ibp", "crown", "alpha"]
FAST_ALPHA = AlphaConfig(iterations=5, lr=0.2, early_stop=False)


def _check(helpers, graph, batch=2, seeds=(0,), scales=(0.3, 3.0), dtype=torch.float32, C=None):
    """Sound bounds for every method on random boxes of several scales (some degenerate dims)."""
    engine = BoundEngine(graph, dtype=dtype)
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        for scale in scales:
            lo, hi = helpers.random_box(batch, graph.input_shape, gen, scale=scale, width=scale, dtype=dtype)
            for method in METHODS:
                res = engine.compute(lo, hi, C, method=method, alpha=FAST_ALPHA)
                assert res.lower.shape == (batch, graph.n_outputs if C is None else C.shape[1])
                helpers.assert_sound(res, graph, lo, hi, C=C, n=600, seed=seed,
                                     rtol=1e-5 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("op,attrs", [("relu", {}), ("leaky_relu", {"alpha": 0.05}), ("leaky_relu", {"alpha": -0.5}),
                                      ("sigmoid", {}), ("tanh", {}), ("sign", {})])
@pytest.mark.parametrize("shape", [(7,), (2, 3, 4)])
def test_elementwise(helpers, op, attrs, shape):
    """Activations on flat and image-shaped values."""
    _check(helpers, helpers.single(op, shape, shape, attrs=attrs))


def test_elementwise_float64(helpers):
    """Same contract in float64 with a tight tolerance."""
    for op in ("relu", "sigmoid", "tanh", "sign"):
        _check(helpers, helpers.single(op, (6,), (6,)), dtype=torch.float64)


def test_sign_box_touching_zero(helpers):
    """Boxes with an end exactly at 0 (Sign(0) = 0) and the point box {0}."""
    graph = helpers.single("sign", (3,), (3,))
    lo = torch.tensor([[0.0, -1.0, 0.0], [-2.0, 0.0, 0.0]])
    hi = torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    for method in METHODS:
        helpers.assert_sound(BoundEngine(graph).compute(lo, hi, method=method), graph, lo, hi)


def test_linear(helpers):
    """Dense layer on a vector and on a [rows, features] value (last axis)."""
    gen = torch.Generator().manual_seed(3)
    w, b = torch.randn(5, 4, generator=gen), torch.randn(5, generator=gen)
    _check(helpers, helpers.single("linear", (4,), (5,), {"weight": w, "bias": b}))
    _check(helpers, helpers.single("linear", (3, 4), (3, 5), {"weight": w, "bias": None}))


@pytest.mark.parametrize("in_shape,k,stride,pad,dil,groups", [
    ((2, 7, 6), 3, 2, 1, 1, 1), ((4, 8, 8), 3, 1, 0, 2, 2), ((3, 9, 9), 4, 3, 2, 1, 1), ((2, 11), 3, 2, 1, 1, 1),
    ((4, 10), 2, 1, 0, 3, 4)])
def test_conv(helpers, nets, in_shape, k, stride, pad, dil, groups):
    """conv 1-D / 2-D with stride, padding, dilation and groups (exact output_padding)."""
    gen = torch.Generator().manual_seed(4)
    node = nets.conv_node("y", "x", in_shape, 4, k, stride, pad, gen, groups=groups, dil=dil)
    _check(helpers, Graph("x", in_shape, (node,), "y"))


def test_conv_backward_matches_autograd(nets):
    """The transposed-conv backward equals the exact vjp of the convolution."""
    gen = torch.Generator().manual_seed(5)
    node = nets.conv_node("y", "x", (3, 9, 8), 4, 3, 2, 1, gen)
    graph = Graph("x", (3, 9, 8), (node,), "y")
    A = torch.randn((2, 5) + node.shape, generator=gen)
    x = torch.randn(1, 3, 9, 8, requires_grad=True)
    y = graph.forward(x)
    grads = torch.autograd.grad((y * A[0, 1]).sum(), x)[0]
    from verifier.bounds.registry import OPS
    box = (x.detach(), x.detach())
    A_in, _ = OPS["conv"].backward(node, A, [box], None)
    assert torch.allclose(A_in[0][0, 1], grads[0], atol=1e-5)


def test_affine(helpers):
    """Per-channel scale with negative entries, broadcast bias."""
    gen = torch.Generator().manual_seed(6)
    params = {"scale": torch.randn(3, 1, 1, generator=gen), "bias": torch.randn(3, 1, 1, generator=gen)}
    _check(helpers, helpers.single("affine", (3, 2, 2), (3, 2, 2), params))


def test_add_concat_same_input(helpers):
    """add(x, x) and concat(x, x): one value read twice sums its A."""
    add = Graph("x", (4,), (Node("y", "add", ("x", "x"), (4,)),), "y")
    cat = Graph("x", (2, 3), (Node("y", "concat", ("x", "x"), (2, 6), {}, {"axis": 1}),), "y")
    _check(helpers, add)
    _check(helpers, cat)


def test_reshape_and_gather(helpers):
    """reshape, and gather with a permutation, repeats and -1 holes (which are exactly 0)."""
    _check(helpers, helpers.single("reshape", (2, 3), (3, 2)))
    index = torch.tensor([[5, -1, 0, 0], [2, 3, -1, 1]])
    graph = helpers.single("gather", (2, 3), (2, 4), {"index": index})
    _check(helpers, graph)
    lo, hi = torch.full((1, 2, 3), 1.0), torch.full((1, 2, 3), 2.0)
    b = interval_bounds(graph, lo, hi)["y"]
    assert float(b[0][0, 0, 1]) == 0.0 and float(b[1][0, 0, 1]) == 0.0


@pytest.mark.parametrize("shape,attrs,out", [
    ((2, 6, 6), {"kernel": 2, "stride": 2, "padding": 0, "dilation": 1}, (2, 3, 3)),
    ((2, 5, 5), {"kernel": 3, "stride": 2, "padding": 1, "dilation": 1}, (2, 3, 3)),
    ((1, 7, 7), {"kernel": 2, "stride": 2, "padding": 0, "dilation": 1, "ceil_mode": True}, (1, 4, 4)),
    ((2, 7, 7), {"kernel": 2, "stride": 1, "padding": 0, "dilation": 2}, (2, 5, 5)),
    ((3, 9), {"kernel": 3, "stride": 2, "padding": 1, "dilation": 1}, (3, 5))])
def test_maxpool(helpers, shape, attrs, out):
    """maxpool 1-D / 2-D with padding, ceil_mode and dilation."""
    graph = helpers.single("maxpool", shape, out, attrs=attrs)
    assert tuple(graph.forward(torch.zeros((1,) + shape)).shape[1:]) == out
    _check(helpers, graph)


def test_maxpool_decided_window_is_exact(helpers):
    """A window whose max is decided by the bounds gives the exact linear bound."""
    graph = helpers.single("maxpool", (1, 1, 2), (1, 1, 1), attrs={"kernel": [1, 2], "stride": [1, 2],
                                                                    "padding": 0, "dilation": 1})
    lo, hi = torch.tensor([[[[2.0, -1.0]]]]), torch.tensor([[[[3.0, 1.0]]]])
    res = BoundEngine(graph).compute(lo, hi, method="crown")
    assert float(res.lower) == pytest.approx(2.0) and float(res.upper) == pytest.approx(3.0)


def test_random_C_rows(helpers):
    """A spec matrix C folds into the backward pass: bounds of C @ y stay sound."""
    gen = torch.Generator().manual_seed(7)
    graph = helpers.single("tanh", (5,), (5,))
    C = torch.randn(2, 4, 5, generator=gen)
    _check(helpers, graph, C=C)
