"""ReLU splitting with chunks shipped to a pool (an in-process fake; the service's Celery pool is
tested in tests/service/test_distributed.py): same verdicts, one joined proof the checker accepts."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from verifier.bounds import BoundEngine
from verifier.certify import certify
from verifier.config import BabConfig, VerifyConfig
from verifier.result import Verdict
from verifier.search import distribute
from verifier.search.distribute import ChunkResult, ChunkSpec, chunk_search, run_chunk, run_chunk_search
from verifier.search.relu_split import ReluSplitOptions, relu_split
from verifier.spec.spec import Polytope, Region, Spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exact"))
from milp_nets import mlp  # noqa: E402
from test_distribute import InlinePool  # noqa: E402

NOW = BabConfig(distribute_after=0.0, batch=4)   # ship from the first look on, small batches: many looks


@pytest.fixture(scope="module")
def case():
    """A 10-16-16-3 net on a box, the row y0 - y1, CROWN's root bound a and the sampled minimum b."""
    graph = mlp(4, 10, (16, 16), 3)
    x0 = np.random.default_rng(4).uniform(-0.5, 0.5, 10)
    lower, upper = x0 - 0.4, x0 + 0.4
    c = np.array([[1.0, -1.0, 0.0]])
    res = BoundEngine(graph).compute(lower[None], upper[None], torch.tensor(c, dtype=torch.float32)[None],
                                     want_upper=False)
    xs = np.random.default_rng(0).uniform(lower, upper, (20000, 10))
    b = float((graph.to(dtype=torch.float64).forward(torch.as_tensor(xs)).numpy() @ c.T).min())
    return graph, lower, upper, c, float(res.lower[0, 0]), b


def validator(graph, c, t):
    """A stand-in for the onnxruntime check: float64 re-evaluation inside the polytope."""
    g64 = graph.to(dtype=torch.float64)

    def validate(x):
        y = g64.forward(torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(1, -1)).numpy().reshape(-1)
        return x if bool(np.all(c @ y <= t)) else None

    return validate


def relu_runner(graph, lower, upper, poly, validate, config=NOW):
    """Search a chunk as a remote worker would (its own engine), on the test's in-memory graph."""
    engine = BoundEngine(graph)
    region = Region(lower, upper, (Polytope(*poly),))

    def run(chunk: ChunkSpec) -> ChunkResult:
        assert chunk.kind == "relu" and not chunk.lo   # the domains travel as split sets only
        deadline = time.monotonic() + (chunk.deadline - time.time())
        search = chunk_search(engine, graph, region, chunk, validate, deadline, config)
        return run_chunk_search(search, chunk, deadline, worker=f"fake-{chunk.index % 2}")

    return run


def checked(graph, lower, upper, poly, tree):
    spec = Spec(10, 3, (Region(lower, upper, (Polytope(*poly),)),))
    _, report = certify(graph, spec, "m", "s", [(0, 0, tree)], time.monotonic() + 60)
    return report


def test_a_distributed_relu_proof_matches_the_local_one_and_its_joined_tree_checks(case):
    """Every result is delivered twice: the duplicates are not joined."""
    graph, lower, upper, c, a, b = case
    poly = (c, np.array([a + 0.7 * (b - a)]))
    validate = validator(graph, *poly)
    one = relu_split(BoundEngine(graph), graph, lower, upper, *poly, validate, time.monotonic() + 60, NOW)
    pool = InlinePool(relu_runner(graph, lower, upper, poly, validate), duplicate=True)
    two = relu_split(BoundEngine(graph), graph, lower, upper, *poly, validate, time.monotonic() + 60, NOW,
                     offload=pool)
    assert one.status == two.status == "holds"
    dist = two.stats["distributed"]
    assert dist["chunks"] >= 2 and dist["workers"] >= 2, dist
    ids = [leaf[0] for leaf in two.log.leaves]
    assert len(ids) == len(set(ids))                  # no chunk joined twice
    assert any(i >= 1 << 40 for i in ids)             # leaves from chunks, numbered in their own ranges
    report = checked(graph, lower, upper, poly, two.log.tree())
    assert report.ok, report.reasons
    assert report.leaves == len(two.log.leaves)


