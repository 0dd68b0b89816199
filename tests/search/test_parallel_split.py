"""Input splitting continued in two processes: same verdicts, one joined proof the checker accepts."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from verifier.bounds import BoundEngine
from verifier.certify import certify
from verifier.config import BabConfig
from verifier.search.input_split import input_split
from verifier.spec.spec import Polytope, Region, Spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_falsify import _net_and_extremes, _validator  # noqa: E402

NOW = BabConfig(parallel_after=0.0)   # hand the pending domains to the workers after the first batch


def test_two_workers_prove_what_one_proves_and_the_joined_tree_checks():
    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin - 0.05]))
    engine = BoundEngine(graph)
    one = input_split(engine, graph, lower, upper, *poly, _validator(graph, [poly]), time.monotonic() + 60, NOW)
    two = input_split(engine, graph, lower, upper, *poly, _validator(graph, [poly]), time.monotonic() + 60, NOW,
                      workers=2)
    assert one.status == two.status == "holds"
    assert two.stats["workers"] == 2 and two.stats["chunks"] > 1
    spec = Spec(4, 2, (Region(lower, upper, (Polytope(*poly),)),))
    _, report = certify(graph, spec, "m", "s", [(0, 0, two.log.tree())], time.monotonic() + 60)
    assert report.ok, report.reasons
    assert report.leaves == len(two.log.leaves)


def test_a_worker_s_counterexample_is_returned():
    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin + 0.01]))
    engine = BoundEngine(graph)
    out = input_split(engine, graph, lower, upper, *poly, _validator(graph, [poly]), time.monotonic() + 60,
                      BabConfig(parallel_after=0.0, samples=0, local_share=0.0), workers=2)
    assert out.status == "violated"
    y = graph.to(dtype=torch.float64).forward(torch.as_tensor(out.counterexample)[None])[0].numpy()
    assert y[0] - y[1] <= dmin + 0.01


def test_workers_stop_at_the_deadline():
    """A property too tight to prove in 1.5 s: both processes stop and the outcome is a timeout."""
    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin - 1e-4]))
    t0 = time.monotonic()
    out = input_split(BoundEngine(graph), graph, lower, upper, *poly, lambda x: None, t0 + 1.5, NOW, workers=2)
    assert out.status == "timeout"
    assert time.monotonic() - t0 < 4.0


def test_no_worker_outlives_an_engine_deadline():
    """The engine itself stops at its deadline (``DeadlineReached``): the search ends in a timeout
    or that exception, and no forked worker is left running."""
    import multiprocessing

    from verifier.bounds import DeadlineReached

    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin - 1e-4]))
    engine = BoundEngine(graph)
    t0 = time.monotonic()
    engine.deadline = t0 + 1.0
    try:
        out = input_split(engine, graph, lower, upper, *poly, lambda x: None, t0 + 30, NOW, workers=2)
        assert out.status == "timeout"
    except DeadlineReached:
        pass
    time.sleep(0.2)
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]
    assert time.monotonic() - t0 < 5.0
