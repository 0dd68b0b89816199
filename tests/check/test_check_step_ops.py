"""The checker's own rules for floor, ceil, round (half to even) and erf: sampling soundness,
agreement with the engine's lines, and certificates over nets that use them."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import cert_factory as cf
from verifier.certificate import CertificateBuilder, leaf
from verifier.check import check
from verifier.check import relaxation
from verifier.check.crown import BACKWARD, CHECK_RULES, SUPPORTED, Domains, Pass, backward, intermediate_bounds
from verifier.check.interval import INTERVAL
from verifier.model.graph import Graph, Node
from verifier.model.ops import FORWARD

STEPS = ["floor", "ceil", "round"]
LO, HI = np.full(3, -1.0), np.full(3, 1.0)


def intervals(gen: torch.Generator, n: int = 800) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, n] float64 intervals: random widths from 1e-7 to 15, integer and half-integer ends,
    tiny ones across a jump, degenerate ones on ties, negative ranges and huge magnitudes."""
    c = torch.randn(n, generator=gen, dtype=torch.float64) * 5
    widths = torch.tensor([1e-7, 1e-3, 0.4, 1.0, 3.0, 15.0], dtype=torch.float64)
    w = torch.rand(n, generator=gen, dtype=torch.float64) * widths[torch.randint(0, 6, (n,), generator=gen)]
    lo, hi = c - w / 2, c + w / 2
    k = torch.randint(-6, 7, (n,), generator=gen).to(torch.float64)
    lo[:80], hi[:80] = k[:80], k[:80] + w[:80]
    lo[80:160], hi[80:160] = k[80:160] - w[80:160], k[80:160]
    lo[160:240], hi[160:240] = k[160:240] - 0.5, k[160:240] - 0.5 + w[160:240]
    lo[240:320], hi[240:320] = k[240:320] + 0.5 - w[240:320], k[240:320] + 0.5
    eps = torch.rand(80, generator=gen, dtype=torch.float64) * 1e-4
    jump = k[320:400] + 0.5 * (torch.arange(80) % 2)
    lo[320:400], hi[320:400] = jump - eps, jump + eps
    lo[400:420] = hi[400:420] = k[400:420] + 0.5
    lo[420:440], hi[420:440] = -c[420:440].abs() - w[420:440] - 0.1, -c[420:440].abs() - 0.1
    lo[440:450], hi[440:450] = -1e9 - w[440:450], 1e9
    return lo[None], hi[None]


def points(lo: torch.Tensor, hi: torch.Tensor, gen: torch.Generator, n: int = 3000) -> torch.Tensor:
    """[N, 1, n]: the ends, the first 8 integers / half-integers of each interval and their float
    neighbours on both sides, and uniform samples; all clamped into the interval."""
    t = torch.rand((n,) + lo.shape, generator=gen, dtype=torch.float64)
    first = torch.ceil(lo * 2) / 2
    jumps = torch.stack([first + 0.5 * j for j in range(8)])
    near = torch.cat([jumps, torch.nextafter(jumps, torch.full_like(jumps, math.inf)),
                      torch.nextafter(jumps, torch.full_like(jumps, -math.inf))])
    pts = torch.cat([lo[None], hi[None], near, lo + t * (hi - lo)])
    return torch.minimum(torch.maximum(pts, lo), hi)


@pytest.mark.parametrize("op", STEPS + ["erf"])
@pytest.mark.parametrize("seed", [0, 1])
def test_interval_and_relaxation_enclose_samples(op, seed):
    gen = torch.Generator().manual_seed(seed)
    lo, hi = intervals(gen)
    if op == "erf":
        lo, hi = lo / 2, hi / 2
        lo[0, 440:450], hi[0, 440:450] = -3.0, 7.0
    node = Node("y", op, ("a",), (lo.shape[1],))
    x = points(lo, hi, gen)
    f = FORWARD[op](node, [x])
    l, u = INTERVAL[op](node, [(lo, hi)])
    assert bool((f >= l).all()) and bool((f <= u).all())
    lw, lb, uw, ub = relaxation.step(op, lo, hi) if op in STEPS else relaxation.erf(lo, hi)
    tol = 1e-15 if op == "erf" else 0.0          # float64 evaluation of erf and of the sampled lines
    assert not bool((f < lw * x + lb - tol).any()), "lower line above f"
    assert not bool((f > uw * x + ub + tol).any()), "upper line below f"


def test_step_relaxation_is_exact_inside_one_step_and_the_envelope_when_unbounded():
    lo = torch.tensor([[0.1, 1.5, -0.4, -math.inf]], dtype=torch.float64)
    hi = torch.tensor([[0.4, 1.5, 0.4, 2.0]], dtype=torch.float64)
    lw, lb, uw, ub = relaxation.step("round", lo, hi)
    assert lw[0, :3].tolist() == [0.0] * 3 and uw[0, :3].tolist() == [0.0] * 3
    assert abs(lb[0, 1] - 2.0) < 1e-9 and abs(ub[0, 1] - 2.0) < 1e-9      # round(1.5) = 2
    assert abs(lb[0, 2]) < 1e-9 and abs(ub[0, 2]) < 1e-9
    assert (lw[0, 3], lb[0, 3], uw[0, 3], ub[0, 3]) == (1.0, -0.5, 1.0, 0.5)


