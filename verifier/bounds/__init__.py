"""Bound propagation: IBP, CROWN and alpha-CROWN over canonical graphs."""
from verifier.bounds.alpha import SPEC, AlphaSet
from verifier.bounds.base import BoundOp, ElementwiseOp, RelaxState
from verifier.bounds.engine import BoundEngine, BoundResult
from verifier.bounds.interval import interval_bounds
from verifier.bounds.problem import DeadlineReached
from verifier.bounds.registry import OPS

__all__ = ["SPEC", "AlphaSet", "BoundEngine", "BoundOp", "BoundResult", "DeadlineReached", "ElementwiseOp", "OPS", "RelaxState",
           "interval_bounds"]
