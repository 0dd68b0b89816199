"""VNN-LIB properties: parsing into a frozen ``Spec``."""
from verifier.spec.spec import Polytope, Region, Spec

__all__ = ["Polytope", "Region", "Spec"]
