"""Cooperative cancel and progress events of ``verify`` (as the service's workers call it)."""
from __future__ import annotations

import json
import multiprocessing
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from verifier import clock
from verifier.config import VerifyConfig
from verifier.forked import run_beside
from verifier.model.onnx_loader import load_onnx
from verifier.portfolio import verify
from verifier.result import Verdict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_portfolio import write_mlp, write_spec  # noqa: E402

STOP_WITHIN = 5.0   # seconds from the cancel to verify's return (generous: measured ~0.05 s)


def write_case(folder: Path, seed: int, sizes: list[int], gap: float) -> tuple[str, str]:
    """A random MLP on the box [-1, 1]^n and the unsafe set y0 - y1 <= (sampled min - gap x sampled range)."""
    folder.mkdir(parents=True, exist_ok=True)
    model, spec = folder / "net.onnx", folder / "prop.vnnlib"
    write_mlp(model, seed, sizes)
    graph = load_onnx(str(model)).graph
    lower, upper = -np.ones(sizes[0]), np.ones(sizes[0])
    x = torch.as_tensor(np.random.default_rng(0).uniform(lower, upper, (50000, sizes[0])), dtype=torch.float32)
    with torch.no_grad():
        d = graph.forward(x) @ torch.tensor([1.0, -1.0])
    threshold = float(d.min()) - gap * float(d.max() - d.min())
    write_spec(spec, lower, upper, [({0: 1.0, 1: -1.0}, threshold)], sizes[-1])
    return str(model), str(spec)


@pytest.fixture(scope="module")
def long_input_split(tmp_path_factory):
    """12 inputs (input splitting), no counterexample near, far too many boxes to prove in a minute."""
    return write_case(tmp_path_factory.mktemp("long_input"), 9, [12, 64, 64, 2], 0.5)


@pytest.fixture(scope="module")
def long_relu_split(tmp_path_factory):
    """24 inputs (bounds route: CROWN, alpha-CROWN, attack, ReLU splitting) that stays open for minutes."""
    return write_case(tmp_path_factory.mktemp("long_relu"), 8, [24, 64, 64, 64, 2], 0.6)


@pytest.fixture(scope="module")
def easy_holds(tmp_path_factory):
    """5 inputs: holds after a short input-split search (well under a second)."""
    return write_case(tmp_path_factory.mktemp("easy"), 3, [5, 16, 16, 2], 0.2)


class Canceller:
    """A cancel event set from a timer thread; remembers when it was set."""

    def __init__(self):
        self.event, self.set_at = threading.Event(), None

    def later(self, seconds: float) -> None:
        """Set the event ``seconds`` from now, from another thread."""
        timer = threading.Timer(seconds, self.fire)
        timer.daemon = True
        timer.start()

    def fire(self) -> None:
        self.set_at = time.monotonic()
        self.event.set()


def assert_cancelled(result, canceller: Canceller, returned: float) -> None:
    """``unknown``, reason ``cancelled ...``, returned soon after the cancel, no forked child left."""
    assert canceller.set_at is not None, "the run ended before the cancel was set"
    assert result.verdict is Verdict.UNKNOWN, (result.reason, result.log)
    assert result.reason.startswith("cancelled"), result.reason
    assert result.counterexample is None
    assert returned - canceller.set_at < STOP_WITHIN, result.log
    time.sleep(0.2)
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


def test_cancel_stops_an_input_split_search(long_input_split):
    """Set 3.5 s into a 60 s run (past the switch to a forked worker at 2 s): verify returns, cancelled."""
    canceller = Canceller()
    canceller.later(3.5)
    result = verify(*long_input_split, VerifyConfig(timeout=60), cancel=canceller.event)
    assert_cancelled(result, canceller, time.monotonic())
    assert result.route == "input-split"


def test_without_a_cancel_the_same_search_goes_on(long_input_split):
    """The same run with an unset event and a 4 s budget runs to its budget (timeout)."""
    t0 = time.monotonic()
    result = verify(*long_input_split, VerifyConfig(timeout=4), cancel=threading.Event())
    assert result.verdict is Verdict.TIMEOUT, (result.reason, result.log)
    assert time.monotonic() - t0 >= 4.0


def test_cancel_stops_a_relu_split_search(long_relu_split):
    """Set half a second after ReLU splitting reports its first batch: verify returns, cancelled."""
    canceller, events = Canceller(), []

    def progress(event: dict) -> None:
        if event["event"] == "search" and not any(e["event"] == "search" for e in events):
            canceller.later(0.5)
        events.append(event)

    result = verify(*long_relu_split, VerifyConfig(timeout=60), cancel=canceller.event, progress=progress)
    assert_cancelled(result, canceller, time.monotonic())
    assert result.route == "bounds"
    assert {e["method"] for e in events if e["event"] == "search"} == {"bab-relu"}
    json.dumps(events, allow_nan=False)


