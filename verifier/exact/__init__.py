"""Exact verification: MILP for piecewise-linear graphs (HiGHS, gurobipy when licensed), SAT for BNNs.

Names are imported on first use, so importing the package needs neither scipy nor pysat.
"""
import importlib

_WHERE = {"BnnStructure": "bnn_sat", "SatResult": "bnn_sat", "bnn_reason": "bnn_sat", "recognise_bnn": "bnn_sat",
          "verify_bnn": "bnn_sat", "verify_bnn_any": "bnn_sat", "verify_bnn_spec": "bnn_sat",
          "MilpResult": "milp", "MilpUnsupported": "milp", "verify_milp": "milp"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """Load ``name`` from its submodule when it is first asked for."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