@pytest.mark.parametrize("op", STEPS)
def test_checker_lines_agree_with_the_engine_lines(op):
    """Independent code, same geometry: on float32-exact intervals the two sets of lines coincide
    up to the rounding pads (so the checker can re-derive what the engine proved)."""
    from verifier.bounds.registry import OPS

    gen = torch.Generator().manual_seed(7)
    lo, hi = intervals(gen, 400)
    lo, hi = lo.float().double(), torch.maximum(hi.float().double(), lo.float().double())
    node = Node("y", op, ("a",), (400,))
    mine = relaxation.step(op, lo, hi)
    theirs = OPS[op].relax(node, lo, hi)
    x = points(lo, hi, gen, 200)
    for k, (s_c, b_c, s_e, b_e) in enumerate([(mine[0], mine[1], theirs[0], theirs[1]),
                                              (mine[2], mine[3], theirs[2], theirs[3])]):
        gap = ((s_c * x + b_c) - (s_e * x + b_e)).abs()
        scale = 1 + x.abs() * s_c.abs()
        assert bool((gap <= 1e-9 * scale).all()), f"{'upper' if k else 'lower'} lines differ"


def step_net(seed: int) -> Graph:
    """fc (wide) -> {floor, ceil, round, erf, relu} -> concat -> relu(fc) -> fc."""
    g = torch.Generator().manual_seed(seed)

    def lin(name, src, n_out, n_in, scale):
        w = torch.randn(n_out, n_in, generator=g, dtype=torch.float64) * scale / n_in ** 0.5
        bias = torch.randn(n_out, generator=g, dtype=torch.float64)
        return Node(name, "linear", (src,), (n_out,), {"weight": w, "bias": bias})

    nodes = (lin("fc", "x", 4, 3, 2.5), Node("f", "floor", ("fc",), (4,)), Node("c", "ceil", ("fc",), (4,)),
             Node("r", "round", ("fc",), (4,)), Node("e", "erf", ("fc",), (4,)), Node("re", "relu", ("fc",), (4,)),
             Node("cat", "concat", ("f", "c", "r", "e", "re"), (20,), attrs={"axis": 0}),
             lin("h", "cat", 6, 20, 1.0), Node("r2", "relu", ("h",), (6,)), lin("out", "r2", 2, 6, 1.0))
    return Graph("x", (3,), nodes, "out")


def test_checker_backward_through_step_ops_is_sound():
    assert {"floor", "ceil", "round", "erf"} <= set(BACKWARD) and {"floor", "ceil", "round", "erf"} <= SUPPORTED
    assert {"floor", "ceil", "round", "erf"} <= set(CHECK_RULES)
    for seed in (1, 2, 3):
        g = step_net(seed)
        bounds, empty = intermediate_bounds(g, Domains(torch.tensor(LO[None]), torch.tensor(HI[None])))
        assert not bool(empty.any())
        A = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)
        low = backward(g, "out", A, Pass(bounds))
        y, _ = cf.sample_outputs(g, LO, HI, 4000, seed)
        assert torch.isfinite(low).all()
        assert (np.concatenate([y, -y], 1) >= low.numpy() - 1e-9).all()


@pytest.fixture(scope="module")
def step_case():
    """A net with every step op and erf, a property that holds, and an input-split certificate."""
    graph = step_net(4)
    spec = cf.tight_spec(graph, LO, HI, 0.5, rows=(0, 1))
    builder = CertificateBuilder("m" * 64, "s" * 64)
    assert cf.prove_input_split(graph, spec, 14, builder)
    return graph, spec, builder.to_json()


def test_certificate_on_step_ops_accepted(step_case):
    graph, spec, cert = step_case
    report = check(graph, spec, cert, model_sha256="m" * 64, spec_sha256="s" * 64, strict=True)
    assert report.ok, report.reasons


def test_tampered_certificate_on_step_ops_rejected(step_case):
    graph, spec, cert = step_case
    bad = copy.deepcopy(cert)
    bad["proofs"][0]["tree"] = leaf(0, 1e-3)
    report = check(graph, spec, bad)
    if report.ok:       # the whole box may be provable at once; then a false property must fail
        from verifier.spec.spec import Polytope, Region, Spec

        y, _ = cf.sample_outputs(graph, LO, HI, 2000, 1)
        region = spec.regions[0]
        false = Spec(spec.n_inputs, spec.n_outputs,
                     (Region(region.lower, region.upper, (Polytope(region.unsafe[0].A, np.median(y, 0)),)),))
        report = check(graph, false, cert)
    assert not report.ok and report.reasons
