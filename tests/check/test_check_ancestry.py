"""Leaves re-derived along their split path (parent bounds intersected in), and partial re-checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import cert_factory as cf
from verifier.certificate import CertificateBuilder, input_split_tree, leaf
from verifier.check import check, leaf_bounds
from verifier.check.checker import Ancestry, _parent_bounds, domain_bounds, root_bounds
from verifier.check.tree import Leaf
from verifier.spec.spec import Polytope, Region, Spec

LO, HI = np.full(3, -1.0), np.full(3, 1.0)
ROOT = "proof (region 0, polytope 0)"


def _uniform(depth: int):
    """Every leaf of the tree that halves dim (level % 3) at each level: (path steps, lower, upper, where)."""
    out = [([], LO.copy(), HI.copy(), ROOT, {})]
    for level in range(depth):
        d, nxt = level % 3, []
        for steps, lo, hi, where, inner in out:
            at = float((lo[d] + hi[d]) / 2)
            inner = {**inner, where: (lo, hi, ())}
            nxt.append((steps + [(d, at, 0)], lo, np.where(np.arange(3) == d, at, hi), where + ".L", inner))
            nxt.append((steps + [(d, at, 1)], np.where(np.arange(3) == d, at, lo), hi, where + ".H", inner))
        out = nxt
    return out


def _values(graph, depth):
    """Per leaf of the uniform tree: lower bound of y0 with root bounds, and along the path."""
    g64 = graph.to(dtype=torch.float64)
    tree = _uniform(depth)
    inner = {k: v for *_, i in tree for k, v in i.items()}
    leaves = [Leaf(where, lo, hi, (), 0, 1.0) for _, lo, hi, where, _ in tree]
    A, b = np.array([[1.0, 0.0]]), np.zeros(1)
    root = root_bounds(g64, LO, HI)
    v_root = leaf_bounds(g64, A, b, leaves, root).numpy()
    parents = _parent_bounds(g64, leaves, Ancestry(ROOT, inner, root), None)
    v_path = np.array([float(leaf_bounds(g64, A, b, [lf], parents[lf.where[:-2]], tighten_all=True)[0])
                       for lf in leaves])
    return tree, v_root, v_path


def _certificate(tree, spec_b: float):
    """An input-split certificate of ``y0 <= spec_b`` over the uniform tree (claims are 1.0)."""
    spec = Spec(3, 2, (Region(LO, HI, (Polytope(np.array([[1.0, 0.0]]), np.array([spec_b])),)),))
    builder = CertificateBuilder("m" * 64, "s" * 64)
    builder.add_proof(0, 0, input_split_tree([(steps, leaf(0, 1e-6)) for steps, *_ in tree]))
    return spec, builder.to_json()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_path_bounds_are_sound_and_no_looser(seed):
    """Bounds on a depth-3 domain with its parent's bounds intersected contain every sampled value."""
    graph = cf.mlp(seed, 3, (12, 12, 12), 2)
    g64 = graph.to(dtype=torch.float64)
    tree = _uniform(3)
    inner = {k: v for *_, i in tree for k, v in i.items()}
    _, lo, hi, where, _ = tree[5]
    parents = _parent_bounds(g64, [Leaf(where, lo, hi, (), 0, 1.0)], Ancestry(ROOT, inner, root_bounds(g64, LO, HI)),
                             None)
    dom = [Leaf(where, lo, hi, (), 0, 1.0)]
    with_path, _ = domain_bounds(g64, dom, parents[where[:-2]], tighten_all=True)
    plain, _ = domain_bounds(g64, dom)
    _, values = cf.sample_outputs(graph, lo, hi, 3000, seed)
    for name, (l, u) in with_path.items():
        v = values[name].reshape(3000, -1)
        assert bool((v >= l.reshape(1, -1) - 1e-9).all() and (v <= u.reshape(1, -1) + 1e-9).all()), name
        assert bool((l >= plain[name][0] - 1e-9).all() and (u <= plain[name][1] + 1e-9).all()), name


