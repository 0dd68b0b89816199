"""Sampling soundness of the smooth / bilinear ops: IBP, relaxation lines, CROWN, alpha, forward mode."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_sound, random_box, sample_box

from verifier.bounds import BoundEngine
from verifier.bounds.nonlinear import MatMulOp, MulOp, ZeroInIntervalError
from verifier.bounds.registry import OPS
from verifier.config import AlphaConfig
from verifier.model.graph import Graph, Node
from verifier.model.ops import FORWARD

CURVES = [("pow", {"exponent": 2}), ("pow", {"exponent": 3}), ("pow", {"exponent": 4}), ("pow", {"exponent": 5}),
          ("sin", {}), ("cos", {}), ("exp", {}), ("sqrt", {}), ("reciprocal", {})]


def _intervals(op: str, gen: torch.Generator, n: int = 400):
    """Random intervals: narrow, wide (> 2 pi), straddling 0, degenerate; inside the op's domain."""
    c = torch.randn(n, generator=gen, dtype=torch.float64) * 3
    w = torch.rand(n, generator=gen, dtype=torch.float64) * torch.tensor([0.01, 1.0, 5.0, 20.0], dtype=torch.float64)[
        torch.randint(0, 4, (n,), generator=gen)]
    w[:10] = 0.0
    lo, hi = c - w / 2, c + w / 2
    if op == "exp":
        lo, hi = lo.clamp(max=20), hi.clamp(max=20)
    if op == "sqrt":
        lo, hi = lo.abs(), lo.abs() + w
        lo[:5] = 0.0
    if op == "reciprocal":
        sign = torch.where(c >= 0, 1.0, -1.0).to(torch.float64)
        lo, hi = torch.sort(torch.stack([sign * (0.05 + c.abs()), sign * (0.05 + c.abs() + w)]), 0).values
    lo[10:20], hi[10:20] = -hi[10:20].abs() - 0.5, hi[10:20].abs() + 0.5   # straddling 0 (where allowed)
    if op in ("sqrt", "reciprocal"):
        lo[10:20], hi[10:20] = 0.5, 0.5 + w[10:20]
    return lo.float(), hi.float()


def _points(lo, hi, gen):
    """Samples [N, n] in float64 including both ends and, for sin/cos, the peaks inside."""
    t = torch.rand((3000,) + lo.shape, generator=gen, dtype=torch.float64)
    l64, h64 = lo.double(), hi.double()
    return torch.cat([l64[None], h64[None], l64 + t * (h64 - l64)])


@pytest.mark.parametrize("op,attrs", CURVES, ids=[f"{o}{a.get('exponent', '')}" for o, a in CURVES])
def test_curve_ibp_and_lines_enclose_samples(op, attrs):
    gen = torch.Generator().manual_seed(1)
    node = Node("y", op, ("x",), (400,), {}, attrs)
    lo, hi = _intervals(op, gen)
    rule = OPS[op]
    i_lo, i_hi = rule.ibp(node, [(lo, hi)])
    ls, lb, us, ub = rule.relax(node, lo, hi)
    x = _points(lo, hi, gen)
    f = FORWARD[op](node, [x])
    tol = 1e-12 * (1 + f.abs())
    assert bool((f >= i_lo.double() - tol).all()) and bool((f <= i_hi.double() + tol).all())
    assert bool((f >= ls.double() * x + lb.double() - tol).all()), "lower line above f"
    assert bool((f <= us.double() * x + ub.double() + tol).all()), "upper line below f"


def test_even_power_straddling_zero_has_lower_bound_zero():
    node = Node("y", "pow", ("x",), (3,), {}, {"exponent": 2})
    lo, hi = torch.tensor([-1.0, -3.0, -0.5]), torch.tensor([2.0, 0.5, 0.5])
    i_lo, i_hi = OPS["pow"].ibp(node, [(lo, hi)])
    assert i_lo.tolist() == [0.0, 0.0, 0.0]
    assert i_hi.tolist() == [4.0, 9.0, 0.25]
    ls, lb, us, ub = OPS["pow"].relax(node, lo, hi)
    assert bool((ls * 0 + lb <= 0).all())           # the lower line may not exceed f(0) = 0


def test_sin_cos_wide_interval_is_the_full_range_and_peaks_are_found():
    for op in ("sin", "cos"):
        node = Node("y", op, ("x",), (3,))
        lo, hi = torch.tensor([0.0, 1.0, -100.0]), torch.tensor([7.0, 2.0, -93.0])
        i_lo, i_hi = OPS[op].ibp(node, [(lo, hi)])
        assert i_lo[0] == -1 and i_hi[0] == 1 and i_lo[2] == -1 and i_hi[2] == 1
    s_lo, s_hi = OPS["sin"].ibp(Node("y", "sin", ("x",), (1,)), [(torch.tensor([1.0]), torch.tensor([2.0]))])
    assert s_hi.item() >= 1.0 and s_lo.item() <= math.sin(1.0)


