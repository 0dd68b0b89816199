"""Work in forked processes beside this one (CPU runs of a small network on a multi-core machine).

Fork shares the parent's memory (graph, proofs, pending domains) without pickling; only results
travel back, through a pipe. Every child runs with one torch thread: a forked child that enters
the parent's OpenMP pool hangs.

A child dies with its parent, however the parent dies (on Linux: ``PR_SET_PDEATHSIG``), so a
killed run leaves no search process behind blocked on its pipe. The signal follows the *thread*
that forked: children live only inside ``run_beside``, in the calling thread, so that is fine.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from typing import Callable, TypeVar

from verifier import clock

T = TypeVar("T")

GRACE = 1.0    # seconds children get to answer once the deadline has passed or the run was cancelled
POLL = 0.05    # seconds between looks at the clock while waiting for a child
PR_SET_PDEATHSIG = 1


def run_beside(mine: Callable[[], T], theirs: list[Callable[[], T]],
               deadline: float | None) -> tuple[T, list[T | None]]:
    """Start a forked process per callable in ``theirs``, run ``mine`` here, collect theirs.

    A child's result is None when it died or had not answered ``GRACE`` seconds after
    ``deadline`` passed or the run was cancelled (``verifier.clock``); None deadline: wait as long
    as it takes, unless cancelled. Unanswered children are killed; if ``mine`` raises, the
    children are killed first.
    """
    ctx = multiprocessing.get_context("fork")
    started = []
    for work in theirs:
        recv, send = ctx.Pipe(duplex=False)
        inherited = [r for r, _ in started] + [recv]   # read ends the child must not keep open
        proc = ctx.Process(target=_child, args=(send, work, os.getpid(), inherited), daemon=True)
        proc.start()
        send.close()
        started.append((recv, proc))
    try:
        own = mine()
    except BaseException:
        for _, proc in started:
            proc.kill()
        raise
    return own, _collect(started, deadline)


def _collect(started: list, deadline: float | None) -> list:
    """Each child's answer (None: died or late); the children are gone afterwards."""
    results, late = [], {}
    for recv, proc in started:
        results.append(_answer(recv, deadline, late))
        recv.close()
        proc.join(0 if late.get("killing") else GRACE)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return results


def _answer(recv, deadline: float | None, late: dict):
    """The child's result, or None once it died or the grace after the deadline (or cancel) ran out.

    ``late`` is shared by the children of one call: the grace period is counted once for all.
    """
    while not recv.poll(POLL):
        if not _expired(deadline):
            continue
        until = late.setdefault("until", time.monotonic() + GRACE)
        if time.monotonic() >= until:
            late["killing"] = True
            return None
    try:
        return recv.recv()
    except (EOFError, OSError):
        return None


def _expired(deadline: float | None) -> bool:
    """Whether the run was cancelled or ``deadline`` has passed."""
    return clock.cancelled() or (deadline is not None and clock.now() >= deadline)


def _child(send, work, parent: int, inherited: list) -> None:
    """A child's body: die with the parent, one torch thread, run the work, send the result back."""
    die_with_parent(parent)
    for conn in inherited:
        conn.close()
    import torch

    torch.set_num_threads(1)
    send.send(work())
    send.close()


def die_with_parent(parent: int) -> None:
    """In a freshly forked child: have the kernel SIGKILL it when ``parent`` dies (Linux; else no-op).

    The parent may have died between the fork and this call: then the child exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)
