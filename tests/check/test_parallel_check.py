"""Checking a large certificate in several processes: the same report as one process, and failures fail."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

import cert_factory as cf
import verifier.certify as certify_mod
from verifier.bounds import BoundEngine
from verifier.certify import _check_forked, certify, partition
from verifier.check.checker import _under
from verifier.config import BabConfig
from verifier.search.input_split import input_split
from verifier.spec.spec import Polytope, Region, Spec

LO, HI = np.full(3, -1.0), np.full(3, 1.0)


@pytest.fixture(scope="module")
def proof():
    """An input-split proof of a tight property of a 3-input net (a few hundred leaves)."""
    graph = cf.mlp(0, 3, (16, 16), 2)
    spec = cf.tight_spec(graph, LO, HI, 0.1, rows=(0,))
    poly = spec.regions[0].unsafe[0]
    out = input_split(BoundEngine(graph), graph, LO, HI, poly.A, poly.b, lambda x: None, time.monotonic() + 60,
                      BabConfig(samples=0, local_share=0.0))
    assert out.status == "holds" and len(out.log.leaves) >= 64
    return graph, spec, out.log.tree()


def _leaf_paths(tree: dict, root: str) -> list[str]:
    out, stack = [], [(tree, root)]
    while stack:
        node, path = stack.pop()
        if "leaf" in node:
            out.append(path)
        else:
            stack.extend((c, f"{path}.{s}") for c, s in zip(node["children"], ("L", "H")))
    return out


def test_partition_covers_every_leaf_once_and_balances(proof, monkeypatch):
    _, _, tree = proof
    paths = _leaf_paths(tree, "proof (region 0, polytope 0)")
    assert partition([(0, 0, tree)], 2) == []   # below PARALLEL_MIN_LEAVES
    monkeypatch.setattr(certify_mod, "PARALLEL_MIN_LEAVES", 8)
    parts = partition([(0, 0, tree)], 2)
    assert len(parts) == 2
    owners = [[k for k, part in enumerate(parts) if _under(p, part)] for p in paths]
    assert all(len(o) == 1 for o in owners)
    loads = np.bincount([o[0] for o in owners], minlength=2)
    assert loads.min() >= 0.35 * len(paths)


def test_two_processes_give_one_processs_verdict(proof, monkeypatch):
    graph, spec, tree = proof
    monkeypatch.setattr(certify_mod, "PARALLEL_MIN_LEAVES", 8)
    _, one = certify(graph, spec, "m", "s", [(0, 0, tree)])
    _, two = certify(graph, spec, "m", "s", [(0, 0, tree)], time.monotonic() + 60, workers=2)
    assert one.ok and two.ok and one.leaves == two.leaves
    # the same proof for a threshold above a sampled output (false): some leaves cannot re-derive > 0
    poly = spec.regions[0].unsafe[0]
    harder = Spec(3, 2, (Region(LO, HI, (Polytope(poly.A, poly.b + 0.2),)),))
    _, one = certify(graph, harder, "m", "s", [(0, 0, tree)])
    _, two = certify(graph, harder, "m", "s", [(0, 0, tree)], time.monotonic() + 60, workers=2)
    assert not one.ok and not two.ok and one.weak
    assert sorted(w.where for _, _, w in one.weak) == sorted(w.where for _, _, w in two.weak)
    assert one.failures == two.failures


def test_a_dead_worker_fails_the_check():
    def check_part(paths):
        if paths == {"crash"}:
            os._exit(3)
        return _ok_report()

    report = _check_forked(check_part, [{"here"}, {"crash"}], time.monotonic() + 30)
    assert not report.ok and report.failures == 1
    assert "worker process failed" in report.reasons[0]


def _ok_report():
    from verifier.check.checker import CheckReport

    return CheckReport(True, [], 10, 0.0)