@pytest.mark.parametrize("op,lo,hi", [("reciprocal", -1.0, 2.0), ("reciprocal", 0.0, 1.0), ("sqrt", -0.1, 1.0)])
def test_domain_errors_are_refused(op, lo, hi):
    node = Node("y", op, ("x",), (1,))
    with pytest.raises(ZeroInIntervalError):
        OPS[op].ibp(node, [(torch.tensor([lo]), torch.tensor([hi]))])
    with pytest.raises(ZeroInIntervalError):
        OPS[op].relax(node, torch.tensor([lo]), torch.tensor([hi]))


def test_overflowing_exp_gives_constant_lines_without_nan():
    node = Node("y", "exp", ("x",), (2,))
    lo, hi = torch.tensor([0.0, 1.0]), torch.tensor([200.0, 2.0])
    ls, lb, us, ub = OPS["exp"].relax(node, lo, hi)
    assert ls[0] == 0 and us[0] == 0 and ub[0] == math.inf and lb[0] <= 1.0
    A = torch.tensor([[[-1.0, 1.0], [1.0, 0.0], [0.0, 2.0]]])
    (A_in,), bias = OPS["exp"].backward(node, A, [(lo[None], hi[None])], _state(ls, lb, us, ub))
    assert not bool(torch.isnan(A_in).any()) and not bool(torch.isnan(bias).any())
    assert bias[0, 0] == -math.inf and torch.isfinite(bias[0, 1]) and torch.isfinite(bias[0, 2])


def _state(ls, lb, us, ub):
    from verifier.bounds.base import RelaxState
    return RelaxState(*(t[None, None] for t in (ls, lb, us, ub)))


def test_mccormick_backward_encloses_products_at_corners_and_inside():
    gen = torch.Generator().manual_seed(2)
    (lx, ux), (ly, uy) = random_box(4, (5,), gen, 2.0, 3.0), random_box(4, (5,), gen, 2.0, 3.0)
    node = Node("y", "mul", ("a", "b"), (5,))
    A = torch.randn(4, 7, 5, generator=gen, dtype=torch.float32)
    (Ax, Ay), bias = MulOp().backward(node, A, [(lx, ux), (ly, uy)], None)
    x, y = sample_box(lx, ux, 2000, gen), sample_box(ly, uy, 2000, gen)
    corners = torch.where(torch.rand(y.shape, generator=gen) < 0.5, ly, uy)
    y = torch.where(torch.arange(y.shape[0])[:, None, None] < 700, corners, y)   # x corner with y corner
    lhs = torch.einsum("bcs,nbs->nbc", A, x * y)
    rhs = torch.einsum("bcs,nbs->nbc", Ax, x) + torch.einsum("bcs,nbs->nbc", Ay, y) + bias
    assert bool((lhs >= rhs - 1e-4 * (1 + lhs.abs())).all())
    i_lo, i_hi = MulOp().ibp(node, [(lx, ux), (ly, uy)])
    assert bool(((x * y >= i_lo - 1e-5) & (x * y <= i_hi + 1e-5)).all())


def _lin(name, src, n_out, n_in, gen, scale=1.0):
    """A random linear node."""
    w = torch.randn(n_out, n_in, generator=gen) * scale / n_in ** 0.5
    return Node(name, "linear", (src,), (n_out,), {"weight": w, "bias": 0.1 * torch.randn(n_out, generator=gen)})


def mixed_net(seed: int = 0, n_in: int = 4) -> Graph:
    """x -> fc -> {pow2, pow3, sin, cos, exp, mul(fc, relu), reciprocal(exp + 1)} -> concat -> relu -> fc."""
    gen = torch.Generator().manual_seed(seed)
    one = {"scale": torch.ones(1), "bias": torch.ones(1)}
    nodes = [_lin("fc", "x", 6, n_in, gen, 1.5), Node("r", "relu", ("fc",), (6,)),
             Node("p2", "pow", ("fc",), (6,), attrs={"exponent": 2}), Node("p3", "pow", ("fc",), (6,), attrs={"exponent": 3}),
             Node("s", "sin", ("fc",), (6,)), Node("c", "cos", ("fc",), (6,)), Node("e", "exp", ("fc",), (6,)),
             Node("m", "mul", ("fc", "r"), (6,)), Node("e1", "affine", ("e",), (6,), one),
             Node("q", "reciprocal", ("e1",), (6,)), Node("sq", "sqrt", ("e1",), (6,)),
             Node("cat", "concat", ("p2", "p3", "s", "c", "e", "m", "q", "sq"), (48,), attrs={"axis": 0}),
             _lin("fc2", "cat", 8, 48, gen), Node("r2", "relu", ("fc2",), (8,)), _lin("out", "r2", 3, 8, gen)]
    return Graph("x", (n_in,), tuple(nodes), "out")


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
@pytest.mark.parametrize("forward_inputs", [64, 0], ids=["forward-mode", "backward-only"])
def test_engine_bounds_of_a_mixed_net_are_sound(method, forward_inputs):
    gen = torch.Generator().manual_seed(3)
    graph = mixed_net()
    lo, hi = random_box(3, (4,), gen, 0.5, 0.6)
    engine = BoundEngine(graph, forward_max_inputs=forward_inputs)
    res = engine.compute(lo, hi, method=method, alpha=AlphaConfig(iterations=5))
    assert bool(torch.isfinite(res.lower).all()) and bool(torch.isfinite(res.upper).all())
    assert_sound(res, graph, lo, hi)
    for name, (l, u) in res.intermediate.items():
        if name == "x":
            continue
        x = sample_box(lo, hi, 500, gen)
        v = graph.forward(x.reshape(-1, 4), keep=True)[name].reshape((x.shape[0],) + tuple(l.shape))
        assert bool((v >= l - 1e-4 * (1 + v.abs())).all() & (v <= u + 1e-4 * (1 + v.abs())).all()), name


