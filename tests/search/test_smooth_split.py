"""Branch and bound on sigmoid / tanh pre-activation intervals: sound bounds, checked proofs, clear refusals."""
from __future__ import annotations

import copy
import json
import math
import time

import numpy as np
import pytest
import torch

from tests.check.cert_factory import write_chain_onnx
from verifier.bounds import BoundEngine
from verifier.certify import to_certificate
from verifier.check import check
from verifier.config import BabConfig, VerifyConfig
from verifier.model.graph import Graph, Node
from verifier.portfolio import verify
from verifier.search.smooth_split import _Domains, _with_betas, smooth_split
from verifier.spec.spec import Polytope, Region, Spec


def mlp(seed: int, act: str, sizes=(4, 12, 12, 2)) -> Graph:
    g = torch.Generator().manual_seed(seed)
    nodes, prev = [], "x"
    for k, (a, b) in enumerate(zip(sizes, sizes[1:])):
        W = torch.randn(b, a, generator=g) * 1.5 / a ** 0.5
        nodes.append(Node(f"l{k}", "linear", (prev,), (b,), {"weight": W, "bias": torch.randn(b, generator=g) * 0.3}))
        prev = f"l{k}"
        if k < len(sizes) - 2:
            nodes.append(Node(f"a{k}", act, (prev,), (b,)))
            prev = f"a{k}"
    return Graph("x", (sizes[0],), tuple(nodes), prev)


A = np.array([[1.0, -1.0]])
BOX = (-np.ones(4), np.ones(4))


