"""Screening before the BNN SAT encoding: interval ranges of every sign neuron and the cone of influence.

``screen`` runs interval arithmetic on the integer row sums, layer by layer over the input box,
and gives each neuron the smallest and largest sign value ({-1, 0, +1}) it can take. The
float-rounding band it allows around a sign threshold is at least twice the encoder's
(``bnn_sat._band``), evaluated at the largest reachable sum, so a neuron screened constant is that
constant in every rounding the encoder admits: it becomes a constant, not a SAT variable. The
cone is then walked backwards from the output rows of the property: only the non-constant
neurons the rows actually read (through non-constant neurons) are encoded.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import scipy.sparse as sp

from verifier import clock
from verifier.exact.bnn_structure import BnnStructure, OutputLayer, PoolLayer, SignLayer
from verifier.spec.spec import Polytope

HIDDEN_BAND_REL = 1e-5  # relative float-error band around a sign threshold (generous on purpose)


@dataclass(frozen=True, eq=False)
class Plan:
    """Per layer: value ranges (int8 lo, hi), which neurons to encode, which read the previous layer."""

    lo: tuple[np.ndarray, ...]
    hi: tuple[np.ndarray, ...]
    needed: tuple[np.ndarray, ...]
    edges: tuple[int, ...]  # per layer: (encoded neuron, variable input) pairs, the size of its sums

    def summary(self) -> list[dict[str, int]]:
        """Per layer: neurons, constants by screening, neurons in the cone, variable inputs they read."""
        return [{"neurons": len(lo), "stable": int(np.sum(lo == hi)), "cone": int(need.sum()), "edges": e}
                for lo, hi, need, e in zip(self.lo, self.hi, self.needed, self.edges)]


def rel_band(n_ops: int, dtype) -> float:
    """Relative float-error band used around sign thresholds."""
    return max(HIDDEN_BAND_REL, 4 * (n_ops + 2) * float(np.finfo(dtype).eps))


def _exact_sum(alpha: np.ndarray, n_fan: np.ndarray, dtype) -> np.ndarray:
    """Per row: whether k * alpha is exact in ``dtype`` for every |k| <= n_fan (the matmul sum is exact)."""
    uniq, inv = np.unique(alpha, return_inverse=True)
    bits = np.array([Fraction(float(a)).numerator.bit_length() for a in uniq], dtype=np.int64)[inv]
    fan_bits = np.frexp(n_fan.astype(np.float64))[1]
    return bits + fan_bits <= np.finfo(dtype).nmant + 1


def _sign_ranges(layer: SignLayer, lo: np.ndarray, hi: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, reads) of a sign layer from the previous layer's ranges; ``reads``: depends on it."""
    w = layer.weight
    pos = sp.csr_matrix(((w.data > 0).astype(np.float64), w.indices, w.indptr), shape=w.shape)
    neg = sp.csr_matrix(((w.data < 0).astype(np.float64), w.indices, w.indptr), shape=w.shape)
    lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
    s_lo_k, s_hi_k = pos @ lo64 - neg @ hi64, pos @ hi64 - neg @ lo64
    fan_k = np.diff(w.indptr)
    chain = layer.chain
    k = np.clip(chain.src, 0, None)
    alpha, bias, fan = layer.row_scale[k], layer.bias[k], fan_k[k]
    s_lo, s_hi = s_lo_k[k], s_hi_k[k]
    a, c, _ = chain.vector()
    ak = a * alpha
    reads = (chain.src >= 0) & (ak != 0)
    safe = np.where(reads, ak, 1.0)
    t = np.where(reads, -(a * bias + c) / safe, 0.0)
    rel = rel_band(chain.n_ops(), dtype)
    unit = float(np.finfo(dtype).eps) / 2
    gamma = np.where(_exact_sum(alpha, fan, dtype), 0.0, 1.01 * fan * unit / np.maximum(1 - fan * unit, 0.5))
    _, _, mag = chain.vector(alpha * (np.abs(t) + fan + 2) + np.abs(bias))
    width = 2 * (rel * mag / np.abs(safe) + (1 + rel) * gamma * fan) + 1e-6 + 1e-9 * np.abs(t)
    above, below = s_hi > t - width, s_lo < t + width
    zero = (s_lo <= t + width) & (s_hi >= t - width)
    plus, minus = np.where(ak > 0, above, below), np.where(ak > 0, below, above)
    out_lo = np.where(minus, -1, np.where(zero, 0, 1))
    out_hi = np.where(plus, 1, np.where(zero, 0, -1))
    out_lo, out_hi = np.where(reads, out_lo, -1), np.where(reads, out_hi, 1)  # left to the encoder's exact test
    return out_lo.astype(np.int8), out_hi.astype(np.int8), reads


def _pool_ranges(layer: PoolLayer, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranges of a maxpool over sign values: the max of the window's bounds."""
    w, ok = np.clip(layer.windows, 0, None), layer.windows >= 0
    return (np.where(ok, lo[w], -2).max(axis=1).astype(np.int8), np.where(ok, hi[w], -2).max(axis=1).astype(np.int8))


def output_support(out: OutputLayer, polys: tuple[Polytope, ...], n_last: int) -> np.ndarray:
    """Last-layer neurons any output row of the polytopes reads (a weight that may be nonzero)."""
    used = np.zeros(n_last, dtype=bool)
    rows = set()
    for poly in polys:
        for a_row in poly.A:
            for o in np.flatnonzero(a_row):
                k = int(out.chain.src[o])
                if k >= 0:
                    rows.add(k)
    if rows:
        used[out.weight[sorted(rows)].indices] = True
    return used


def screen(s: BnnStructure, lo0: np.ndarray, hi0: np.ndarray, polys: tuple[Polytope, ...],
           deadline: float) -> Plan:
    """Ranges of every layer from the first layer's, and the cone of the polytopes' output rows."""
    los, his, reads = [lo0.astype(np.int8)], [hi0.astype(np.int8)], [np.zeros(len(lo0), dtype=bool)]
    for layer in s.layers[1:]:
        if clock.now() > deadline:
            raise TimeoutError("timeout while screening neuron ranges")
        if isinstance(layer, PoolLayer):
            lo, hi = _pool_ranges(layer, los[-1], his[-1])
            reads.append(np.ones(len(lo), dtype=bool))
        else:
            lo, hi, r = _sign_ranges(layer, los[-1], his[-1], s.dtype)
            reads.append(r)
        los.append(lo)
        his.append(hi)
    needed = [np.zeros(len(lo), dtype=bool) for lo in los]
    needed[-1] = output_support(s.output, polys, len(los[-1])) & (los[-1] != his[-1])
    edges = [0] * len(los)
    for li in range(len(s.layers) - 1, 0, -1):
        layer, want = s.layers[li], np.flatnonzero(needed[li] & reads[li])
        if isinstance(layer, PoolLayer):
            cols = layer.windows[want].reshape(-1)
            cols = cols[cols >= 0]
        else:
            cols = layer.weight[np.unique(layer.chain.src[want])].indices
        varying = los[li - 1] != his[li - 1]
        needed[li - 1][cols] = True
        needed[li - 1] &= varying
        edges[li] = int(varying[cols].sum())
    return Plan(tuple(los), tuple(his), tuple(needed), tuple(edges))