def test_chunks_out_of_budget_send_back_what_is_left_and_the_proof_still_checks(case, monkeypatch):
    """Every chunk stops after one batch (``partial``): its proof so far joins, its open domains
    come back (split sets only) and are searched at home or shipped again."""
    graph, lower, upper, c, a, b = case
    poly = (c, np.array([a + 0.7 * (b - a)]))
    validate = validator(graph, *poly)
    monkeypatch.setattr(distribute, "CHUNK_BUDGET", 1e-6)
    pool = InlinePool(relu_runner(graph, lower, upper, poly, validate))
    out = relu_split(BoundEngine(graph), graph, lower, upper, *poly, validate, time.monotonic() + 60, NOW,
                     offload=pool)
    assert out.status == "holds"
    assert out.stats["distributed"]["partial"] >= 1, out.stats["distributed"]
    report = checked(graph, lower, upper, poly, out.log.tree())
    assert report.ok, report.reasons
    assert report.leaves == len(out.log.leaves)


def test_a_chunk_s_counterexample_is_revalidated_at_home(case):
    """The home search never attacks, so only a chunk can find the violation; home confirms it."""
    graph, lower, upper, c, a, b = case
    poly = (c, np.array([b + 0.1 * (b - a)]))
    validate = validator(graph, *poly)
    home_checks = []

    def home_validate(x):
        home_checks.append(x)
        return validate(x)

    pool = InlinePool(relu_runner(graph, lower, upper, poly, validate), slots=2)
    out = relu_split(BoundEngine(graph), graph, lower, upper, *poly, home_validate, time.monotonic() + 60, NOW,
                     options=ReluSplitOptions(attack_domains=0), offload=pool)
    assert out.status == "violated" and pool.shipped >= 1
    assert len(home_checks) == 1                      # the chunk's witness, re-validated here
    y = graph.to(dtype=torch.float64).forward(torch.as_tensor(out.counterexample)[None])[0].numpy()
    assert c[0] @ y <= poly[1][0]


def test_chunks_nobody_starts_are_taken_back_and_the_proof_still_checks(case):
    graph, lower, upper, c, a, b = case
    poly = (c, np.array([a + 0.7 * (b - a)]))

    class Idle(InlinePool):   # accepts chunks, never runs one
        def poll(self):
            return []

    pool = Idle(None, slots=2)
    out = relu_split(BoundEngine(graph), graph, lower, upper, *poly, validator(graph, *poly),
                     time.monotonic() + 60, NOW, offload=pool)
    assert out.status == "holds" and pool.shipped >= 1
    assert out.stats["distributed"]["taken_back"] == pool.reclaimed == pool.shipped
    assert checked(graph, lower, upper, poly, out.log.tree()).ok


def test_a_relu_chunk_result_survives_json_exactly():
    alphas = {"act0": np.array([0.1, 1 / 3]), "act1": np.linspace(0, 1, 7).reshape(7)}
    res = ChunkResult(3, "holds", [(0, "act0", 1, 5, 6)], [(5, 0, 0.25, alphas, np.array([np.pi])),
                                                          (6, 0, 1e-12, {}, None)], kind="relu")
    back = ChunkResult.from_json(json.loads(json.dumps(res.to_json())))
    assert back.splits == res.splits
    (i, row, bound, al, be), last = back.leaves
    assert (i, row, bound) == (5, 0, 0.25) and be[0] == np.pi and last[3:] == ({}, None)
    assert all(np.array_equal(al[k], alphas[k]) for k in alphas)


def test_verify_with_a_pool_ships_relu_chunks_that_run_chunk_searches(tmp_path):
    """End to end through ``verify`` (18 inputs: ReLU splitting); chunks run by ``run_chunk`` on the
    ONNX model, as a worker does; the joined certificate is checked by ``verify`` itself."""
    from test_cancel import write_case

    from verifier.model.onnx_loader import load_onnx
    from verifier.portfolio import verify
    from verifier.spec.vnnlib import load_vnnlib

    model_path, spec_path = write_case(tmp_path, 3, [18, 24, 24, 2], 0.5)
    config = VerifyConfig.from_dict({"timeout": 60, "workers": 1, "bab": {"distribute_after": 0.0}})
    model, spec = load_onnx(model_path), load_vnnlib(spec_path)
    pool = InlinePool(lambda chunk: run_chunk(model, spec, config, chunk, worker=f"w{chunk.index % 3}"), slots=2)
    spread = verify(model_path, spec_path, config, offload=pool)
    assert spread.verdict is Verdict.HOLDS, spread.log
    assert spread.certificate_checked and pool.shipped > 0
    assert any("bab-relu region" in line and "'distributed'" in line for line in spread.log)
