"""Soundness of the checker's own CROWN: sampled outputs never fall below the derived lower bounds."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import cert_factory as cf
from verifier.check import leaf_bounds, relaxation
from verifier.check.crown import Domains, intermediate_bounds
from verifier.check.tree import Leaf, Split
from verifier.model.graph import Graph, Node

NETS = {
    "mlp_relu": lambda: cf.mlp(1, 3, (10, 8), 3),
    "mlp_leaky": lambda: cf.mlp(2, 3, (10, 8), 3, "leaky_relu"),
    "mlp_sigmoid": lambda: cf.mlp(3, 3, (10, 8), 3, "sigmoid"),
    "mlp_tanh": lambda: cf.mlp(4, 3, (10, 8), 3, "tanh"),
    "cnn": lambda: cf.cnn(5),
    "residual": lambda: cf.residual(6),
    "mixed": lambda: cf.mixed(7),
    "pools": lambda: cf.pools(9),
}


def _box(graph: Graph, seed: int, width: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=graph.n_inputs) * 0.5
    return centre - width, centre + width


def _rows(graph: Graph, seed: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, graph.n_outputs)), rng.normal(size=m) * 0.1


def _random_alphas(graph: Graph, rng) -> dict[str, np.ndarray]:
    return {n.name: rng.uniform(0, 1, size=n.shape) for n in graph.nodes if n.op == "relu"}


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("width", [0.1, 1.0])
def test_lower_bound_below_every_sample(name, width):
    """No sampled A_i f(x) - b_i is below the bound, with default and with random alphas."""
    graph = NETS[name]()
    lo, hi = _box(graph, 11, width)
    A, b = _rows(graph, 12, 4)
    y, _ = cf.sample_outputs(graph, lo, hi, 3000, 13)
    truth = (y @ A.T - b).min(0)
    rng = np.random.default_rng(14)
    for alphas in ({}, _random_alphas(graph, rng)):
        leaves = [Leaf("t", lo, hi, (), r, 1.0, alphas) for r in range(len(b))]
        derived = leaf_bounds(graph.to(dtype=torch.float64), A, b, leaves).numpy()
        assert np.all(derived <= truth + 1e-9), (derived, truth)
        assert np.all(np.isfinite(derived))


@pytest.mark.parametrize("name", sorted(NETS))
def test_intermediate_bounds_enclose_samples(name):
    """Every value of every sample lies inside the propagated interval."""
    graph = NETS[name]()
    lo, hi = _box(graph, 21, 0.7)
    _, values = cf.sample_outputs(graph, lo, hi, 2000, 22)
    shape = (1,) + graph.input_shape
    dom = Domains(torch.tensor(lo).reshape(shape), torch.tensor(hi).reshape(shape))
    bounds, empty = intermediate_bounds(graph.to(dtype=torch.float64), dom)
    assert not empty.any()
    for key, (l, u) in bounds.items():
        v = values[key]
        assert torch.all(v >= l - 1e-9) and torch.all(v <= u + 1e-9), key


def _split_case(graph: Graph, seed: int):
    """Two relu neurons of a random box that samples put on both sides, and the samples."""
    lo, hi = _box(graph, seed, 1.0)
    y, values = cf.sample_outputs(graph, lo, hi, 6000, seed + 1)
    relus = [n for n in graph.nodes if n.op == "relu"]
    picks = []
    for node in relus[:2]:
        z = values[node.inputs[0]].reshape(len(y), -1)
        mixed = torch.nonzero((z > 0).any(0) & (z < 0).any(0)).flatten()
        picks.append((node, int(mixed[0])))
    return lo, hi, y, values, picks


@pytest.mark.parametrize("name", ["mlp_relu", "residual", "cnn"])
@pytest.mark.parametrize("signs", [(-1, -1), (-1, 1), (1, -1), (1, 1)])
def test_bound_with_splits_below_samples_in_the_domain(name, signs):
    """With two relu splits and random betas >= 0, the bound is below every sample meeting the splits."""
    graph = NETS[name]()
    lo, hi, y, values, picks = _split_case(graph, 31)
    keep = torch.ones(len(y), dtype=torch.bool)
    splits = []
    for (node, index), s in zip(picks, signs):
        z = values[node.inputs[0]].reshape(len(y), -1)[:, index]
        keep &= (z <= 0) if s < 0 else (z >= 0)
        splits.append(Split(node.name, index, s))
    A, b = _rows(graph, 32, 3)
    rng = np.random.default_rng(33)
    for betas in (None, rng.uniform(0, 2, size=2), np.array([5.0, 0.0])):
        leaves = [Leaf("t", lo, hi, tuple(splits), r, 1.0, _random_alphas(graph, rng), betas) for r in range(3)]
        derived = leaf_bounds(graph.to(dtype=torch.float64), A, b, leaves).numpy()
        assert keep.any(), "the split domain should contain samples"
        truth = (y[keep.numpy()] @ A.T - b).min(0)
        assert np.all(derived <= truth + 1e-9), (derived, truth)


def _beta_net() -> Graph:
    """y = x + 0 * relu(x) on x in [-1, 1]: the split on relu r is z = x <= 0 or >= 0."""
    one = torch.ones(1, 1)
    nodes = (Node("h", "linear", ("x",), (1,), {"weight": one, "bias": torch.zeros(1)}),
             Node("r", "relu", ("h",), (1,)),
             Node("zero", "affine", ("r",), (1,), {"scale": torch.zeros(1), "bias": torch.zeros(1)}),
             Node("y", "add", ("h", "zero"), (1,)))
    return Graph("x", (1,), nodes, "y")


@pytest.mark.parametrize("beta, expected", [(0.0, -0.5), (0.5, 0.0), (1.0, 0.5), (2.0, -0.5)])
def test_beta_sign_convention_inactive(beta, expected):
    """Objective 0.5 - y on {z <= 0}: the Lagrangian adds +beta*z, giving 0.5 + (beta - 1) * x >= ..."""
    graph = _beta_net()
    lo, hi = np.array([-1.0]), np.array([1.0])
    leaf = Leaf("t", lo, hi, (Split("r", 0, -1),), 0, 1.0, {}, np.array([beta]))
    assert _backward_only(graph, np.array([[-1.0]]), np.array([-0.5]), leaf) == pytest.approx(expected)


@pytest.mark.parametrize("beta, expected", [(0.0, -0.5), (1.0, 0.5), (3.0, -1.5)])
def test_beta_sign_convention_active(beta, expected):
    """Objective 0.5 + y on {z >= 0}: the Lagrangian adds -beta*z, giving 0.5 + (1 - beta) * x >= ..."""
    graph = _beta_net()
    lo, hi = np.array([-1.0]), np.array([1.0])
    leaf = Leaf("t", lo, hi, (Split("r", 0, +1),), 0, 1.0, {}, np.array([beta]))
    assert _backward_only(graph, np.array([[1.0]]), np.array([-0.5]), leaf) == pytest.approx(expected)


def _backward_only(graph: Graph, A, b, leaf: Leaf) -> float:
    """The objective's backward pass alone (the row bound also takes the output's interval, which
    on this net is exact under the split and would hide the betas)."""
    from verifier.check.checker import domain_bounds
    from verifier.check.crown import Pass, backward

    g = graph.to(dtype=torch.float64)
    bounds, _, (alphas, (betas, _)) = domain_bounds(g, [leaf], with_params=True)
    rows = torch.tensor(A[leaf.row:leaf.row + 1]).reshape(1, 1, -1)
    return float(backward(g, g.output_name, rows, Pass(bounds, alphas, betas))[0, 0]) - float(b[leaf.row])


def test_contradicting_split_makes_domain_empty_and_only_that_one():
    """On x in [0.5, 1], z = x <= 0 is impossible (+inf), z >= 0 is the whole box (finite bound)."""
    graph = _beta_net()
    lo, hi = np.array([0.5]), np.array([1.0])
    leaves = [Leaf("t", lo, hi, (Split("r", 0, s),), 0, 1.0) for s in (-1, +1)]
    got = leaf_bounds(graph.to(dtype=torch.float64), np.array([[1.0]]), np.array([0.0]), leaves).numpy()
    assert math.isinf(got[0]) and got[0] > 0
    assert got[1] == pytest.approx(0.5)


def test_touching_split_is_not_empty():
    """On x in [0, 1], z <= 0 still contains x = 0: the domain is a point, not empty."""
    graph = _beta_net()
    leaf = Leaf("t", np.array([0.0]), np.array([1.0]), (Split("r", 0, -1),), 0, 1.0)
    got = leaf_bounds(graph.to(dtype=torch.float64), np.array([[1.0]]), np.array([0.0]), [leaf]).item()
    assert math.isfinite(got) and got <= 0.0


RELAX = {
    "relu": lambda l, u: relaxation.relu(l, u, torch.rand(l.shape, generator=torch.Generator().manual_seed(0),
                                                          dtype=l.dtype)),
    "leaky_0.1": lambda l, u: relaxation.leaky_relu(l, u, 0.1),
    "leaky_2.0": lambda l, u: relaxation.leaky_relu(l, u, 2.0),
    "sigmoid": relaxation.sigmoid,
    "tanh": relaxation.tanh,
}
FN = {"relu": torch.relu, "leaky_0.1": lambda z: torch.where(z >= 0, z, 0.1 * z),
      "leaky_2.0": lambda z: torch.where(z >= 0, z, 2.0 * z), "sigmoid": torch.sigmoid, "tanh": torch.tanh}


@pytest.mark.parametrize("name", sorted(RELAX))
def test_relaxation_lines_enclose_the_function(name):
    """lw*z + lb <= f(z) <= uw*z + ub at many points of many random (also tiny and one-signed) intervals."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(400, generator=g, dtype=torch.float64) * 4
    w = torch.rand(400, generator=g, dtype=torch.float64) * torch.tensor([1e-12, 1e-3, 1.0, 8.0]).repeat(100)
    l, u = a - w, a + w
    lw, lb, uw, ub = RELAX[name](l, u)
    t = torch.linspace(0, 1, 101, dtype=torch.float64).unsqueeze(1)
    z = l + t * (u - l)
    f = FN[name](z)
    assert torch.all(lw * z + lb <= f + 1e-12) and torch.all(f <= uw * z + ub + 1e-12)


