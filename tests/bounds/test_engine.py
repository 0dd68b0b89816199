"""Whole random networks: soundness of all methods, ordering between them, API contract."""
from __future__ import annotations

import pytest
import torch

from verifier.bounds import BoundEngine, interval_bounds
from verifier.config import AlphaConfig
from verifier.model.graph import Graph, Node

ALPHA = AlphaConfig(iterations=8, lr=0.2, early_stop=False)


def _networks(nets):
    """(name, graph) of every test network."""
    return [("mlp_relu", nets.mlp([6, 16, 16, 4], "relu")), ("mlp_sigmoid", nets.mlp([6, 12, 12, 4], "sigmoid")),
            ("mlp_tanh", nets.mlp([6, 12, 12, 4], "tanh")), ("mlp_leaky", nets.mlp([6, 12, 12, 4], "leaky_relu")),
            ("cnn", nets.cnn()), ("residual", nets.residual()), ("concat_gather", nets.concat_gather())]


@pytest.mark.parametrize("index", range(7))
def test_network_bounds_sound_and_ordered(helpers, nets, index):
    """All methods enclose sampled outputs of C @ y; CROWN <= IBP width on average; alpha >= CROWN."""
    name, graph = _networks(nets)[index]
    gen = torch.Generator().manual_seed(10 + index)
    batch = 2
    lo, hi = helpers.random_box(batch, graph.input_shape, gen, scale=1.0, width=0.6)
    C = torch.randn(batch, 5, graph.n_outputs, generator=gen)
    engine = BoundEngine(graph)
    res = {m: engine.compute(lo, hi, C, method=m, alpha=ALPHA) for m in ("ibp", "crown", "alpha")}
    for r in res.values():
        helpers.assert_sound(r, graph, lo, hi, C=C, n=1500)
    width = {m: float((r.upper - r.lower).mean()) for m, r in res.items()}
    assert width["crown"] <= width["ibp"] + 1e-6, name
    assert bool((res["alpha"].lower >= res["crown"].lower - 1e-6).all()), name
    assert bool((res["alpha"].upper <= res["crown"].upper + 1e-6).all()), name


def test_intermediate_bounds_sound(helpers, nets):
    """Every node's bounds in the result enclose that node's sampled values."""
    graph = nets.cnn()
    gen = torch.Generator().manual_seed(3)
    lo, hi = helpers.random_box(2, graph.input_shape, gen, width=0.5)
    x = helpers.sample_box(lo, hi, 400, torch.Generator().manual_seed(4)).reshape((-1,) + graph.input_shape)
    values = graph.forward(x, keep=True)
    for method in ("crown", "alpha"):
        inter = BoundEngine(graph).compute(lo, hi, method=method, alpha=ALPHA).intermediate
        assert set(inter) == {graph.input_name} | {n.name for n in graph.nodes}
        for name, (l, h) in inter.items():
            v = values[name].reshape((400 + 2, 2) + tuple(l.shape[1:]))
            assert bool((v >= l - 1e-5).all()) and bool((v <= h + 1e-5).all()), (method, name)


def test_crown_tighter_than_ibp_on_preactivations(helpers, nets):
    """CROWN's intermediate bounds are intersected with IBP: never wider."""
    graph = nets.mlp([5, 20, 20, 20, 3])
    lo, hi = helpers.random_box(1, (5,), torch.Generator().manual_seed(0), width=1.0)
    crown = BoundEngine(graph).compute(lo, hi).intermediate
    ibp = interval_bounds(graph, lo, hi)
    for name in ("fc1", "fc2"):
        assert bool((crown[name][0] >= ibp[name][0]).all()) and bool((crown[name][1] <= ibp[name][1]).all())
    assert float((crown["fc2"][1] - crown["fc2"][0]).sum()) < float((ibp["fc2"][1] - ibp["fc2"][0]).sum())


def test_float64_matches_float32(helpers, nets):
    """The float64 engine gives (nearly) the same bounds and stays sound."""
    graph = nets.residual()
    lo, hi = helpers.random_box(2, (4,), torch.Generator().manual_seed(1), dtype=torch.float64)
    r64 = BoundEngine(graph, dtype=torch.float64).compute(lo, hi)
    r32 = BoundEngine(graph).compute(lo.float(), hi.float())
    assert r64.lower.dtype == torch.float64
    assert torch.allclose(r64.lower, r32.lower.double(), atol=1e-4)
    helpers.assert_sound(r64, graph.to(dtype=torch.float64), lo, hi, rtol=1e-12)


