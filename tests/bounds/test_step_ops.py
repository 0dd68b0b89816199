"""Sampling soundness of floor, ceil, round (half to even) and erf: IBP, relaxation lines, CROWN."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_sound, random_box

from verifier.bounds import BoundEngine
from verifier.bounds.registry import OPS
from verifier.config import AlphaConfig
from verifier.model.graph import Graph, Node
from verifier.model.ops import FORWARD

STEPS = ["floor", "ceil", "round"]


def step_intervals(gen: torch.Generator, n: int = 600):
    """Intervals [n] (float32): random (tiny to wide, negative, positive), ends on integers and
    half-integers, tiny ones across a jump, degenerate ones, and huge magnitudes."""
    c = torch.randn(n, generator=gen, dtype=torch.float64) * 4
    widths = torch.tensor([1e-6, 1e-3, 0.3, 1.0, 2.5, 12.0], dtype=torch.float64)
    w = torch.rand(n, generator=gen, dtype=torch.float64) * widths[torch.randint(0, 6, (n,), generator=gen)]
    lo, hi = c - w / 2, c + w / 2
    k = torch.randint(-5, 6, (n,), generator=gen).to(torch.float64)
    lo[:60], hi[:60] = k[:60], k[:60] + w[:60]                    # starting on an integer
    lo[60:120], hi[60:120] = k[60:120] - w[60:120], k[60:120]      # ending on an integer
    lo[120:180], hi[120:180] = k[120:180] + 0.5, k[120:180] + 0.5 + w[120:180]    # half-integer ends
    lo[180:240], hi[180:240] = k[180:240] - 0.5 - w[180:240], k[180:240] - 0.5
    eps = torch.rand(60, generator=gen, dtype=torch.float64) * 1e-4
    lo[240:300], hi[240:300] = k[240:300] - eps, k[240:300] + eps            # tiny, across a jump
    lo[300:330], hi[300:330] = k[300:330] + 0.5 - eps[:30], k[300:330] + 0.5 + eps[:30]
    lo[330:350] = hi[330:350] = k[330:350] + 0.5 * (torch.arange(20) % 2)    # degenerate, on a tie or integer
    lo[350:360], hi[350:360] = -3e7 - w[350:360], 3e7                        # huge magnitudes
    lo[360:380], hi[360:380] = -c[360:380].abs() - w[360:380] - 0.25, -c[360:380].abs() - 0.25   # negative ranges
    return lo.float(), torch.maximum(hi.float(), lo.float())


def points(lo: torch.Tensor, hi: torch.Tensor, gen: torch.Generator, n: int = 3000) -> torch.Tensor:
    """[N, n] float32 points of each interval: the ends, every jump point and its float neighbours
    inside the interval (up to 8 per interval), and uniform samples."""
    t = torch.rand((n,) + lo.shape, generator=gen, dtype=torch.float64)
    uni = (lo.double() + t * (hi.double() - lo.double())).float()
    first = torch.ceil(lo.double() * 2) / 2                              # integers and half-integers
    jumps = torch.stack([first + 0.5 * j for j in range(8)]).float()
    near = torch.cat([jumps, torch.nextafter(jumps, torch.full_like(jumps, math.inf)),
                      torch.nextafter(jumps, torch.full_like(jumps, -math.inf))])
    pts = torch.cat([lo[None], hi[None], near, uni])
    return torch.minimum(torch.maximum(pts, lo), hi)


def _assert_encloses(op, node, lo, hi, x, rtol=0.0):
    """IBP and the relaxation lines of ``op`` enclose f at the points x (checked in float64)."""
    rule = OPS[op]
    i_lo, i_hi = rule.ibp(node, [(lo, hi)])
    ls, lb, us, ub = (t.double() for t in rule.relax(node, lo, hi))
    f = FORWARD[op](node, [x]).double()
    x = x.double()
    tol = rtol * (1 + f.abs())
    assert bool((f >= i_lo.double() - tol).all()) and bool((f <= i_hi.double() + tol).all()), "IBP misses f"
    bad_lo = f < ls * x + lb - tol
    bad_hi = f > us * x + ub + tol
    assert not bool(bad_lo.any()), f"lower line above f at x={x[bad_lo][:3].tolist()}"
    assert not bool(bad_hi.any()), f"upper line below f at x={x[bad_hi][:3].tolist()}"
    for t in (ls, lb, us, ub):
        assert bool(torch.isfinite(t).all())


@pytest.mark.parametrize("op", STEPS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_ibp_and_lines_enclose_samples(op, seed):
    gen = torch.Generator().manual_seed(seed)
    lo, hi = step_intervals(gen)
    node = Node("y", op, ("x",), tuple(lo.shape))
    _assert_encloses(op, node, lo, hi, points(lo, hi, gen))


@pytest.mark.parametrize("op", STEPS)
def test_step_lines_in_float64_and_on_two_dim_shapes(op):
    gen = torch.Generator().manual_seed(5)
    lo, hi = step_intervals(gen, 600)
    lo, hi = lo.reshape(20, 30).double(), hi.reshape(20, 30).double()
    node = Node("y", op, ("x",), (20, 30))
    x = points(lo.reshape(-1).float(), hi.reshape(-1).float(), gen, 1000).double().reshape(-1, 20, 30)
    _assert_encloses(op, node, lo, hi, x)


def test_step_lines_are_exact_constants_without_a_jump_and_tight_across_one():
    lo = torch.tensor([0.2, -1.7, 2.6, 0.5, 1.5, 0.2, -0.4, 0.5])
    hi = torch.tensor([0.9, -1.1, 3.4, 1.5, 1.5, 1.0, 0.4, 1.5])
    floor = OPS["floor"].relax(Node("y", "floor", ("x",), (8,)), lo, hi)
    ls, lb, us, ub = (t.tolist() for t in floor)
    assert (ls[0], lb[0], us[0], ub[0]) == (0.0, 0.0, 0.0, 0.0)          # floor = 0 on [0.2, 0.9]
    assert (ls[1], lb[1], us[1], ub[1]) == (0.0, -2.0, 0.0, -2.0)
    assert ls[3] == 1.0 and us[3] == 1.0                                  # [0.5, 1.5]: x - 1 <= floor <= x
    assert abs(lb[3] + 1.0) < 1e-6 and abs(ub[3]) < 1e-6
    assert ls[5] == 0.0 and abs(us[5] - 1.25) < 1e-6                      # [0.2, 1.0]: chord to (1, 1) above
    rnd = OPS["round"].relax(Node("y", "round", ("x",), (8,)), lo, hi)
    assert rnd[0][4] == 0 and rnd[1][4] == 2.0 and rnd[3][4] == 2.0       # round(1.5) = 2 exactly
    assert rnd[0][6] == 0 and rnd[1][6] == 0 and rnd[3][6] == 0           # round on [-0.4, 0.4] is 0
    unstable = OPS["floor"].unstable(Node("y", "floor", ("x",), (8,)), lo, hi)
    assert unstable.tolist() == [False, False, True, True, False, True, True, True]


def test_step_lines_with_infinite_inputs_are_the_envelope():
    lo, hi = torch.tensor([-math.inf, 0.5, -math.inf]), torch.tensor([2.0, math.inf, math.inf])
    for op, e in (("floor", 0.0), ("ceil", 1.0), ("round", 0.5)):
        ls, lb, us, ub = OPS[op].relax(Node("y", op, ("x",), (3,)), lo, hi)
        assert ls.tolist() == [1.0] * 3 and us.tolist() == [1.0] * 3
        assert lb.tolist() == [e - 1] * 3 and ub.tolist() == [e] * 3


def erf_intervals(gen: torch.Generator, n: int = 600):
    """Narrow, wide, straddling 0, one-signed, saturated (|x| > 6) and degenerate intervals."""
    c = torch.randn(n, generator=gen, dtype=torch.float64) * 3
    w = torch.rand(n, generator=gen, dtype=torch.float64) * torch.tensor([1e-6, 0.1, 2.0, 20.0], dtype=torch.float64)[
        torch.randint(0, 4, (n,), generator=gen)]
    lo, hi = c - w / 2, c + w / 2
    lo[:20], hi[:20] = -hi[:20].abs() - 0.01, hi[:20].abs() + 0.01
    lo[20:40], hi[20:40] = 6.0 + w[20:40], 8.0 + 2 * w[20:40]
    lo[40:50] = hi[40:50]
    return lo.float(), hi.float()


@pytest.mark.parametrize("seed", [0, 1])
def test_erf_ibp_and_lines_enclose_samples(seed):
    gen = torch.Generator().manual_seed(seed)
    lo, hi = erf_intervals(gen)
    node = Node("y", "erf", ("x",), (lo.numel(),))
    x = points(lo, hi, gen).double()                      # erf checked in float64 at float32 points
    _assert_encloses("erf", node, lo, hi, x, rtol=1e-12)


def step_net(seed: int = 0, n_in: int = 4) -> Graph:
    """x -> fc (scaled to cross several integers) -> {floor, ceil, round, erf, relu} -> concat -> fc -> floor -> fc."""
    gen = torch.Generator().manual_seed(seed)

    def lin(name, src, n_out, n_fan, scale):
        w = torch.randn(n_out, n_fan, generator=gen) * scale / n_fan ** 0.5
        return Node(name, "linear", (src,), (n_out,), {"weight": w, "bias": torch.randn(n_out, generator=gen)})

    nodes = [lin("fc", "x", 6, n_in, 3.0), Node("f", "floor", ("fc",), (6,)), Node("c", "ceil", ("fc",), (6,)),
             Node("r", "round", ("fc",), (6,)), Node("e", "erf", ("fc",), (6,)), Node("re", "relu", ("fc",), (6,)),
             Node("cat", "concat", ("f", "c", "r", "e", "re"), (30,), attrs={"axis": 0}),
             lin("fc2", "cat", 8, 30, 2.0), Node("g", "reshape", ("fc2",), (2, 4)),
             Node("f2", "floor", ("g",), (2, 4)), Node("flat", "reshape", ("f2",), (8,)), lin("out", "flat", 3, 8, 1.0)]
    return Graph("x", (n_in,), tuple(nodes), "out")


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
@pytest.mark.parametrize("forward_inputs", [64, 0], ids=["forward-mode", "backward-only"])
def test_engine_bounds_of_a_step_net_are_sound(method, forward_inputs):
    gen = torch.Generator().manual_seed(3)
    graph = step_net()
    engine = BoundEngine(graph, forward_max_inputs=forward_inputs)
    for width in (0.05, 0.5, 2.0):
        lo, hi = random_box(3, (4,), gen, 1.0, width)
        res = engine.compute(lo, hi, method=method, alpha=AlphaConfig(iterations=5))
        assert bool(torch.isfinite(res.lower).all()) and bool(torch.isfinite(res.upper).all())
        assert_sound(res, graph, lo, hi, n=3000, seed=int(width * 10))
    C = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 1.0, 1.0]]])
    lo, hi = random_box(2, (4,), gen, 1.0, 0.8)
    res = engine.compute(lo, hi, C, method=method, alpha=AlphaConfig(iterations=5))
    assert_sound(res, graph, lo, hi, C=C, n=3000)


def test_crown_is_exact_where_no_neuron_crosses_a_jump():
    """floor(x) on a box inside one step: CROWN returns the constant."""
    node = Node("y", "floor", ("x",), (3,))
    graph = Graph("x", (3,), (node,), "y")
    res = BoundEngine(graph).compute(torch.tensor([[0.1, -2.9, 5.0]]), torch.tensor([[0.9, -2.1, 5.5]]), method="crown")
    assert res.lower.tolist() == [[0.0, -3.0, 5.0]] and res.upper.tolist() == [[0.0, -3.0, 5.0]]


def test_every_bound_rule_and_checker_rule_is_described():
    """``op_rules`` (for ``nnverify inspect``) has words for every op either side supports."""
    from verifier.bounds.registry import RULE_TEXT, op_rules
    from verifier.check.crown import CHECK_RULES, SUPPORTED

    assert set(RULE_TEXT) == set(OPS)
    assert SUPPORTED <= set(CHECK_RULES)
    graph = Graph("x", (2,), (Node("f", "floor", ("x",), (2,)), Node("s", "sign", ("f",), (2,)),
                              Node("e", "erf", ("s",), (2,))), "e")
    rules = op_rules(graph)
    assert list(rules) == ["erf", "floor", "sign"]
    assert rules["floor"]["ibp"].startswith("exact") and "x - 1 <= floor(x) <= x" in rules["floor"]["crown"]
    assert rules["sign"]["checker"] == "none (unsupported)"
    assert "S-shaped" in rules["erf"]["crown"]
