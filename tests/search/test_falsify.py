"""Input splitting's counterexample hunt: local search, probes of the open boxes, other polytopes."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from verifier.bounds import BoundEngine
from verifier.config import BabConfig
from verifier.search.input_split import CounterexampleHunt, input_split
from verifier.search.local import evolve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exact"))
from milp_nets import mlp  # noqa: E402


def _slab(x: torch.Tensor) -> torch.Tensor:
    """A margin <= 0 only in a slab 0.004 wide along x0 and 0.2 wide along x1 of the unit square."""
    return torch.maximum((x[:, 0] - 0.6137).abs() - 0.002, 0.01 * ((x[:, 1] - 0.3).abs() - 0.1))


def test_evolve_finds_a_thin_slab_and_reports_what_on_step_returns():
    lo, hi = torch.zeros(2), torch.ones(2)
    gen = torch.Generator().manual_seed(0)
    starts = torch.rand((32, 2), generator=gen)
    assert bool((_slab(starts) > 0).all())
    seen = []

    def on_step(points, margins):
        seen.append(bool(((points >= lo) & (points <= hi)).all()))
        hit = torch.nonzero(margins <= 0).flatten()
        return points[hit[0]] if len(hit) else None

    found = evolve(_slab, starts, lo, hi, 200, 16, gen, on_step)
    assert found is not None and float(_slab(found[None])[0]) <= 0
    assert all(seen)   # every offspring was clipped into the box


def test_evolve_gives_up_without_a_violation_and_at_the_deadline():
    lo, hi = torch.zeros(2), torch.ones(2)
    gen = torch.Generator().manual_seed(1)
    starts = torch.rand((8, 2), generator=gen)
    calls = []
    positive = lambda x: x.sum(dim=1) + 1.0
    assert evolve(positive, starts, lo, hi, 5, 4, gen, lambda p, m: calls.append(len(p))) is None
    assert calls == [32] * 5
    calls.clear()
    assert evolve(_slab, starts, lo, hi, 50, 4, gen, lambda p, m: calls.append(1), deadline=time.monotonic() - 1) is None
    assert calls == []


def _net_and_extremes():
    """A 4-input net, the unit box around 0, and the (sampled) min and max of y0 - y1 over it."""
    graph = mlp(5, 4, (16, 16), 2)
    lower, upper = -np.ones(4), np.ones(4)
    x = torch.as_tensor(np.random.default_rng(0).uniform(lower, upper, (20000, 4)), dtype=torch.float32)
    d = (graph.forward(x) @ torch.tensor([1.0, -1.0]))
    return graph, lower, upper, float(d.min()), float(d.max())


def _validator(graph, polytopes):
    g64 = graph.to(dtype=torch.float64)

    def validate(x):
        y = g64.forward(torch.as_tensor(np.asarray(x, dtype=np.float64))[None])[0].numpy()
        return x if any(np.all(A @ y <= b) for A, b in polytopes) else None

    return validate


def test_a_counterexample_of_another_polytope_settles_the_search():
    """Proving y0 - y1 > min - 1 (true) while y0 - y1 <= min + 0.1 is reachable: with ``falsify``
    naming both polytopes the search returns a witness of the second; without, it proves the first."""
    graph, lower, upper, dmin, _ = _net_and_extremes()
    c = np.array([[1.0, -1.0]])
    safe, unsafe = (c, np.array([dmin - 1.0])), (c, np.array([dmin + 0.1]))
    validate = _validator(graph, [safe, unsafe])
    engine = BoundEngine(graph)
    alone = input_split(engine, graph, lower, upper, *safe, validate, time.monotonic() + 30, BabConfig())
    assert alone.status == "holds"
    both = input_split(engine, graph, lower, upper, *safe, validate, time.monotonic() + 30, BabConfig(),
                       falsify=[safe, unsafe])
    assert both.status == "violated"
    y = graph.to(dtype=torch.float64).forward(torch.as_tensor(both.counterexample)[None])[0].numpy()
    assert float(c[0] @ y) <= dmin + 0.1


def test_local_search_finds_a_small_violating_set():
    """Only inputs within 0.002 of the sampled minimum of y0 - y1 violate; a round of local search
    (fresh starts, no kept points yet) still finds one, and onnxruntime's stand-in confirms it."""
    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin + 0.002]))
    lo, hi = torch.tensor(lower, dtype=torch.float32)[None], torch.tensor(upper, dtype=torch.float32)[None]
    hunt = CounterexampleHunt(graph, lo, hi, [poly], _validator(graph, [poly]), BabConfig(local_steps=60),
                     time.monotonic() + 30)
    for _ in range(5):
        cex = hunt.local_search()
        if cex is not None:
            break
    assert cex is not None and hunt.rounds >= 1 and hunt.spent > 0
    y = graph.to(dtype=torch.float64).forward(torch.as_tensor(cex)[None])[0].numpy()
    assert float(y[0] - y[1]) <= dmin + 0.002


def test_probed_points_are_kept_lowest_first():
    graph, lower, upper, _, dmax = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmax + 5.0]))   # everything violates: offer validates
    lo, hi = torch.tensor(lower, dtype=torch.float32)[None], torch.tensor(upper, dtype=torch.float32)[None]
    never = CounterexampleHunt(graph, lo, hi, [poly], lambda x: None, BabConfig(), time.monotonic() + 30)
    x = torch.rand((200, 4)) * 2 - 1
    assert never.offer(x, never.margin(x)) is None
    assert len(never.pool_x) == CounterexampleHunt.KEEP
    assert torch.equal(never.pool_m, torch.sort(never.margin(x)).values[:CounterexampleHunt.KEEP])
    always = CounterexampleHunt(graph, lo, hi, [poly], lambda x: x, BabConfig(), time.monotonic() + 30)
    assert always.offer(x, always.margin(x)) is not None
