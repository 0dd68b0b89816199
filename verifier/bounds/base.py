"""The operator contract every canonical op fills in for bound propagation.

Shapes (stated once, used by every op):

* ``B``: batch (independent input boxes / BaB subdomains); ``C``: number of linear objectives
  (rows) propagated backwards at once; ``*shape``: a value's per-sample shape (``Node.shape``).
* ``in_bounds``: one ``(lo, hi)`` pair per node input, each ``[B, *in_shape]``.
* ``ibp(node, in_bounds) -> (lo, hi)``: interval bounds of the node output, ``[B, *shape]``.
* ``backward(node, A, in_bounds, relax_state) -> ([A_in, ...], bias)``: CROWN step. ``A`` is
  ``[B, C, *shape]`` (the leading dim may be 1 and broadcast); it returns, per input, ``A_in`` of
  ``[B, C, *in_shape]`` (or ``None`` when that input receives nothing) and ``bias`` ``[B, C]`` (or
  broadcastable to it) such that for every point in the input boxes
  ``sum(A * y) >= sum_i sum(A_in_i * x_i) + bias``.  Backward passes always compute *lower*
  bounds; an upper bound of ``a . y`` is minus the lower bound of ``-a . y``.
* ``relax(node, lo, hi, alpha=None) -> (lower_slope, lower_bias, upper_slope, upper_bias)``
  (elementwise nonlinear ops only): lines with ``ls * x + lb <= f(x) <= us * x + ub`` for all x in
  ``[lo, hi]``; all four broadcast to ``lo``'s shape. ``alpha`` in [0, 1] (same shape as ``lo``, or
  with an extra objective dim) selects the free line of ops with ``has_alpha``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from verifier.model.graph import Node
from verifier.model.ops import FORWARD

Bounds = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class RelaxState:
    """Linear relaxation lines of one elementwise node, broadcastable to ``[B, C, *shape]``.

    ``extra_A`` (reserved for beta-CROWN split multipliers) is added to the propagated ``A_in``.
    """

    lower_slope: torch.Tensor
    lower_bias: torch.Tensor
    upper_slope: torch.Tensor
    upper_bias: torch.Tensor
    extra_A: torch.Tensor | None = None


class BoundOp:
    """Base class: one instance per canonical op, stateless."""

    nonlinear = False  # nodes of nonlinear ops need bounds on their input (and CROWN refines them)
    has_alpha = False  # alpha-CROWN optimises one free line per unstable neuron

    def ibp(self, node: Node, in_bounds: list[Bounds]) -> Bounds:
        """Interval bounds; default: the op is monotone non-decreasing in every input."""
        lo = FORWARD[node.op](node, [b[0] for b in in_bounds])
        hi = FORWARD[node.op](node, [b[1] for b in in_bounds])
        return lo, hi

    def backward(self, node: Node, A: torch.Tensor, in_bounds: list[Bounds], relax_state: RelaxState | None):
        """CROWN step (see module docstring)."""
        raise NotImplementedError(f"no backward rule for op {node.op}")

    def unstable(self, node: Node, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Mask of input neurons whose relaxation is inexact (tighter input bounds would help)."""
        return lo < hi


class ElementwiseOp(BoundOp):
    """An elementwise nonlinear op relaxed by two lines per neuron."""

    nonlinear = True

    def relax(self, node: Node, lo: torch.Tensor, hi: torch.Tensor, alpha: torch.Tensor | None = None):
        """Lower and upper lines on [lo, hi] (see module docstring)."""
        raise NotImplementedError

    def default_alpha(self, node: Node, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """The alpha reproducing the plain CROWN choice of the free line."""
        raise NotImplementedError(f"op {node.op} has no alpha parameter")

    def relax_fixed(self, node: Node, lo: torch.Tensor, hi: torch.Tensor, alpha: torch.Tensor, cache: dict):
        """``relax(node, lo, hi, alpha)`` for bounds that stay fixed over many alphas (an optimisation
        loop): ``cache`` (one dict per node and bounds) may keep what does not depend on alpha."""
        return self.relax(node, lo, hi, alpha)

    def backward(self, node, A, in_bounds, relax_state):
        """Lower bound of A.f(x): lower line where A >= 0, upper line where A < 0."""
        s = relax_state
        neg = A.clamp(max=0)   # pos * l + neg * u = A * l + neg * (u - l), for slopes and intercepts
        A_in = A * s.lower_slope + neg * (s.upper_slope - s.lower_slope)
        if s.extra_A is not None:
            A_in = A_in + s.extra_A
        return [A_in], row_dot(A, s.lower_bias) + row_dot(neg, s.upper_bias - s.lower_bias)


def sum_dims(t: torch.Tensor) -> torch.Tensor:
    """Sum a ``[B, C, *shape]`` tensor over ``*shape``."""
    return t.flatten(2).sum(-1)


def row_dot(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum(A * v)`` over ``*shape`` -> ``[B, C]``, for ``A`` [B or 1, C, *shape] and ``v`` broadcastable.

    A ``v`` with a single objective dim ([B, 1, *shape]) is applied as a matrix product, which
    never materialises the ``[B, C, *shape]`` product.
    """
    if v.dim() == A.dim() and v.shape[1] == 1:
        return torch.matmul(A.flatten(2), v.flatten(2).transpose(1, 2)).squeeze(-1)
    return sum_dims(A * v)


def next_float(x: torch.Tensor, toward: float) -> torch.Tensor:
    """The neighbouring float of ``x`` toward +-inf; differentiable (gradient 1), so alpha-CROWN
    can optimise through bounds that were rounded outwards."""
    d = x.detach()
    step = torch.nextafter(d, torch.full_like(d, toward)) - d
    return x + torch.where(torch.isfinite(d), step, torch.zeros_like(d))
