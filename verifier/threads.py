"""One torch CPU thread while a small network is worked on (restored after).

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
def small_net_threads(graph, limit: int = SMALL_GRAPH_PARAMS) -> Iterator[None]:
    """Inside the block torch uses one thread if ``graph`` has fewer than ``limit`` parameters."""
    params = sum(t.numel() for n in graph.nodes for t in n.params.values() if t is not None)
    before = torch.get_num_threads()
    if params < limit:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
