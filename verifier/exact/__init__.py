"""Exact verification: MILP encoding of piecewise-linear graphs (HiGHS, gurobipy when licensed)."""
from verifier.exact.milp import MilpResult, MilpUnsupported, verify_milp

__all__ = ["MilpResult", "MilpUnsupported", "verify_milp"]
