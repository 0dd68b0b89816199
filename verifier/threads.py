"""Where torch work runs: CPU threads for a block of work (restored after; one thread for small
networks), and the device a config names (``pick_device``).

Small ops gain nothing from threads and lose a lot when cores are shared: on two busy cores a
NAP attack on a 64-64 MLP took 19 s with two threads and 0.8 s with one. ``verify`` makes the
same choice through ``BoundsConfig.threads``; this is the context for the other entry points.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

SMALL_GRAPH_PARAMS = 1_000_000   # as BoundsConfig.small_graph_params


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the block (0: leave as is), then restore."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def small_net_threads(graph, limit: int = SMALL_GRAPH_PARAMS):
    """Inside the block torch uses one thread if ``graph`` has fewer than ``limit`` parameters."""
    params = sum(t.numel() for n in graph.nodes for t in n.params.values() if t is not None)
    return cpu_threads(1 if params < limit else 0)


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
