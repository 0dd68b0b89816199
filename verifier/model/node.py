"""A node of the canonical graph: one canonical op (see ``graph``) applied to earlier values."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import torch


@dataclass(frozen=True, eq=False)
class Node:
    """One canonical op applied to earlier values (or to the graph input)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    params: Mapping[str, torch.Tensor | None] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    @property
    def size(self) -> int:
        """Number of scalar values per sample."""
        n = 1
        for d in self.shape:
            n *= d
        return n
