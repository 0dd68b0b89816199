"""Exact verification: MILP for piecewise-linear graphs (HiGHS, gurobipy when licensed), SAT for BNNs."""
from verifier.exact.bnn_sat import BnnStructure, SatResult, bnn_reason, recognise_bnn, verify_bnn, verify_bnn_any, verify_bnn_spec
from verifier.exact.milp import MilpResult, MilpUnsupported, verify_milp

__all__ = ["BnnStructure", "MilpResult", "MilpUnsupported", "SatResult", "bnn_reason", "recognise_bnn", "verify_bnn",
           "verify_bnn_any", "verify_bnn_spec", "verify_milp"]
