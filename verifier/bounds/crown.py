"""The CROWN backward pass over a DAG and its concretisation at the input box."""
from __future__ import annotations

from typing import Callable

import torch

from verifier.bounds.base import Bounds, ElementwiseOp, RelaxState
from verifier.bounds.registry import OPS
from verifier.model.graph import Graph, Node

RelaxFn = Callable[[Node], RelaxState]


def ancestors(graph: Graph) -> dict[str, frozenset[str]]:
    """For every node, the names of the nodes it depends on (graph input excluded)."""
    anc: dict[str, frozenset[str]] = {graph.input_name: frozenset()}
    for node in graph.nodes:
        acc: set[str] = set()
        for i in node.inputs:
            acc |= anc[i]
            if i != graph.input_name:
                acc.add(i)
        anc[node.name] = frozenset(acc)
    return anc


def backward_to_input(graph: Graph, start: str, A: torch.Tensor, bounds: dict[str, Bounds],
                      relax: RelaxFn, scope: frozenset[str], record: dict | None = None):
    """Propagate ``A`` [B, C, *shape(start)] back to the input.

    Returns (A_x [B, C, *input_shape] or None when the start does not depend on the input,
    bias [B, C]) with ``A . start >= A_x . x + bias`` on the box. ``scope`` holds ``start`` and
    its ancestors; ``relax(node)`` gives the relaxation lines of elementwise nonlinear nodes.
    ``record`` (optional) receives the coefficients ``A`` on every elementwise node's output
    (beta-CROWN's branching scores use them).
    """
    acc = {start: A}
    bias = torch.zeros((), dtype=A.dtype, device=A.device)
    for node in reversed(graph.nodes):
        if node.name not in scope or node.name not in acc:
            continue
        A_out = acc.pop(node.name)
        op = OPS[node.op]
        state = relax(node) if isinstance(op, ElementwiseOp) else None
        if record is not None and state is not None:
            record[node.name] = A_out
        A_ins, b = op.backward(node, A_out, [bounds[i] for i in node.inputs], state)
        bias = bias + b
        for name, A_in in zip(node.inputs, A_ins):
            if A_in is None:
                continue
            acc[name] = acc[name] + A_in if name in acc else A_in
    return acc.get(graph.input_name), bias


def concretize_lower(A_x: torch.Tensor | None, bias: torch.Tensor, box: Bounds, n_rows: int) -> torch.Tensor:
    """min over the box of A_x . x + bias, as A.center - |A|.radius; [B, n_rows]."""
    lo, hi = box
    if A_x is None:
        return torch.broadcast_to(bias, (lo.shape[0], n_rows)).clone()
    flat = A_x.flatten(2)
    center = ((hi + lo) / 2).flatten(1).unsqueeze(-1)
    radius = ((hi - lo) / 2).flatten(1).unsqueeze(-1)
    val = torch.matmul(flat, center).squeeze(-1) - torch.matmul(flat.abs(), radius).squeeze(-1)
    return torch.broadcast_to(val + bias, (lo.shape[0], n_rows))


def one_hot_rows(rows: torch.Tensor, shape: tuple[int, ...], dtype, device) -> torch.Tensor:
    """Start matrix [1, 2k, *shape]: +e_i rows (lower bounds) then -e_i rows (upper bounds)."""
    k = rows.numel()
    size = 1
    for d in shape:
        size *= d
    A = torch.zeros((2 * k, size), dtype=dtype, device=device)
    ar = torch.arange(k, device=device)
    A[ar, rows] = 1.0
    A[ar + k, rows] = -1.0
    return A.reshape((1, 2 * k) + tuple(shape))