@pytest.mark.parametrize("name", ["pools", "cnn"])
def test_maxpool_is_tight_on_tiny_boxes(name):
    """When one window element dominates, maxpool is exact: tiny boxes give near-exact bounds."""
    graph = NETS[name]()
    lo, hi = _box(graph, 41, 1e-6)
    A, b = np.eye(graph.n_outputs), np.zeros(graph.n_outputs)
    y, _ = cf.sample_outputs(graph, lo, hi, 500, 42)
    leaves = [Leaf("t", lo, hi, (), r, 1.0) for r in range(graph.n_outputs)]
    derived = leaf_bounds(graph.to(dtype=torch.float64), A, b, leaves).numpy()
    assert np.all(derived <= y.min(0) + 1e-12) and np.all(derived >= y.min(0) - 1e-4)


def test_a_row_takes_the_better_of_backward_pass_and_output_intervals():
    """The row bound is max(backward pass, row applied to the output's interval), below every sample.

    On ``_beta_net`` under the split z <= 0 (beta 0), the output's interval [-1, 0] gives
    0.5 - y >= 0.5 while the backward pass gives -0.5; on random nets the two are compared as is.
    """
    from verifier.check.crown import Pass, backward

    leaf = Leaf("t", np.array([-1.0]), np.array([1.0]), (Split("r", 0, -1),), 0, 1.0, {}, np.array([0.0]))
    A, b = np.array([[-1.0]]), np.array([-0.5])
    assert _backward_only(_beta_net(), A, b, leaf) == pytest.approx(-0.5)
    assert leaf_bounds(_beta_net().to(dtype=torch.float64), A, b, [leaf]).item() == pytest.approx(0.5)
    graph = cf.mlp(1, 3, (10, 8), 3).to(dtype=torch.float64)
    A, b = np.array([[1.0, -1.0, 0.0]]), np.array([0.0])
    for seed in range(5):
        lo, hi = _box(graph, seed, 0.05)
        box = [torch.tensor(v).reshape(1, -1) for v in (lo, hi)]
        bounds, _ = intermediate_bounds(graph, Domains(*box, {}, {}))
        back = float(backward(graph, graph.output_name, torch.tensor(A).reshape(1, 1, -1), Pass(bounds))[0, 0])
        l, u = (t[0].numpy() for t in bounds[graph.output_name])
        interval = float(np.sum(np.where(A[0] > 0, A[0] * l, A[0] * u)))
        value = float(leaf_bounds(graph, A, b, [Leaf("t", lo, hi, (), 0, 1.0)])[0])
        assert value == pytest.approx(max(back, interval), abs=1e-12)
        y, _ = cf.sample_outputs(graph, lo, hi, 2000, seed)
        assert value <= (y @ A.T).min() + 1e-9