def test_flat_input_and_lower_only(nets):
    """A flat [B, n] box is reshaped; want_upper=False returns only lower bounds."""
    graph = nets.cnn()
    lo = torch.zeros(1, graph.n_inputs)
    res = BoundEngine(graph).compute(lo, lo + 0.1, torch.ones(1, 2, 3), want_upper=False)
    assert res.upper is None and res.lower.shape == (1, 2)


def test_given_intermediate_is_intersected(helpers, nets):
    """Bounds passed in are never loosened and a tighter one propagates."""
    graph = nets.mlp([4, 8, 3])
    lo, hi = helpers.random_box(1, (4,), torch.Generator().manual_seed(2), width=2.0)
    engine = BoundEngine(graph)
    base = engine.compute(lo, hi)
    f_lo, f_hi = base.intermediate["fc0"]
    tight = {"fc0": (f_lo + 0.25 * (f_hi - f_lo), f_hi - 0.25 * (f_hi - f_lo))}
    res = engine.compute(lo, hi, intermediate=tight)
    assert torch.equal(res.intermediate["fc0"][0], tight["fc0"][0])
    assert float((res.upper - res.lower).sum()) <= float((base.upper - base.lower).sum())


def test_errors(nets):
    """Unknown methods, unsupported ops and malformed C fail loudly."""
    graph = nets.mlp([3, 4, 2])
    engine = BoundEngine(graph)
    with pytest.raises(ValueError):
        engine.compute(torch.zeros(1, 3), torch.ones(1, 3), method="zonotope")
    with pytest.raises(ValueError):
        engine.compute(torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, 2, 5))
    bad = Graph("x", (3,), (Node("y", "softmax", ("x",), (3,)), Node("z", "atan", ("y",), (3,))), "z")
    with pytest.raises(NotImplementedError, match="softmax.*atan"):
        BoundEngine(bad)


def test_point_box_is_exact(nets):
    """A zero-width box gives lower == upper == f(x) for CROWN."""
    graph = nets.mlp([4, 10, 10, 3], "tanh")
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(5))
    res = BoundEngine(graph, dtype=torch.float64).compute(x.double(), x.double())
    y = graph.to(dtype=torch.float64).forward(x.double())
    assert torch.allclose(res.lower, y, atol=1e-9) and torch.allclose(res.upper, y, atol=1e-9)


@pytest.mark.parametrize("index", range(7))
def test_forward_mode_sound(helpers, nets, index):
    """Forward-mode intermediate bounds alone (no backward budget) and combined stay sound."""
    _, graph = _networks(nets)[index]
    lo, hi = helpers.random_box(2, graph.input_shape, torch.Generator().manual_seed(20 + index), width=0.6)
    only_fwd = BoundEngine(graph, backward_budget=0, forward_max_inputs=10 ** 6)
    both = BoundEngine(graph, forward_max_inputs=10 ** 6)
    plain = BoundEngine(graph, forward_max_inputs=0)
    r_fwd, r_both, r_plain = (e.compute(lo, hi) for e in (only_fwd, both, plain))
    assert float((r_both.upper - r_both.lower).sum()) <= float((r_fwd.upper - r_fwd.lower).sum()) * 1.01 + 1e-6
    for r in (r_fwd, r_both, r_plain):
        helpers.assert_sound(r, graph, lo, hi, n=800)
        x = helpers.sample_box(lo, hi, 300, torch.Generator().manual_seed(1)).reshape((-1,) + graph.input_shape)
        values = graph.forward(x, keep=True)
        for name, (l, h) in r.intermediate.items():
            v = values[name].reshape((302, 2) + tuple(l.shape[1:]))
            assert bool((v >= l - 1e-5).all()) and bool((v <= h + 1e-5).all()), name
    ibp = interval_bounds(graph, lo, hi)
    for name in graph.node_map:
        assert bool((r_fwd.intermediate[name][0] >= ibp[name][0] - 1e-6).all())