def test_crown_is_tighter_than_ibp_on_the_mixed_net():
    gen = torch.Generator().manual_seed(4)
    graph = mixed_net(1)
    lo, hi = random_box(2, (4,), gen, 0.5, 0.3)
    engine = BoundEngine(graph)
    ibp, crown = engine.compute(lo, hi, method="ibp"), engine.compute(lo, hi, method="crown")
    assert bool((crown.lower >= ibp.lower - 1e-5).all()) and bool((crown.upper - crown.lower).sum()
                                                                     < (ibp.upper - ibp.lower).sum())


def test_softmax_lowering_bounds_are_sound_and_sum_to_one():
    """softmax (as the loader lowers it: differences, exp, sum, reciprocal) bounded by CROWN."""
    from onnx import TensorProto, helper

    from verifier.model import load_onnx_bytes

    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    graph = load_onnx_bytes(data).graph
    gen = torch.Generator().manual_seed(5)
    lo, hi = random_box(3, (5,), gen, 2.0, 1.5)
    for method in ("ibp", "crown", "alpha"):
        res = BoundEngine(graph).compute(lo, hi, method=method)
        assert_sound(res, graph, lo, hi)
        assert bool((res.lower >= 0).all()) and bool((res.upper <= 1 + 1e-6).all())
    C = torch.ones(1, 1, 5)
    total = BoundEngine(graph).compute(lo, hi, C, method="crown")
    assert bool((total.lower <= 1 + 1e-5).all()) and bool((total.upper >= 1 - 1e-5).all())


def attention_net(seed: int = 0) -> Graph:
    """x [2, 3] -> q, k (linear) -> scores = q @ k^T (matmul) -> exp -> matmul with v -> linear."""
    gen = torch.Generator().manual_seed(seed)
    kt_index = torch.arange(6).reshape(2, 3).T.contiguous()      # k [2, 3] -> k^T [3, 2]
    def proj(name, scale):
        """A linear over the last axis of [2, 3]."""
        n = _lin(name, "x", 3, 3, gen, scale)
        return Node(name, "linear", ("x",), (2, 3), n.params)

    nodes = (proj("q", 1.5), proj("k", 1.5), proj("v", 1.0),
             Node("kt", "gather", ("k",), (3, 2), {"index": kt_index}),
             Node("s", "matmul", ("q", "kt"), (2, 2)), Node("e", "exp", ("s",), (2, 2)),
             Node("o", "matmul", ("e", "v"), (2, 3)), Node("f", "reshape", ("o",), (6,)),
             _lin("out", "f", 2, 6, gen))
    return Graph("x", (2, 3), nodes, "out")


def test_matmul_ibp_and_backward_enclose_products():
    gen = torch.Generator().manual_seed(6)
    (l1, u1), (l2, u2) = random_box(3, (2, 4, 5), gen, 1.0, 2.0), random_box(3, (2, 5, 3), gen, 1.0, 2.0)
    node = Node("y", "matmul", ("a", "b"), (2, 4, 3))
    A = torch.randn(3, 6, 2, 4, 3, generator=gen)
    (A1, A2), bias = MatMulOp().backward(node, A, [(l1, u1), (l2, u2)], None)
    lo, hi = MatMulOp().ibp(node, [(l1, u1), (l2, u2)])
    x1, x2 = sample_box(l1, u1, 1500, gen), sample_box(l2, u2, 1500, gen)
    y = x1 @ x2
    assert bool((y >= lo - 1e-4).all()) and bool((y <= hi + 1e-4).all())
    lhs = torch.einsum("bcijk,nbijk->nbc", A, y)
    rhs = torch.einsum("bcijk,nbijk->nbc", A1, x1) + torch.einsum("bcijk,nbijk->nbc", A2, x2) + bias
    assert bool((lhs >= rhs - 1e-4 * (1 + lhs.abs())).all())


@pytest.mark.parametrize("method", ["crown", "alpha"])
@pytest.mark.parametrize("forward_inputs", [64, 0], ids=["forward-mode", "backward-only"])
def test_engine_bounds_of_an_attention_net_are_sound(method, forward_inputs):
    gen = torch.Generator().manual_seed(7)
    graph = attention_net()
    lo, hi = random_box(2, (2, 3), gen, 0.5, 0.4)
    res = BoundEngine(graph, forward_max_inputs=forward_inputs).compute(lo, hi, method=method)
    assert bool(torch.isfinite(res.lower).all())
    assert_sound(res, graph, lo, hi)
