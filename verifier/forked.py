"""Work in forked processes beside this one (CPU runs of a small network on a multi-core machine).

Fork shares the parent's memory (graph, proofs, pending domains) without pickling; only results
travel back, through a pipe. Every child runs with one torch thread: a forked child that enters
the parent's OpenMP pool hangs.
"""
from __future__ import annotations

import multiprocessing
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def run_beside(mine: Callable[[], T], theirs: list[Callable[[], T]],
               deadline: float | None) -> tuple[T, list[T | None]]:
    """Start a forked process per callable in ``theirs``, run ``mine`` here, collect theirs.

    A child's result is None when it died or had not answered one second past ``deadline``
    (None: wait as long as it takes). If ``mine`` raises, the children are killed first.
    """
    ctx = multiprocessing.get_context("fork")
    started = []
    for work in theirs:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(send, work), daemon=True)
        proc.start()
        send.close()
        started.append((recv, proc))
    try:
        own = mine()
    except BaseException:
        for _, proc in started:
            proc.kill()
        raise
    results = []
    for recv, proc in started:
        wait = None if deadline is None else max(deadline - time.monotonic(), 0.0) + 1.0
        try:
            results.append(recv.recv() if recv.poll(wait) else None)
        except EOFError:
            results.append(None)
        proc.join(1.0)
        if proc.is_alive():
            proc.kill()
    return own, results


def _child(send, work) -> None:
    """A child's body: one torch thread, run the work, send the result back."""
    import torch

    torch.set_num_threads(1)
    send.send(work())
    send.close()
