"""Interval bound propagation (IBP) over a whole graph."""
from __future__ import annotations

import torch

from verifier.bounds.base import Bounds
from verifier.bounds.registry import OPS, unsupported_ops
from verifier.model.graph import Graph


def interval_bounds(graph: Graph, lower: torch.Tensor, upper: torch.Tensor) -> dict[str, Bounds]:
    """IBP bounds of every value (input included), each [B, *shape]."""
    missing = unsupported_ops(graph)
    if missing:
        raise NotImplementedError(f"no bound rule for: {', '.join(missing)}")
    batch = lower.shape[0]
    bounds = {graph.input_name: (lower.reshape((batch,) + tuple(graph.input_shape)),
                                 upper.reshape((batch,) + tuple(graph.input_shape)))}
    for node in graph.nodes:
        bounds[node.name] = OPS[node.op].ibp(node, [bounds[i] for i in node.inputs])
    return bounds
