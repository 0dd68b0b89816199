"""What one bound call is over: the input box, its domain constraints and the spec rows.

Shared by ``engine`` (IBP / CROWN / alpha-CROWN) and ``beta`` (split subdomains), which both
turn a caller's box and objective matrix into these tensors; ``DeadlineReached`` is how either
stops a propagation that runs past the engine's deadline.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from verifier.bounds.base import Bounds
from verifier.model.graph import Graph


class DeadlineReached(Exception):
    """The engine's deadline passed during a propagation (no bound is returned)."""


@dataclass(frozen=True)
class Domain:
    """Per-call constraints on the box: known bounds to intersect with, and relu splits."""

    intermediate: dict | None = None
    splits: dict | None = None


def input_box(graph: Graph, lower, upper, device, dtype) -> Bounds:
    """Inputs as [B, *input_shape] on ``device`` in ``dtype`` (a flat [n] box gets B = 1)."""
    lo = torch.as_tensor(lower).to(device=device, dtype=dtype)
    hi = torch.as_tensor(upper).to(device=device, dtype=dtype)
    shape = tuple(graph.input_shape)
    if lo.dim() == 1:
        lo, hi = lo.unsqueeze(0), hi.unsqueeze(0)
    return lo.reshape((lo.shape[0],) + shape), hi.reshape((hi.shape[0],) + shape)


def spec_rows(graph: Graph, C, like: torch.Tensor, want_upper: bool, dtype):
    """Backward start rows [B|1, R, *output_shape]: C (or identity), then -C for upper bounds.

    ``like`` (e.g. the box's lower end) gives the batch size and device; returns (rows, m) with
    ``m`` the number of rows of C.
    """
    n_out, out_shape = graph.n_outputs, tuple(graph.output_shape)
    batch, device = like.shape[0], like.device
    if C is None:
        C = torch.eye(n_out, dtype=dtype, device=device).unsqueeze(0)
    C = torch.as_tensor(C).to(device=device, dtype=dtype)
    if C.dim() == 2:
        C = C.unsqueeze(0)
    if C.shape[-1] != n_out or C.shape[0] not in (1, batch):
        raise ValueError(f"C must be [B, m, {n_out}] with B in (1, {batch}), got {tuple(C.shape)}")
    m = C.shape[1]
    rows = torch.cat([C, -C], dim=1) if want_upper else C
    return rows.reshape(rows.shape[:2] + out_shape), m
