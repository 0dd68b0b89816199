"""A parsed VNN-LIB 1.0 ``Spec`` -> the same property as VNN-LIB 2.0 text (test helper).

Every float is printed as the exact decimal of its float64 value, so the 2.0 parser (which
reads literals as exact rationals) gets back the very same numbers.
"""
from __future__ import annotations

from decimal import Decimal

from verifier.spec.spec import Polytope, Region, Spec


def real(x: float) -> str:
    """``x`` as a plain decimal literal of VNN-LIB 2.0's real type (exact, no exponent)."""
    text = format(Decimal(float(x)), "f")
    if "." not in text:
        text += ".0"
    return "0.0" if Decimal(text) == 0 else text


def element(name: str, shape: tuple[int, ...], flat: int) -> str:
    """``X[0,0,0,3]``: the row-major element ``flat`` of a tensor of ``shape``."""
    idx = []
    for d in reversed(shape):
        idx.append(flat % d)
        flat //= d
    return f"{name}[{','.join(str(i) for i in reversed(idx))}]"


def spec_to_vnnlib2(spec: Spec, input_shape: tuple[int, ...], output_shape: tuple[int, ...],
                    network: str = "acas") -> str:
    """The 2.0 query (one network, ``X`` in, ``Y`` out) whose asserts describe the same unsafe set."""
    lines = ["(vnnlib-version <2.0>)",
             f"(declare-network {network}",
             f"    (declare-input X real [{','.join(str(d) for d in input_shape)}])",
             f"    (declare-output Y real [{','.join(str(d) for d in output_shape)}])",
             ")",
             "(assert (or"]
    lines += [_region(r, input_shape, output_shape) for r in spec.regions]
    lines.append("))")
    return "\n".join(lines) + "\n"


def _region(region: Region, input_shape, output_shape) -> str:
    """``(and <box bounds> (or <polytope> ...))``."""
    bounds = []
    for i, (lo, hi) in enumerate(zip(region.lower, region.upper)):
        x = element("X", input_shape, i)
        bounds.append(f"(<= {x} {real(hi)}) (>= {x} {real(lo)})")
    polys = " ".join(_polytope(p, output_shape) for p in region.unsafe)
    return f"    (and {' '.join(bounds)}\n        (or {polys}))"


def _polytope(poly: Polytope, output_shape) -> str:
    """``(and <row> ...)`` with rows ``(<= (+ (* a Y[..]) ...) b)``, zero coefficients skipped."""
    rows = []
    for a, b in zip(poly.A, poly.b):
        terms = " ".join(f"(* {real(c)} {element('Y', output_shape, j)})" for j, c in enumerate(a) if c != 0)
        if not terms:
            raise ValueError("a row with no output term cannot be written as a 2.0 comparison")
        rows.append(f"(<= (+ {terms}) {real(b)})")
    return f"(and {' '.join(rows)})"
