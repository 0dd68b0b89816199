"""Exact elimination of linear equalities between input variables: ``u = M z + c``.

A 2.0 query may tie inputs together (``X_g == X_f``, ``X_g[0] == X_f[0] + 0.1``). Bounding the
networks over a box of all inputs would lose that link, so equalities that hold in every
disjunct are solved exactly (rational Gaussian elimination, sparse): each equality fixes one
*pivot* input as an affine function of the others, and the remaining *free* inputs ``z`` are
what the engine searches over. The pivot chosen is the equality's last input in declaration
order, so the first network's inputs stay free and a copy's inputs follow them.

An inequality between inputs that holds in every disjunct (``X_g >= X_f``) becomes an equality
with a non-negative slack variable (``X_g == X_f + s``, ``s >= 0``): the engine then splits on
the gap s itself, which is what makes monotonicity queries provable by splitting.
"""
from __future__ import annotations

from fractions import Fraction

Affine = dict[int, Fraction]    # variable -> coefficient; the key -1 holds the constant
CONST = -1


class InconsistentEqualities(ValueError):
    """The input equalities have no common solution (every disjunct is empty)."""


def eliminate(n: int, equalities: list[Affine]) -> dict[int, Affine]:
    """Solve ``sum_k a_k u_k + a_const == 0`` for pivots; {pivot: affine over free variables}.

    ``n`` is the number of input variables (indices 0..n-1); indices >= n are slack variables,
    chosen as pivots only when an equality has no input left. Redundant equalities are dropped;
    a contradictory one raises ``InconsistentEqualities``.
    """
    pivots: dict[int, Affine] = {}
    users: dict[int, set[int]] = {}          # free variable -> pivots whose expression reads it
    for eq in equalities:
        expr = substitute(eq, pivots)
        variables = [k for k in expr if k != CONST]
        if not variables:
            if expr.get(CONST, 0) != 0:
                raise InconsistentEqualities(f"input equalities contradict each other (0 == {expr[CONST]})")
            continue
        inputs = [k for k in variables if k < n]
        p = max(inputs) if inputs else max(variables)
        a = expr.pop(p)
        solved = {k: -v / a for k, v in expr.items()}
        for q in users.pop(p, set()):      # p is no longer free: rewrite the pivots that read it
            pivots[q] = substitute(pivots[q], {p: solved})
            for k in pivots[q]:
                if k != CONST:
                    users.setdefault(k, set()).add(q)
        pivots[p] = solved
        for k in solved:
            if k != CONST:
                users.setdefault(k, set()).add(p)
    return pivots


def substitute(expr: Affine, pivots: dict[int, Affine]) -> Affine:
    """``expr`` with every pivot replaced by its affine expression over free variables."""
    out: Affine = {}
    for k, v in expr.items():
        if k in pivots:
            for j, w in pivots[k].items():
                out[j] = out.get(j, Fraction(0)) + v * w
        else:
            out[k] = out.get(k, Fraction(0)) + v
    return {k: v for k, v in out.items() if v != 0 or k == CONST}
