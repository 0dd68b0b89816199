"""The verifier's clock for deadlines: monotonic time that jumps to infinity once a run is cancelled.

Every deadline check in the library compares ``now()`` with its deadline (a ``time.monotonic()``
value), so setting the current run's cancel event makes each check fire at its next look, and
the run winds down the way it does at a timeout. Durations and timings are still measured with
``time.monotonic()``.

The cancel event is process-wide state: one process runs one ``verify`` at a time (the
service's workers do; threads of one process must not run two cancellable runs at once). A
forked child keeps a copy of the event that is never set; whoever forked it stops it.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Iterator, Protocol


class CancelEvent(Protocol):
    """Anything with ``is_set()``: ``threading.Event``, ``multiprocessing.Event``, ..."""

    def is_set(self) -> bool: ...


_cancel: CancelEvent | None = None


def now() -> float:
    """``time.monotonic()``, or ``math.inf`` once the current run's cancel event is set."""
    if cancelled():
        return math.inf
    return time.monotonic()


def cancelled() -> bool:
    """Whether the current run's cancel event is set."""
    event = _cancel
    return event is not None and bool(event.is_set())


def left(deadline: float) -> float:
    """Seconds until ``deadline`` (``-inf`` once cancelled)."""
    return deadline - now()


@contextlib.contextmanager
def cancel_scope(event: CancelEvent | None) -> Iterator[None]:
    """Install ``event`` as the cancel of the run inside the block (None: none); restore the previous one."""
    global _cancel
    before, _cancel = _cancel, event
    try:
        yield
    finally:
        _cancel = before
