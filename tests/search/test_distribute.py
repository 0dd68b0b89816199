"""Input splitting with chunks shipped to a pool (an in-process fake here; the service's Celery pool
is tested in tests/service/test_distributed.py): same verdicts, one joined proof the checker accepts."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from verifier.bounds import BoundEngine
from verifier.certify import certify
from verifier.config import BabConfig, VerifyConfig
from verifier.result import Verdict
from verifier.search.distribute import ChunkResult, ChunkSpec, chunk_result, run_chunk
from verifier.search.input_split import input_split, new_search
from verifier.spec.spec import Polytope, Region, Spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_falsify import _net_and_extremes, _validator  # noqa: E402

NOW = BabConfig(distribute_after=0.0)   # ship from the first look on


class InlinePool:
    """A fake pool: ``slots`` workers that each run one chunk per ``poll``, synchronously, through JSON.

    ``duplicate``: every result is delivered twice. ``fail_first``: the first chunk's worker
    "dies" (its result is a timeout), so the home search must cover that chunk itself.
    """

    def __init__(self, runner, slots: int = 2, duplicate: bool = False, fail_first: bool = False):
        self.runner, self.slots, self.duplicate, self.fail_first = runner, slots, duplicate, fail_first
        self.queued: list[ChunkSpec] = []
        self.shipped, self.cancelled, self.reclaimed = 0, 0, 0

    def want_chunks(self) -> int:
        return max(0, self.slots - len(self.queued))

    def ship(self, chunks):
        self.queued += [ChunkSpec.from_json(json.loads(json.dumps(c.to_json()))) for c in chunks]
        self.shipped += len(chunks)

    def poll(self):
        if not self.queued:
            return []
        chunk = self.queued.pop(0)
        if self.fail_first:
            self.fail_first = False
            res = ChunkResult(chunk.index, "timeout", worker="lost")
        else:
            res = self.runner(chunk)
        res = ChunkResult.from_json(json.loads(json.dumps(res.to_json())))
        return [res, res] if self.duplicate else [res]

    def reclaim(self):
        back, self.queued = self.queued, []
        self.reclaimed += len(back)
        return back

    def cancel_all(self):
        self.cancelled += len(self.queued)
        self.queued = []


def graph_runner(graph, lower, upper, poly, validate, config=NOW):
    """Search a chunk as a remote worker would, on the test's in-memory graph."""
    engine = BoundEngine(graph)

    def run(chunk: ChunkSpec) -> ChunkResult:
        deadline = time.monotonic() + (chunk.deadline - time.time())
        search = new_search(engine, graph, lower, upper, *poly, validate, deadline, config,
                            queue=chunk.pending(), next_id=chunk.id_base)
        return chunk_result(chunk, search.run(deadline), worker=f"fake-{chunk.index % 2}")

    return run


def checked(graph, lower, upper, poly, tree) -> object:
    spec = Spec(4, 2, (Region(lower, upper, (Polytope(*poly),)),))
    _, report = certify(graph, spec, "m", "s", [(0, 0, tree)], time.monotonic() + 60)
    return report


def test_a_distributed_proof_matches_the_local_one_and_its_joined_tree_checks():
    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin - 0.05]))
    validate = _validator(graph, [poly])
    engine = BoundEngine(graph)
    one = input_split(engine, graph, lower, upper, *poly, validate, time.monotonic() + 60, NOW)
    pool = InlinePool(graph_runner(graph, lower, upper, poly, validate), duplicate=True)
    two = input_split(engine, graph, lower, upper, *poly, validate, time.monotonic() + 60, NOW, offload=pool)
    assert one.status == two.status == "holds"
    dist = two.stats["distributed"]
    assert pool.shipped > 0 and dist["chunks"] > 0 and dist["workers"] >= 2, dist
    report = checked(graph, lower, upper, poly, two.log.tree())
    assert report.ok, report.reasons
    assert report.leaves == len(two.log.leaves)   # duplicates were not joined twice


def test_a_lost_chunk_is_searched_at_home_and_the_proof_still_checks():
    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin - 0.05]))
    validate = _validator(graph, [poly])
    pool = InlinePool(graph_runner(graph, lower, upper, poly, validate), slots=1, fail_first=True)
    out = input_split(BoundEngine(graph), graph, lower, upper, *poly, validate, time.monotonic() + 60, NOW,
                      offload=pool)
    assert out.status == "holds"
    assert out.stats["distributed"]["taken_back"] >= 1
    assert checked(graph, lower, upper, poly, out.log.tree()).ok


