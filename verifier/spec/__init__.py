"""VNN-LIB properties: parsing into a frozen ``Spec``."""
from verifier.spec.spec import Polytope, Region, Spec
from verifier.spec.vnnlib import VnnlibError, load_vnnlib, parse_vnnlib

__all__ = ["Polytope", "Region", "Spec", "VnnlibError", "load_vnnlib", "parse_vnnlib"]
