"""Witnesses of 2.0 queries: the exact re-check of one whole disjunct, and the standard's witness lines.

Works on a compiled query (``verifier.query.compile.Compiled``) by duck typing, so the compiler
can call it without an import cycle.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np


def confirm(compiled, z: np.ndarray, observed: np.ndarray) -> bool:
    """Whether (z, observed) satisfies every atom of some disjunct, in exact arithmetic."""
    values = _values(compiled, z, observed)
    return any(all(_holds(atom, values) for atom in term) for term in compiled.terms)


def _values(compiled, z: np.ndarray, observed: np.ndarray) -> dict:
    """Every declared element's value as an exact rational, keyed like the query's atoms."""
    q = compiled.query
    u = compiled.inputs_of(np.asarray(z, dtype=np.float64))
    values: dict = {}
    offset = 0
    for net in compiled.networks:
        for d in net.observed:
            k = q.declarations.index(d)
            for i in range(d.size):
                values[(k, i)] = Fraction(float(observed[offset + i]))
            offset += d.size
        for d in net.inputs:
            k = q.declarations.index(d)
            for i in range(d.size):
                values[(k, i)] = Fraction(float(u[compiled.u_index((k, i))]))
    return values


def _holds(atom, values: dict) -> bool:
    total = atom.constant
    for mono, coeff in atom.terms:
        v = coeff
        for key in mono:
            v *= values[key]
        total += v
    return total < 0 if atom.op == "<" else total == 0 if atom.op == "==" else total <= 0


def witness_lines(compiled, z: np.ndarray, observed: np.ndarray) -> list[str]:
    """The standard's witness: ``NAME[i,j]=value`` for every declared variable, in declaration order."""
    values = _values(compiled, z, observed)
    lines = []
    for k, d in enumerate(compiled.query.declarations):
        for i in range(d.size):
            lines.append(f"{d.element(i)}={np.format_float_positional(float(values[(k, i)]), unique=True, trim='0')}")
    return lines
