"""The checker accepts valid certificates and rejects each kind of tampering with a clear reason."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import cert_factory as cf
from verifier.certificate import CertificateBuilder, decode_array, encode_array
from verifier.check import check
from verifier.model.graph import Graph, Node

LO, HI = np.full(3, -1.0), np.full(3, 1.0)


@pytest.fixture(scope="module")
def input_case():
    """A 3-10-10-2 relu MLP, a tight property, and an input-split certificate for it."""
    graph = cf.mlp(0, 3, (10, 10), 2)
    spec = cf.tight_spec(graph, LO, HI, 0.05, rows=(0, 1))
    builder = CertificateBuilder("m" * 64, "s" * 64)
    assert cf.prove_input_split(graph, spec, 14, builder)
    return graph, spec, builder.to_json()


@pytest.fixture(scope="module")
def relu_case():
    """A 2-6-6-2 relu MLP and a ReLU-split certificate with betas (and float16 alphas)."""
    graph = cf.mlp(3, 2, (6, 6), 2)
    spec = cf.tight_spec(graph, LO[:2], HI[:2], 0.6)
    builder = CertificateBuilder("m" * 64, "s" * 64)
    assert cf.prove_relu_split(graph, spec, 16, builder)
    return graph, spec, builder.to_json()


def _leaves(tree: dict) -> list[dict]:
    """Leaf bodies in depth-first order."""
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        if "leaf" in node:
            out.append(node["leaf"])
        else:
            stack.extend(reversed(node["children"]))
    return out


def _splits(tree: dict, kind: str) -> list[dict]:
    """Split nodes of one kind."""
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        if "split" in node:
            if node["split"]["kind"] == kind:
                out.append(node)
            stack.extend(node["children"])
    return out


def _rejected(graph, spec, cert, needle: str, **kw) -> None:
    report = check(graph, spec, cert, **kw)
    assert not report.ok
    assert any(needle in r for r in report.reasons), report.reasons


def test_input_split_certificate_accepted(input_case):
    graph, spec, cert = input_case
    report = check(graph, spec, cert, model_sha256="m" * 64, spec_sha256="s" * 64, strict=True)
    assert report.ok, report.reasons
    assert report.leaves == len(_leaves(cert["proofs"][0]["tree"])) > 1
    assert report.notes == []


def test_relu_split_certificate_with_betas_accepted(relu_case):
    graph, spec, cert = relu_case
    tree = cert["proofs"][0]["tree"]
    assert _splits(tree, "relu"), "the generator should have split relus"
    betas = [decode_array(cert["arrays"][lf["betas"]]) for lf in _leaves(tree) if lf["betas"]]
    assert any(b.max() > 0 for b in betas), "some leaf should need a positive beta"
    report = check(graph, spec, cert, strict=True)
    assert report.ok, report.reasons


def test_relu_split_certificate_fails_without_its_betas(relu_case):
    """The betas matter: zeroing them makes some leaf fail (so the acceptance above used them)."""
    graph, spec, cert = relu_case
    bad = copy.deepcopy(cert)
    for key in {lf["betas"] for lf in _leaves(bad["proofs"][0]["tree"]) if lf["betas"]}:
        n = len(decode_array(bad["arrays"][key]))
        bad["arrays"][key] = encode_array(np.zeros(n))
    _rejected(graph, spec, bad, "is not > 0")


@pytest.mark.parametrize("net", ["cnn", "residual", "mixed"])
def test_other_architectures_accepted(net):
    """Input-split certificates on conv/maxpool, residual, and sigmoid/tanh/gather/concat graphs."""
    graph = {"cnn": cf.cnn, "residual": cf.residual, "mixed": cf.mixed}[net](8)
    lo = np.random.default_rng(0).normal(size=graph.n_inputs) * 0.3
    spec = cf.tight_spec(graph, lo - 0.02, lo + 0.02, 0.05)
    builder = CertificateBuilder("m", "s")
    assert cf.prove_input_split(graph, spec, 12, builder)
    report = check(graph, spec, builder.to_json(), strict=True)
    assert report.ok, report.reasons


def test_wrong_hashes_rejected(input_case):
    graph, spec, cert = input_case
    _rejected(graph, spec, cert, "model sha256 mismatch", model_sha256="0" * 64)
    _rejected(graph, spec, cert, "spec sha256 mismatch", spec_sha256="0" * 64)


def _perturbed(graph: Graph, node: str, delta: float) -> Graph:
    """The same graph with one weight of ``node`` changed by ``delta``."""
    nodes = []
    for n in graph.nodes:
        params = dict(n.params)
        if n.name == node:
            w = params["weight"].clone()
            w.view(-1)[0] += delta
            params["weight"] = w
        nodes.append(Node(n.name, n.op, n.inputs, n.shape, params, n.attrs))
    return Graph(graph.input_name, graph.input_shape, tuple(nodes), graph.output_name)


def test_changed_weights_with_the_same_hash_field_fail_rederivation(input_case):
    """The hash field cannot vouch for a graph: bounds are re-derived on the graph actually given."""
    graph, spec, cert = input_case
    _rejected(_perturbed(graph, "out", -0.3), spec, cert, "is not > 0", model_sha256="m" * 64)


def test_dropped_leaf_rejected(input_case):
    graph, spec, cert = input_case
    bad = copy.deepcopy(cert)
    _splits(bad["proofs"][0]["tree"], "input")[-1]["children"].pop()
    _rejected(graph, spec, bad, "exactly 2 children")


def test_shrunk_leaf_box_rejected(input_case):
    graph, spec, cert = input_case
    bad = copy.deepcopy(cert)
    body = _leaves(bad["proofs"][0]["tree"])[0]
    lower = decode_array(bad["arrays"][body["box"][0]])
    bad["arrays"]["shrunk"] = encode_array(lower + 1e-3, "float64")
    body["box"][0] = "shrunk"
    _rejected(graph, spec, bad, "leaf box lower differs")


def test_moved_split_point_outside_the_box_rejected(input_case):
    graph, spec, cert = input_case
    bad = copy.deepcopy(cert)
    node = _splits(bad["proofs"][0]["tree"], "input")[0]
    node["split"]["at"] = 5.0
    _rejected(graph, spec, bad, "not strictly inside")


def test_flipped_children_rejected(input_case):
    graph, spec, cert = input_case
    bad = copy.deepcopy(cert)
    node = _splits(bad["proofs"][0]["tree"], "input")[0]
    node["children"].reverse()
    _rejected(graph, spec, bad, "differs from the box derived")


def test_flipped_relu_children_rejected(relu_case):
    """Swapping inactive/active children puts leaves on domains they do not prove."""
    graph, spec, cert = relu_case
    bad = copy.deepcopy(cert)
    _splits(bad["proofs"][0]["tree"], "relu")[0]["children"].reverse()
    _rejected(graph, spec, bad, "is not > 0")


def test_overclaimed_bound(input_case):
    """Strict mode rejects a claim above the re-derived bound; the default accepts it with a note."""
    graph, spec, cert = input_case
    bad = copy.deepcopy(cert)
    body = _leaves(bad["proofs"][0]["tree"])[0]
    body["bound"] = body["bound"] * 1.5 + 0.1
    _rejected(graph, spec, bad, "exceeds the re-derived", strict=True)
    lenient = check(graph, spec, bad)
    assert lenient.ok and any("exceeds the re-derived" in n for n in lenient.notes)


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan")])
def test_alpha_out_of_range_rejected(relu_case, value):
    graph, spec, cert = relu_case
    bad = copy.deepcopy(cert)
    body = _leaves(bad["proofs"][0]["tree"])[0]
    node = next(n for n in graph.nodes if n.op == "relu")
    alphas = np.full(node.shape, 0.5)
    alphas[0] = value
    bad["arrays"]["evil"] = encode_array(alphas, "float32")
    body["alphas"] = {node.name: "evil"}
    _rejected(graph, spec, bad, "outside [0, 1]")


def test_negative_beta_rejected(relu_case):
    graph, spec, cert = relu_case
    bad = copy.deepcopy(cert)
    body = next(lf for lf in _leaves(bad["proofs"][0]["tree"]) if lf["betas"])
    betas = decode_array(bad["arrays"][body["betas"]]).copy()
    betas[0] = -0.01
    bad["arrays"]["evil"] = encode_array(betas, "float32")
    body["betas"] = "evil"
    _rejected(graph, spec, bad, "betas must be finite and >= 0")


def test_missing_and_duplicate_proofs_rejected(input_case):
    graph, spec, cert = input_case
    bad = copy.deepcopy(cert)
    bad["proofs"] = []
    _rejected(graph, spec, bad, "no proof for (region, polytope) (0, 0)")
    bad["proofs"] = cert["proofs"] * 2
    _rejected(graph, spec, bad, "two proofs")


@pytest.mark.parametrize("field, value, needle", [
    ("format", "other", "not an nnverify-certificate"), ("version", 2, "version 2 is not supported"),
    ("verdict", "violated", "only 'holds'")])
def test_header_rejected(input_case, field, value, needle):
    graph, spec, cert = input_case
    _rejected(graph, spec, {**cert, field: value}, needle)


@pytest.mark.parametrize("split, needle", [
    ({"kind": "relu", "node": "fc0", "index": 0}, "not a relu node"),
    ({"kind": "relu", "node": "act0", "index": 10}, "is not in [0, 10)"),
    ({"kind": "input", "dim": 3, "at": 0.0}, "dim 3 is not in"),
    ({"kind": "cut", "dim": 0}, "unknown split")])
def test_bad_splits_rejected(input_case, split, needle):
    graph, spec, cert = input_case
    bad = copy.deepcopy(cert)
    bad["proofs"][0]["tree"] = {"split": split, "children": [bad["proofs"][0]["tree"]] * 2}
    _rejected(graph, spec, bad, needle)


def test_same_neuron_split_twice_rejected(input_case):
    graph, spec, cert = input_case
    bad = copy.deepcopy(cert)
    inner = {"split": {"kind": "relu", "node": "act0", "index": 1}, "children": [cert["proofs"][0]["tree"]] * 2}
    bad["proofs"][0]["tree"] = {"split": {"kind": "relu", "node": "act0", "index": 1}, "children": [inner, inner]}
    _rejected(graph, spec, bad, "split twice on one path")


def test_unknown_array_and_bad_leaf_rejected(input_case):
    graph, spec, cert = input_case
    bad = copy.deepcopy(cert)
    _leaves(bad["proofs"][0]["tree"])[0]["box"] = ["nope", "nope"]
    _rejected(graph, spec, bad, "array key 'nope'")
    bad = copy.deepcopy(cert)
    _leaves(bad["proofs"][0]["tree"])[0]["row"] = 7
    _rejected(graph, spec, bad, "leaf row 7")
    bad = copy.deepcopy(cert)
    _leaves(bad["proofs"][0]["tree"])[0]["bound"] = -1.0
    _rejected(graph, spec, bad, "not a finite number > 0")


def test_unsupported_op_rejected(input_case):
    graph, spec, cert = input_case
    nodes = graph.nodes[:-1] + (Node("sg", "sign", (graph.nodes[-2].name,), graph.nodes[-2].shape),
                                Node(graph.nodes[-1].name, "linear", ("sg",), graph.nodes[-1].shape,
                                     graph.nodes[-1].params))
    odd = Graph(graph.input_name, graph.input_shape, nodes, graph.output_name)
    _rejected(odd, spec, cert, "checker does not support op sign")


def test_float64_graph_gives_the_same_verdict(input_case):
    """A float32 graph is checked in float64 (the report does not depend on the graph's dtype)."""
    graph, spec, cert = input_case
    assert check(graph.to(dtype=torch.float64), spec, cert).ok