def test_a_cancel_set_before_the_run_never_yields_holds(easy_holds):
    """A property that holds: cancelled from the start, the answer is unknown, not an unchecked holds."""
    assert verify(*easy_holds, VerifyConfig(timeout=30)).verdict is Verdict.HOLDS
    event = threading.Event()
    event.set()
    t0 = time.monotonic()
    result = verify(*easy_holds, VerifyConfig(timeout=30), cancel=event)
    assert result.verdict is Verdict.UNKNOWN and result.reason.startswith("cancelled"), result.reason
    assert result.certificate is None
    assert time.monotonic() - t0 < STOP_WITHIN


def test_cancel_scope_installs_and_restores_the_event():
    """``now()`` is the monotonic clock, infinite while the installed event is set, and after the
    scope the previous event (none) is back."""
    outer, inner = threading.Event(), threading.Event()
    inner.set()
    assert clock.now() < float("inf") and not clock.cancelled()
    with clock.cancel_scope(outer):
        assert clock.now() < float("inf")
        with clock.cancel_scope(inner):
            assert clock.now() == float("inf") and clock.cancelled()
        assert not clock.cancelled()
        outer.set()
        assert clock.cancelled()
    assert not clock.cancelled() and clock.now() < float("inf")


def test_run_beside_gives_a_busy_child_one_second_after_a_cancel():
    """The parent's share ends at once and the child would sleep for a minute: once cancelled,
    ``run_beside`` waits about a second, kills the child and reports it as None."""
    canceller = Canceller()

    def mine():
        canceller.later(0.3)
        return "mine"

    with clock.cancel_scope(canceller.event):
        t0 = time.monotonic()
        own, theirs = run_beside(mine, [lambda: time.sleep(60)], time.monotonic() + 120)
    assert own == "mine" and theirs == [None]
    assert time.monotonic() - t0 < STOP_WITHIN
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


def test_progress_reports_steps_and_search_counts(easy_holds):
    """Both kinds of event arrive, with the documented fields, as plain JSON (no inf or NaN)."""
    events = []
    result = verify(*easy_holds, VerifyConfig(timeout=30), progress=events.append)
    assert result.verdict is Verdict.HOLDS
    json.dumps(events, allow_nan=False)
    steps = [e for e in events if e["event"] == "step"]
    searches = [e for e in events if e["event"] == "search"]
    assert steps and searches
    assert set(steps[0]) == {"event", "elapsed", "message", "proved", "goals", "best_bound"}
    assert [e["message"] for e in steps] == [line.split("s ", 1)[1] for line in result.log]
    assert steps[-1]["proved"] == steps[-1]["goals"] == 1
    assert all(isinstance(e["best_bound"], (float, type(None))) for e in steps)
    assert set(searches[0]) == {"event", "elapsed", "domains", "pending", "method"}
    assert {e["method"] for e in searches} == {"bab-input"}
    assert all(isinstance(e["domains"], int) and isinstance(e["pending"], int) for e in searches)


def test_a_raising_progress_callback_is_dropped_and_changes_nothing(easy_holds):
    """The callback raises on its first event: it is not called again, and the verdict is the same."""
    calls = []

    def broken(event: dict) -> None:
        calls.append(event)
        raise RuntimeError("the broker is down")

    plain = verify(*easy_holds, VerifyConfig(timeout=30))
    result = verify(*easy_holds, VerifyConfig(timeout=30), progress=broken)
    assert len(calls) == 1
    assert result.verdict is plain.verdict is Verdict.HOLDS
    assert result.method == plain.method and result.certificate_checked is plain.certificate_checked


@pytest.mark.parametrize("solver", ["minisat22", "cadical153"])
def test_a_cancel_stops_a_running_sat_solver(solver):
    """A hard formula (11 pigeons, 10 holes) with a minute's deadline: the solve (in this process,
    or in a forked child for CaDiCaL) gives up soon after the cancel instead."""
    from pysat.examples.genhard import PHP

    from verifier.exact.cardinality import INTERRUPTIBLE, ForkedSolver, InProcessSolver

    backend = (InProcessSolver if solver in INTERRUPTIBLE else ForkedSolver)(solver, PHP(10).clauses, False)
    canceller = Canceller()
    canceller.later(0.5)
    try:
        with clock.cancel_scope(canceller.event):
            answer, _ = backend.solve(time.monotonic() + 60)
    finally:
        backend.close()
    assert answer is None
    assert time.monotonic() - canceller.set_at < STOP_WITHIN