def _sampled_min(graph):
    """(min sampled y0 over the region, the point)."""
    y, _ = cf.sample_outputs(graph, LO, HI, 20000, 0)
    rng = np.random.default_rng(0)
    x = rng.uniform(LO, HI, size=(20000, 3))
    x[: 2000] = np.where(rng.random((2000, 3)) < 0.5, LO, HI)
    return float(y[:, 0].min()), x[int(y[:, 0].argmin())]


def _holding(tree, x):
    """The leaf of the uniform tree whose box holds x."""
    return next(where for _, lo, hi, where, _ in tree if np.all(lo <= x) and np.all(x <= hi))


def test_weak_leaves_are_accepted_along_their_path():
    """A bound only the path re-derivation reaches is accepted; a violated property is rejected."""
    for seed in range(10):
        graph = cf.mlp(seed, 3, (16, 16, 16), 2)
        tree, v_root, v_path = _values(graph, 4)
        v_path = np.maximum(v_path, v_root)   # the checker keeps the better of the two (CROWN is not monotone)
        b = float(v_path.min()) - 1e-6
        if bool((v_root <= b).any()):
            break
    else:
        pytest.fail("no seed where the path re-derivation is needed")
    spec, cert = _certificate(tree, b)
    report = check(graph, spec, cert)
    assert report.ok, report.reasons
    low, x = _sampled_min(graph)
    spec, cert = _certificate(tree, low + 1e-3)   # a sampled point violates it
    report = check(graph, spec, cert)
    assert not report.ok and _holding(tree, x) in {leaf.where for _, _, leaf in report.weak}


def test_the_checker_subdivides_a_leaf_it_cannot_rederive_whole(monkeypatch):
    """A margin below every whole-leaf bound but above the true minimum is proved by bisecting the leaf."""
    import verifier.check.checker as checker

    graph = cf.mlp(4, 3, (16, 16, 16), 2)
    tree, v_root, v_path = _values(graph, 3)
    v_path = np.maximum(v_path, v_root)
    low, _ = _sampled_min(graph)
    assert float(v_path.min()) < low - 1e-3
    spec, cert = _certificate(tree, float(v_path.min()) + 0.1 * (low - float(v_path.min())))
    assert check(graph, spec, cert).ok
    monkeypatch.setattr(checker, "SUBDIVIDE_DEPTH", 0)
    report = check(graph, spec, cert)
    assert not report.ok and report.weak


def test_only_rederives_the_listed_subtrees():
    """``only`` skips leaves outside the listed paths; a failing leaf inside them is still rejected."""
    graph = cf.mlp(4, 3, (16, 16, 16), 2)
    tree, _, _ = _values(graph, 3)
    low, x = _sampled_min(graph)
    worst = _holding(tree, x)
    spec, cert = _certificate(tree, low + 1e-3)
    assert not check(graph, spec, cert).ok
    others = {where for *_, where, _ in tree if where != worst}
    report = check(graph, spec, cert, only=others)
    assert report.ok and report.leaves == len(tree)
    assert not check(graph, spec, cert, only={worst[:-2]}).ok


def test_a_whole_box_leaf_uses_the_region_bounds():
    """A one-leaf proof over the region box is judged from the region's own bounds: a margin below
    the re-derived bound is accepted, a violated property (sampled point) is rejected."""
    from verifier.check.checker import _whole_box_values

    graph = cf.mlp(1, 3, (12, 12), 2)
    g64 = graph.to(dtype=torch.float64)
    A, b = np.array([[1.0, 0.0]]), np.zeros(1)
    root = root_bounds(g64, LO, HI)
    whole = Leaf(ROOT, LO.copy(), HI.copy(), (), 0, 1.0)
    value = _whole_box_values(g64, A, b, [whole], root)[0]
    assert value == pytest.approx(float(leaf_bounds(g64, A, b, [whole], root)[0]), abs=1e-9)
    low, _ = _sampled_min(graph)
    assert value <= low
    for spec_b, ok in ((value - 1e-3, True), (low + 1e-3, False)):
        spec = Spec(3, 2, (Region(LO, HI, (Polytope(A, np.array([spec_b])),)),))
        builder = CertificateBuilder("m" * 64, "s" * 64)
        builder.add_proof(0, 0, leaf(0, 1e-6))
        assert check(graph, spec, builder.to_json()).ok is ok
