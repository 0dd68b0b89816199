"""CheckReport counts every failure, even when it lists only the first MAX_REASONS of them."""
import numpy as np
import torch

from verifier.certify import to_certificate
from verifier.check import check
from verifier.check.checker import MAX_REASONS
from verifier.model.graph import Graph, Node
from verifier.spec.spec import Polytope, Region, Spec


def uniform_tree(lo: float, hi: float, depth: int) -> dict:
    """Bisect input dim 0 of [lo, hi] ``depth`` times; every leaf claims row 0 is violated by 1.0."""
    if depth == 0:
        return {"leaf": {"row": 0, "bound": 1.0, "box": None, "alphas": {}, "betas": None}}
    mid = (lo + hi) / 2
    return {"split": {"kind": "input", "dim": 0, "at": mid},
            "children": [uniform_tree(lo, mid, depth - 1), uniform_tree(mid, hi, depth - 1)]}


def test_every_weak_leaf_is_reported_beyond_the_listed_reasons():
    graph = Graph("x", (1,), (Node("y", "linear", ("x",), (1,), {"weight": torch.ones(1, 1), "bias": None}),), "y")
    # unsafe: y <= 10, which every x in [0, 1] satisfies: no leaf can be proved
    spec = Spec(1, 1, (Region(np.zeros(1), np.ones(1), (Polytope([[1.0]], [10.0]),)),))
    report = check(graph, spec, to_certificate("m", "s", [(0, 0, uniform_tree(0.0, 1.0, 5))]))
    assert not report.ok
    assert report.failures == 32 == len(report.weak)
    assert len(report.reasons) == MAX_REASONS + 1
