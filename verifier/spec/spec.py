"""The frozen property a verifier checks: where inputs range and which outputs are unsafe.

VNN-LIB asserts describe a counterexample. A ``Spec`` is their normal form: the property is
**violated** iff for some region there is an x inside the region's box whose output y = f(x)
satisfies every row of one of the region's unsafe polytopes (``A y <= b``). It **holds** iff no
such x exists for any region and polytope.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _frozen(a, dtype=np.float64) -> np.ndarray:
    a = np.array(a, dtype=dtype, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Polytope:
    """A conjunction of linear output constraints ``A y <= b`` (A: [m, n_outputs], b: [m]).

    ``strict`` (optional, [m] bools) marks rows a witness must satisfy strictly (``A_i y < b_i``,
    from VNN-LIB 2.0's ``<``, ``>`` and ``!=``). Proofs treat every row as closed, which only
    enlarges the unsafe set.
    """

    A: np.ndarray
    b: np.ndarray
    strict: np.ndarray | None = None
    aux: np.ndarray | None = None      # rows over the inputs only (2.0 input constraints): never guide splitting

    def __post_init__(self):
        object.__setattr__(self, "A", _frozen(self.A))
        object.__setattr__(self, "b", _frozen(self.b))
        if self.A.ndim != 2 or self.b.shape != (self.A.shape[0],):
            raise ValueError(f"polytope needs A [m, n] and b [m], got {self.A.shape} and {self.b.shape}")
        strict = np.zeros(self.b.shape, dtype=bool) if self.strict is None else self.strict
        object.__setattr__(self, "strict", _frozen(strict, dtype=bool))
        if self.strict.shape != self.b.shape:
            raise ValueError(f"polytope strict mask has shape {self.strict.shape}, rows {self.b.shape}")
        if self.aux is not None:
            object.__setattr__(self, "aux", _frozen(self.aux, dtype=bool))

    def satisfied_by(self, y: np.ndarray, tol: float = 0.0) -> bool:
        """Whether output vector ``y`` lies in the polytope (every row holds, within ``tol``; strict rows strictly)."""
        lhs = self.A @ np.asarray(y, dtype=np.float64).reshape(-1)
        return bool(np.all(np.where(self.strict, lhs < self.b + tol, lhs <= self.b + tol)))


@dataclass(frozen=True, eq=False)
class Region:
    """One input box and the disjunction of output polytopes that are unsafe for it."""

    lower: np.ndarray
    upper: np.ndarray
    unsafe: tuple[Polytope, ...]

    def __post_init__(self):
        object.__setattr__(self, "lower", _frozen(self.lower))
        object.__setattr__(self, "upper", _frozen(self.upper))
        object.__setattr__(self, "unsafe", tuple(self.unsafe))
        if self.lower.shape != self.upper.shape or self.lower.ndim != 1:
            raise ValueError("region bounds must be two vectors of equal length")
        if np.any(self.lower > self.upper):
            bad = int(np.argmax(self.lower > self.upper))
            raise ValueError(f"empty input box: X_{bad} has lower {self.lower[bad]} > upper {self.upper[bad]}")

    def contains(self, x: np.ndarray) -> bool:
        """Whether flat input ``x`` lies in the box (exactly, no tolerance)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return bool(np.all(x >= self.lower) and np.all(x <= self.upper))


@dataclass(frozen=True, eq=False)
class Spec:
    """A disjunction of regions over flat inputs X_0..X_{n-1} and outputs Y_0..Y_{m-1}."""

    n_inputs: int
    n_outputs: int
    regions: tuple[Region, ...]
    source: str = ""
    sha256: str = ""     # of the file it was read from, when known (certificates name it)

    def __post_init__(self):
        object.__setattr__(self, "regions", tuple(self.regions))
        for r in self.regions:
            if r.lower.shape != (self.n_inputs,):
                raise ValueError(f"region box has {r.lower.shape[0]} inputs, spec declares {self.n_inputs}")
            for p in r.unsafe:
                if p.A.shape[1] != self.n_outputs:
                    raise ValueError(f"constraint has {p.A.shape[1]} outputs, spec declares {self.n_outputs}")

    def violation(self, x: np.ndarray, y: np.ndarray, tol: float = 0.0) -> tuple[int, int] | None:
        """(region, polytope) indices that input/output pair (x, y) violates, or None."""
        for ri, region in enumerate(self.regions):
            if region.contains(x):
                for pi, poly in enumerate(region.unsafe):
                    if poly.satisfied_by(y, tol):
                        return ri, pi
        return None