def test_row_chunking_gives_same_bounds(helpers, nets):
    """Splitting backward start rows into tiny chunks changes nothing (CROWN and alpha)."""
    graph = nets.residual()
    lo, hi = helpers.random_box(2, (4,), torch.Generator().manual_seed(9), width=1.0)
    whole, chunked = BoundEngine(graph), BoundEngine(graph, max_A_elements=1)
    for method in ("crown", "alpha"):
        a = whole.compute(lo, hi, method=method, alpha=AlphaConfig(iterations=4, early_stop=False))
        b = chunked.compute(lo, hi, method=method, alpha=AlphaConfig(iterations=4, early_stop=False))
        assert torch.allclose(a.lower, b.lower, atol=1e-5) and torch.allclose(a.upper, b.upper, atol=1e-5)


def test_coefficients_of_the_lower_bound(helpers, nets):
    """``want_coeffs``: the rows' input coefficients; for an affine net exactly C @ W; none for IBP."""
    graph = nets.mlp([4, 3], "relu", seed=0)   # a single linear layer
    w = graph.nodes[0].params["weight"]
    gen = torch.Generator().manual_seed(0)
    lo, hi = helpers.random_box(3, (4,), gen, width=1.0)
    C = torch.randn(3, 2, 3, generator=gen)
    res = BoundEngine(graph).compute(lo, hi, C, want_upper=False, want_coeffs=True)
    assert torch.allclose(res.coeffs, C @ w, atol=1e-6)
    relu = nets.mlp([4, 6, 3], "relu", seed=1)
    res = BoundEngine(relu).compute(lo, hi, C, want_upper=False, want_coeffs=True)
    assert res.coeffs.shape == (3, 2, 4)
    assert BoundEngine(relu).compute(lo, hi, C, method="ibp", want_coeffs=True).coeffs is None


def test_cuda_engines_turn_tf32_off():
    """TF32 (10-bit mantissa products) is switched off for any CUDA engine; CPU engines leave it alone."""
    from verifier.bounds.engine import full_precision_on

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        full_precision_on(torch.device("cpu"))
        assert torch.backends.cudnn.allow_tf32
        full_precision_on(torch.device("cuda"))
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_next_float_is_the_neighbour_and_passes_gradients():
    """Outward rounding steps one float and keeps a gradient of 1 (older torch has no nextafter derivative)."""
    import math

    from verifier.bounds.base import next_float

    x = torch.tensor([1.0, -2.5, 0.0, -math.inf], requires_grad=True)
    up = next_float(x, math.inf)
    want = torch.nextafter(x.detach(), torch.full_like(x, math.inf))
    assert torch.equal(up[:3], want[:3]) and bool((up[:3] > x[:3]).all()) and up[3] == -math.inf
    up.sum().backward()
    assert torch.equal(x.grad, torch.ones(4))


def test_engine_deadline_stops_propagation(helpers, nets):
    """A passed ``engine.deadline`` raises DeadlineReached from CROWN; alpha-CROWN keeps its best so far."""
    import time

    from verifier.bounds import DeadlineReached

    graph = nets.mlp([4, 16, 16, 3], "relu", seed=2)
    gen = torch.Generator().manual_seed(2)
    lo, hi = helpers.random_box(2, (4,), gen, width=1.0)
    engine = BoundEngine(graph)
    crown = engine.compute(lo, hi)
    engine.deadline = time.monotonic() - 1.0
    with pytest.raises(DeadlineReached):
        engine.compute(lo, hi)
    engine.deadline = None
    calls = []
    original = engine.propagate

    def late_after_first(*args, **kwargs):
        if kwargs.get("alphas") is not None:
            calls.append(1)
            if len(calls) > 1:
                engine.deadline = time.monotonic() - 1.0
        return original(*args, **kwargs)

    engine.propagate = late_after_first
    res = engine.compute(lo, hi, method="alpha", alpha=AlphaConfig(iterations=10, early_stop=False))
    assert len(calls) == 2 and bool((res.lower >= crown.lower - 1e-5).all())
    helpers.assert_sound(res, graph, lo, hi, n=500)