def threshold(graph: Graph, frac: float) -> float:
    """A threshold ``frac`` of the range below the sampled minimum of y0 - y1 (so the property holds)."""
    xs = torch.rand(100_000, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    f = (graph.forward(xs) @ torch.tensor([1.0, -1.0])).numpy()
    return float(f.min() - frac * (f.max() - f.min()))


@pytest.fixture(scope="module")
def proof():
    """sigmoid 4-12-12-2: CROWN alone fails at the root, the interval splits prove it."""
    graph = mlp(2, "sigmoid")
    t = threshold(graph, 0.1)
    engine = BoundEngine(graph)
    root = engine.compute(torch.tensor(BOX[0][None], dtype=torch.float32), torch.tensor(BOX[1][None], dtype=torch.float32),
                          torch.tensor(A[None], dtype=torch.float32), method="crown")
    assert float(root.lower[0, 0]) < t                     # the search is needed
    out = smooth_split(engine, graph, *BOX, A, np.array([t]), time.monotonic() + 60, BabConfig())
    spec = Spec(4, 2, [Region(*BOX, [Polytope(A, np.array([t]))])])
    return graph, spec, out


def test_split_proof_is_checked_by_the_independent_checker(proof):
    graph, spec, out = proof
    assert out.status == "holds" and out.log.splits
    cert = to_certificate("m", "s", [(0, 0, out.log.tree())])
    report = check(graph, spec, cert)
    assert report.ok, report.reasons


def _cert(out):
    return json.loads(json.dumps(to_certificate("m", "s", [(0, 0, out.log.tree())]), default=float))


def _first_split(tree):
    stack = [tree]
    while stack:
        node = stack.pop()
        if "split" in node:
            return node
    raise AssertionError("no split")


@pytest.mark.parametrize("tamper", ["drop a subtree", "relu kind", "unknown node", "infinite point", "negative beta"])
def test_tampered_split_proofs_are_rejected(proof, tamper):
    graph, spec, out = proof
    cert = _cert(out)
    tree = cert["proofs"][0]["tree"]
    node = _first_split(tree)
    if tamper == "drop a subtree":
        node.clear()
        node.update({"leaf": {"row": 0, "bound": 1.0}})
    elif tamper == "relu kind":
        node["split"] = {"kind": "relu", "node": node["split"]["node"], "index": node["split"]["index"]}
    elif tamper == "unknown node":
        node["split"]["node"] = "l0"
    elif tamper == "infinite point":
        node["split"]["at"] = math.inf
    else:
        key = next((leaf["betas"] for leaf in _leaves(tree) if "betas" in leaf), None)
        if key is None:
            pytest.skip("this proof carries no betas")
        cert["arrays"][key]["data"] = [-1.0] * len(cert["arrays"][key]["data"]) if "data" in cert["arrays"][key] else None
        if cert["arrays"][key].get("data") is None:
            pytest.skip("arrays are not stored as plain lists")
    assert not check(graph, spec, cert).ok


def _leaves(tree):
    stack, out = [tree], []
    while stack:
        node = stack.pop()
        if "leaf" in node:
            out.append(node["leaf"])
        else:
            stack.extend(node.get("children", []))
    return out


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_split_domain_bounds_with_multipliers_hold_on_the_domain(act):
    """Random interval constraints and multipliers: the bound holds at every sampled point of the domain."""
    graph = mlp(3, act)
    engine = BoundEngine(graph)
    rng = np.random.default_rng(0)
    lo, hi = torch.tensor(BOX[0][None], dtype=torch.float32), torch.tensor(BOX[1][None], dtype=torch.float32)
    C = torch.tensor(A[None], dtype=torch.float32)
    xs = torch.rand(50_000, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    values = graph.forward(xs, keep=True)
    n = 6
    caps = {v: torch.full((n, 12), math.inf) for v in ("l0", "l1")}
    floors = {v: torch.full((n, 12), -math.inf) for v in ("l0", "l1")}
    for d in range(n):
        for v in caps:
            for k in rng.choice(12, 3, replace=False):
                at = float(np.quantile(values[v][:, k].numpy(), rng.uniform(0.2, 0.8)))
                (caps if rng.random() < 0.5 else floors)[v][d, k] = at
    known = {v: (floors[v], caps[v]) for v in caps}
    res = engine.compute(lo.expand(n, -1), hi.expand(n, -1), C.expand(n, -1, -1), method="crown", intermediate=known,
                         want_upper=False)
    batch = _Domains(floors, caps, list(range(n)), [1] * n)
    margin, _ = _with_betas(engine, res.intermediate, batch, lo, hi, C, torch.zeros(1), res.lower, {"l0": "a0", "l1": "a1"})
    f = (values["l2"] @ torch.tensor([1.0, -1.0]))
    for d in range(n):
        inside = torch.ones(len(xs), dtype=torch.bool)
        for v in caps:
            inside &= (values[v] <= caps[v][d]).all(1) & (values[v] >= floors[v][d]).all(1)
        if inside.any():
            assert float(margin[d, 0]) <= float(f[inside].min()) + 1e-4


def test_verify_routes_sigmoid_networks_to_interval_splitting_and_checks_the_proof(tmp_path):
    graph = mlp(2, "sigmoid", sizes=(20, 12, 12, 2))
    xs = torch.rand(50_000, 20, generator=torch.Generator().manual_seed(0)) * 0.2 - 0.1
    f = (graph.forward(xs) @ torch.tensor([1.0, -1.0])).numpy()
    spec = Spec(20, 2, [Region(-0.1 * np.ones(20), 0.1 * np.ones(20), [Polytope(A, np.array([f.min() - 0.05]))])])
    result = verify(write_chain_onnx(graph, tmp_path / "s.onnx"), spec, VerifyConfig(timeout=30))
    assert result.route == "smooth-bab"
    assert result.verdict.value in ("holds", "timeout", "unknown"), result.reason   # the sampled min is above b
    if result.verdict.value == "holds":
        assert result.certificate_checked


def test_a_network_without_smooth_activations_is_unknown_with_a_reason():
    nodes = (Node("l0", "linear", ("x",), (2,), {"weight": torch.eye(2), "bias": None}),)
    graph = Graph("x", (2,), nodes, "l0")
    out = smooth_split(BoundEngine(graph), graph, -np.ones(2), np.ones(2), A, np.array([5.0]), time.monotonic() + 5,
                       BabConfig())
    assert out.status == "unknown" and "no sigmoid" in out.stats["note"]
