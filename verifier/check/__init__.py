"""The independent float64 certificate checker (shares no code with ``verifier.bounds`` or ``verifier.search``)."""
from verifier.check.checker import CheckReport, check, check_files, leaf_bounds

__all__ = ["CheckReport", "check", "check_files", "leaf_bounds"]