def test_a_chunk_s_counterexample_is_revalidated_at_home_and_cancels_the_rest():
    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin + 0.01]))
    validate = _validator(graph, [poly])
    quiet = BabConfig(distribute_after=0.0, samples=0, local_share=0.0)
    home_checks = []

    def home_validate(x):
        home_checks.append(x)
        return validate(x)

    pool = InlinePool(graph_runner(graph, lower, upper, poly, validate, quiet), slots=3)
    out = input_split(BoundEngine(graph), graph, lower, upper, *poly, home_validate, time.monotonic() + 60, quiet,
                      offload=pool)
    assert out.status == "violated"
    y = graph.to(dtype=torch.float64).forward(torch.as_tensor(out.counterexample)[None])[0].numpy()
    assert y[0] - y[1] <= dmin + 0.01
    assert home_checks   # whoever found it, home confirmed it


def test_input_chunks_out_of_budget_send_back_what_is_left(monkeypatch):
    """Chunks stop after 20 ms (``partial``): their proofs so far join, their open boxes come back."""
    from verifier.search import distribute
    from verifier.search.distribute import run_chunk_search

    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin - 0.05]))
    validate = _validator(graph, [poly])
    monkeypatch.setattr(distribute, "CHUNK_BUDGET", 0.02)
    engine = BoundEngine(graph)

    def run(chunk):
        deadline = time.monotonic() + (chunk.deadline - time.time())
        search = new_search(engine, graph, lower, upper, *poly, validate, deadline, NOW, queue=chunk.pending(),
                            next_id=chunk.id_base)
        return run_chunk_search(search, chunk, deadline, worker="fake")

    out = input_split(engine, graph, lower, upper, *poly, validate, time.monotonic() + 60, NOW, offload=InlinePool(run))
    assert out.status == "holds" and out.stats["distributed"]["partial"] >= 1, out.stats
    report = checked(graph, lower, upper, poly, out.log.tree())
    assert report.ok and report.leaves == len(out.log.leaves)


def test_no_idle_worker_means_nothing_ships():
    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin - 0.05]))
    validate = _validator(graph, [poly])
    pool = InlinePool(graph_runner(graph, lower, upper, poly, validate), slots=0)
    out = input_split(BoundEngine(graph), graph, lower, upper, *poly, validate, time.monotonic() + 60, NOW,
                      offload=pool)
    assert out.status == "holds" and pool.shipped == 0
    dist = out.stats["distributed"]
    assert {k: dist[k] for k in ("shipped", "chunks", "taken_back", "workers", "chunk_seconds", "overhead_seconds",
                                 "home_wait_seconds")} == {"shipped": 0, "chunks": 0, "taken_back": 0, "workers": 1,
                                                           "chunk_seconds": 0.0, "overhead_seconds": 0.0,
                                                           "home_wait_seconds": 0.0}


def test_the_deadline_holds_with_chunks_out():
    """A property too tight to prove in 1.5 s, a pool that never answers: timeout, on time."""
    graph, lower, upper, dmin, _ = _net_and_extremes()
    poly = (np.array([[1.0, -1.0]]), np.array([dmin - 1e-4]))

    class Silent(InlinePool):
        def poll(self):
            return []

        def reclaim(self):
            return []

    pool = Silent(None, slots=2)
    t0 = time.monotonic()
    out = input_split(BoundEngine(graph), graph, lower, upper, *poly, lambda x: None, t0 + 1.5, NOW, offload=pool)
    assert out.status == "timeout" and pool.shipped > 0
    assert time.monotonic() - t0 < 3.0


def test_verify_with_a_pool_and_run_chunk_agree_with_verify_alone(tmp_path):
    """End to end through ``verify``: chunks run by ``run_chunk`` on the ONNX model (as a worker does)."""
    from test_cancel import write_case

    from verifier.model.onnx_loader import load_onnx
    from verifier.portfolio import verify
    from verifier.spec.vnnlib import load_vnnlib

    model_path, spec_path = write_case(tmp_path, 3, [5, 24, 24, 2], 0.05)
    config = VerifyConfig.from_dict({"timeout": 60, "workers": 1, "bab": {"distribute_after": 0.0}})
    model, spec = load_onnx(model_path), load_vnnlib(spec_path)
    pool = InlinePool(lambda chunk: run_chunk(model, spec, config, chunk, worker=f"w{chunk.index % 3}"), slots=2)
    alone = verify(model_path, spec_path, config)
    spread = verify(model_path, spec_path, config, offload=pool)
    assert alone.verdict is spread.verdict is Verdict.HOLDS, spread.log
    assert spread.certificate_checked and pool.shipped > 0
    assert any("'distributed'" in line for line in spread.log)
