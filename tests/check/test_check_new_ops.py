"""The checker on nets with the nonlinear ops: interval rules, the box fallback, certificates."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import cert_factory as cf
from verifier.certificate import CertificateBuilder, leaf
from verifier.check import check
from verifier.check.crown import BACKWARD, Domains, Pass, backward, intermediate_bounds
from verifier.check.interval import INTERVAL
from verifier.model.graph import Graph, Node

LO, HI = np.full(3, -1.0), np.full(3, 1.0)


def _lin(name, src, n_out, n_in, g, scale=1.0):
    w = torch.randn(n_out, n_in, generator=g, dtype=torch.float64) * scale / n_in ** 0.5
    return Node(name, "linear", (src,), (n_out,), {"weight": w, "bias": torch.randn(n_out, generator=g, dtype=torch.float64) * 0.2})


def smooth_net(seed: int) -> Graph:
    """fc -> {pow2, sin, cos, relu(mul(fc, relu(fc))), reciprocal(exp + 1), sqrt(exp + 1)} -> concat -> relu -> fc."""
    g = torch.Generator().manual_seed(seed)
    one = {"scale": torch.ones(1, dtype=torch.float64), "bias": torch.ones(1, dtype=torch.float64)}
    nodes = (_lin("fc", "x", 4, 3, g, 1.5), Node("r", "relu", ("fc",), (4,)),
             Node("p", "pow", ("fc",), (4,), attrs={"exponent": 2}), Node("s", "sin", ("fc",), (4,)),
             Node("c", "cos", ("fc",), (4,)), Node("m", "mul", ("fc", "r"), (4,)),
             Node("e", "exp", ("fc",), (4,)), Node("e1", "affine", ("e",), (4,), one),
             Node("q", "reciprocal", ("e1",), (4,)), Node("sq", "sqrt", ("e1",), (4,)),
             Node("rm", "relu", ("m",), (4,)),      # a boxed node feeding a relu (checker tightening path)
             Node("cat", "concat", ("p", "s", "c", "rm", "q", "sq"), (24,), attrs={"axis": 0}),
             _lin("h", "cat", 6, 24, g), Node("r2", "relu", ("h",), (6,)), _lin("out", "r2", 2, 6, g))
    return Graph("x", (3,), nodes, "out")


@pytest.mark.parametrize("op,attrs", [("mul", {}), ("pow", {"exponent": 2}), ("pow", {"exponent": 3}), ("sin", {}),
                                      ("cos", {}), ("exp", {}), ("reciprocal", {}), ("sqrt", {})])
def test_interval_rules_enclose_samples(op, attrs):
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(1, 300, generator=gen, dtype=torch.float64) * 3
    w = torch.rand(1, 300, generator=gen, dtype=torch.float64) * 8
    lo, hi = c - w / 2, c + w / 2
    if op in ("reciprocal", "sqrt"):
        lo, hi = lo.abs() + 0.01, lo.abs() + 0.01 + w
    node = Node("y", op, ("a", "b") if op == "mul" else ("a",), (300,), attrs=attrs)
    ins = [(lo, hi), (hi - 4, hi)] if op == "mul" else [(lo, hi)]
    l, u = INTERVAL[op](node, ins)
    t = torch.rand(2000, 300, generator=gen, dtype=torch.float64)
    t[0], t[1] = 0.0, 1.0
    xs = [b[0] + t.flip(0) * (b[1] - b[0]) if k else b[0] + t * (b[1] - b[0]) for k, b in enumerate(ins)]
    from verifier.model.ops import FORWARD
    v = FORWARD[op](node, xs)
    assert bool((v >= l - 1e-12).all()) and bool((v <= u + 1e-12).all())


def test_sin_interval_over_wide_and_peak_intervals():
    node = Node("y", "sin", ("a",), (3,))
    l, u = INTERVAL["sin"](node, [(torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64),
                                  torch.tensor([[7.0, 2.0, 3.0]], dtype=torch.float64))])
    assert l[0, 0] == -1 and u[0, 0] == 1 and u[0, 1] == 1
    assert abs(l[0, 2] - math.sin(3.0)) < 1e-9 and abs(u[0, 2] - math.sin(2.0)) < 1e-9


def test_reciprocal_interval_touching_zero_is_unbounded():
    node = Node("y", "reciprocal", ("a",), (1,))
    l, u = INTERVAL["reciprocal"](node, [(torch.tensor([[-1.0]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64))])
    assert l.item() == -math.inf and u.item() == math.inf


def _lower_bounds_are_sound(graph):
    """The checker's CROWN lower bounds of +-y on the box [LO, HI] hold at sampled points."""
    g = graph.to(dtype=torch.float64)
    bounds, empty = intermediate_bounds(g, Domains(torch.tensor(LO[None]), torch.tensor(HI[None])))
    assert not bool(empty.any())
    A = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)
    low = backward(g, "out", A, Pass(bounds))
    y, _ = cf.sample_outputs(graph, LO, HI, 3000, 0)
    assert torch.isfinite(low).all()
    assert (np.concatenate([y, -y], 1) >= low.numpy() - 1e-9).all()
    return low


def test_checker_backward_rules_of_new_ops_are_sound():
    assert {"mul", "matmul", "pow", "sin", "cos", "exp", "reciprocal", "sqrt"} <= set(BACKWARD)
    _lower_bounds_are_sound(smooth_net(1))


def test_box_fallback_for_ops_without_a_backward_rule_is_sound(monkeypatch):
    for op in ("mul", "pow", "sin", "cos"):
        monkeypatch.delitem(BACKWARD, op)
    _lower_bounds_are_sound(smooth_net(1))


@pytest.fixture(scope="module")
def smooth_case():
    """A net with every new op, a property that holds, and an input-split certificate for it."""
    graph = smooth_net(2)
    spec = cf.tight_spec(graph, LO, HI, 0.8, rows=(0, 1))
    builder = CertificateBuilder("m" * 64, "s" * 64)
    assert cf.prove_input_split(graph, spec, 12, builder)
    return graph, spec, builder.to_json()


def test_certificate_on_new_ops_accepted(smooth_case):
    graph, spec, cert = smooth_case
    report = check(graph, spec, cert, model_sha256="m" * 64, spec_sha256="s" * 64, strict=True)
    assert report.ok, report.reasons
    assert report.leaves > 1


def test_tampered_certificate_on_new_ops_rejected(smooth_case):
    """The split proof replaced by one leaf claiming the whole box: the bound does not re-derive."""
    graph, spec, cert = smooth_case
    bad = copy.deepcopy(cert)
    bad["proofs"][0]["tree"] = leaf(0, 1e-3)
    report = check(graph, spec, bad)
    assert not report.ok and report.reasons


def test_certificate_against_a_false_property_rejected(smooth_case):
    """The valid tree checked against a spec that a sampled point violates."""
    from verifier.spec.spec import Polytope, Region, Spec

    graph, spec, cert = smooth_case
    y, _ = cf.sample_outputs(graph, LO, HI, 2000, 1)
    region = spec.regions[0]
    poly = region.unsafe[0]
    b = np.array([np.median(y[:, 0]), np.median(y[:, 1])])
    false = Spec(spec.n_inputs, spec.n_outputs, (Region(region.lower, region.upper, (Polytope(poly.A, b),)),))
    assert not check(graph, false, cert).ok
