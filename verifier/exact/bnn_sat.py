"""Binarized networks (Sign activations) verified exactly with SAT, after Narodytska et al. 2018.

Recognised shape (a chain of canonical nodes):  input -> [affine|reshape|gather]* -> sign, then
blocks  [reshape|gather]* -> linear|conv (weights in {-1,0,+1}) -> [affine|reshape|gather]* -> sign,
then a tail  [reshape|gather]* -> [linear|conv (any weights)] -> [affine|reshape|gather]* -> output.

Semantics are ONNX Sign (sign(0) = 0). A hidden neuron reads an integer sum S of {-1,0,+1} values
and outputs the sign of a*(S + b) + c; with the exact rational threshold t = -b - c/a it is +1 for
S > t and -1 for S < t (mirrored when a < 0). Integers within a float-rounding band of t are
encoded *ambiguously* (any of -1/0/+1 allowed), except an exact tie that float32 and float64 both
evaluate to exactly 0, which is encoded as 0. The output constraint ``A y <= b`` is encoded
exactly over rationals (float params are exact dyadic rationals) and relaxed by a float-error
tolerance. So the encoding over-approximates every rounding of the network: UNSAT => holds.
A SAT model is decoded to a concrete input and re-run with ``Graph.forward`` in float32 and
float64; only a confirmed violation is reported, anything else is blocked and remembered, and the
final UNSAT then answers unknown instead of holds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from math import ceil, floor, lcm
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pysat.formula import CNF

from verifier import clock
from verifier.exact.cardinality import (INTERRUPTIBLE, EncodingError, Formula, ForkedSolver, InProcessSolver, Lit,
                                         SumRow, neg, pb_at_most, rup_check)
from verifier.model.graph import Graph, Node
from verifier.model.ops import evaluate
from verifier.spec.spec import Polytope, Region

REINDEX_OPS = ("reshape", "gather")
CHAIN_OPS = ("affine", "reshape", "gather")
LINEAR_OPS = ("linear", "conv")
MAX_BASIS = 60_000_000  # largest dense weight matrix (entries) built for one layer
HIDDEN_BAND_REL = 1e-5  # relative float-error band around a sign threshold (generous on purpose)
PROOF_SOLVERS = ("cadical153", "cadical195", "glucose3", "glucose4", "glucose42", "lingeling")  # pysat with_proof


class _Refuse(EncodingError):
    """The graph is not a binarized network this module can encode exactly."""


# ----------------------------------------------------------------------------- structure


@dataclass(frozen=True, eq=False)
class AffineChain:
    """Per flat position: ops[start:] (x * scale + bias) applied to the source value (0 where src == -1)."""

    src: np.ndarray
    start: np.ndarray
    scales: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    def exact(self, p: int) -> tuple[Fraction, Fraction]:
        """Exact (a, c) with value = a * source + c at position p."""
        a, c = Fraction(1), Fraction(0)
        for s, b in zip(self.scales[self.start[p]:], self.biases[self.start[p]:]):
            a, c = a * Fraction(float(s[p])), c * Fraction(float(s[p])) + Fraction(float(b[p]))
        return a, c

    def run(self, p: int, v: float, dtype) -> float:
        """The chain at position p on value v, rounded after every op in ``dtype``."""
        v = dtype(v)
        for s, b in zip(self.scales[self.start[p]:], self.biases[self.start[p]:]):
            v = dtype(v * dtype(s[p])) + dtype(b[p])
        return float(v)

    def magnitude(self, p: int, m: float) -> float:
        """Bound on the absolute intermediate values when the source is at most m in magnitude."""
        for s, b in zip(self.scales[self.start[p]:], self.biases[self.start[p]:]):
            m = m * abs(float(s[p])) + abs(float(b[p]))
        return m

    def n_ops(self) -> int:
        """Length of the op list (an upper bound for every position)."""
        return len(self.scales)


@dataclass(frozen=True, eq=False)
class SignLayer:
    """Sign of a chain applied to ``row_scale * (weight @ s_prev) + bias`` (layer 0: to the inputs)."""

    chain: AffineChain
    weight: np.ndarray | None  # int8 [m, n_prev], entries in {-1, 0, +1}
    bias: np.ndarray | None  # float64 [m], exact copies of the params
    row_scale: np.ndarray | None = None  # float64 [m] > 0: the linear row is row_scale * weight (fused BN)


@dataclass(frozen=True, eq=False)
class OutputLayer:
    """Outputs: chain applied to ``weight @ s_last + bias`` (weight float64, exact copies)."""

    chain: AffineChain
    weight: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True, eq=False)
class BnnStructure:
    """A recognised binarized network: sign layers (the first reads the input) and the output map."""

    layers: tuple[SignLayer, ...]
    output: OutputLayer
    n_inputs: int
    n_outputs: int
    dtype: Any  # numpy float type of the params (the rounding the network runs in)


def _chain_of(graph: Graph) -> list[Node]:
    """The nodes as a single chain from the input to the output, or refuse."""
    prev = graph.input_name
    for node in graph.nodes:
        if node.inputs != (prev,):
            raise _Refuse(f"not a chain: node {node.name} ({node.op}) reads {list(node.inputs)}, expected [{prev}]")
        prev = node.name
    if prev != graph.output_name:
        raise _Refuse("the output is not the last node of the chain")
    return list(graph.nodes)


def _track(nodes: list[Node], n: int, allowed: tuple[str, ...]) -> AffineChain:
    """Follow flat positions through affine / reshape / gather nodes."""
    src, start = np.arange(n), np.zeros(n, dtype=np.int64)
    scales: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    for node in nodes:
        if node.op not in allowed:
            raise _Refuse(f"op {node.op} (node {node.name}) not allowed here (expected one of {list(allowed)})")
        if node.op == "affine":
            shape = node.shape
            scales.append(np.broadcast_to(node.params["scale"].detach().cpu().numpy(), shape).reshape(-1))
            biases.append(np.broadcast_to(node.params["bias"].detach().cpu().numpy(), shape).reshape(-1))
        elif node.op == "gather":
            idx = node.params["index"].detach().cpu().numpy().reshape(-1).astype(np.int64)
            ok, safe = idx >= 0, np.clip(idx, 0, None)
            src = np.where(ok, src[safe], -1)
            start = np.where(ok, start[safe], len(scales))
            scales = [s[safe] for s in scales]
            biases = [b[safe] for b in biases]
    return AffineChain(src, start, tuple(scales), tuple(biases))


def _basis(nodes64: list[Node], prev_shape: tuple[int, ...], zero_bias: bool) -> np.ndarray:
    """Dense matrix [out, n_prev] of reindex ops + one linear/conv (bias dropped), evaluated exactly."""
    n_prev = int(np.prod(prev_shape))
    n_out = int(np.prod(nodes64[-1].shape))
    if n_prev * n_out > MAX_BASIS:
        raise _Refuse(f"layer too large for the dense encoding ({n_out} x {n_prev})")
    x = torch.eye(n_prev, dtype=torch.float64).reshape((n_prev,) + tuple(prev_shape))
    for node in nodes64:
        if zero_bias and node.op in LINEAR_OPS:
            node = Node(node.name, node.op, node.inputs, node.shape, {**node.params, "bias": None}, node.attrs)
        x = evaluate(node, [x])
    return x.reshape(n_prev, -1).T.contiguous().numpy()


def _segment(nodes: list[Node]) -> tuple[list[Node], Node | None, list[Node]]:
    """Split a segment into (reindex ops, the linear/conv node or None, post chain)."""
    lin = [i for i, n in enumerate(nodes) if n.op in LINEAR_OPS]
    if len(lin) > 1:
        raise _Refuse(f"{len(lin)} linear/conv nodes between two sign layers (need one)")
    if not lin:
        return [], None, nodes
    i = lin[0]
    return nodes[:i], nodes[i], nodes[i + 1:]


def _segment_weights(pre64: list[Node], lin64: Node, prev_shape) -> tuple[np.ndarray, np.ndarray]:
    """(weight [m, n_prev] float64, bias [m]) of reindex + linear/conv, both exact."""
    weight = _basis(pre64 + [lin64], prev_shape, zero_bias=True)
    zero = torch.zeros((1,) + tuple(prev_shape), dtype=torch.float64)
    for node in pre64 + [lin64]:
        zero = evaluate(node, [zero])  # 0 * w + b: exactly the bias
    return weight, zero.reshape(-1).numpy().copy()


def _hidden_layer(nodes, nodes64, prev_shape) -> SignLayer:
    """A binarized block: reindex -> linear/conv with {-1,0,+1} weights -> chain (-> sign)."""
    pre, lin, post = _segment(nodes)
    if lin is None:
        raise _Refuse("two sign layers without a linear/conv between them")
    k = len(pre)
    _track(pre, int(np.prod(prev_shape)), REINDEX_OPS)
    weight, bias = _segment_weights(nodes64[:k], nodes64[k], prev_shape)
    mag = np.abs(weight)
    scale = mag.max(axis=1)
    if np.any((mag != 0) & (mag != scale[:, None])):
        row = int(np.argmax(np.any((mag != 0) & (mag != scale[:, None]), axis=1)))
        raise _Refuse(f"node {lin.name}: row {row} is not c * {{-1,0,+1}} (effective weights must be in "
                      f"{{-1,0,+1}} up to one positive scale per row), found {np.unique(weight[row])[:4].tolist()}")
    scale[scale == 0] = 1.0
    chain = _track(post, lin.size, CHAIN_OPS)
    return SignLayer(chain, np.sign(weight).astype(np.int8), bias, scale)


def _output_layer(nodes, nodes64, prev_shape) -> OutputLayer:
    """The tail after the last sign: reindex -> optional linear/conv (real weights) -> chain."""
    n_prev = int(np.prod(prev_shape))
    pre, lin, post = _segment(nodes)
    if lin is None:
        return OutputLayer(_track(post, n_prev, CHAIN_OPS), np.eye(n_prev), np.zeros(n_prev))
    k = len(pre)
    moved = _track(pre, n_prev, REINDEX_OPS).src
    used = moved[moved >= 0]
    if len(np.unique(used)) != len(used):
        raise _Refuse("the last sign values are duplicated before the final linear (sums of weights inexact)")
    weight, bias = _segment_weights(nodes64[:k], nodes64[k], prev_shape)
    return OutputLayer(_track(post, lin.size, CHAIN_OPS), weight, bias)


def _param_dtype(graph: Graph):
    """numpy float type of the graph's floating params (float32 when there are none)."""
    for node in graph.nodes:
        for t in node.params.values():
            if t is not None and t.is_floating_point():
                return {torch.float64: np.float64, torch.float16: np.float16}.get(t.dtype, np.float32)
    return np.float32


def _parse(graph: Graph) -> BnnStructure:
    """Recognise the binarized shape or raise ``_Refuse`` with the reason."""
    nodes = _chain_of(graph)
    nodes64 = list(graph.to(dtype=torch.float64).nodes)
    cuts = [i for i, n in enumerate(nodes) if n.op == "sign"]
    if not cuts:
        raise _Refuse("no sign activation")
    bounds = [-1] + cuts + [len(nodes)]
    segs = [(nodes[a + 1:b], nodes64[a + 1:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    layers = [SignLayer(_track(segs[0][0], graph.n_inputs, CHAIN_OPS), None, None)]
    for (seg, seg64), cut in zip(segs[1:-1], cuts[:-1]):
        layers.append(_hidden_layer(seg, seg64, nodes[cut].shape))
    output = _output_layer(segs[-1][0], segs[-1][1], nodes[cuts[-1]].shape)
    return BnnStructure(tuple(layers), output, graph.n_inputs, graph.n_outputs, _param_dtype(graph))


def recognise_bnn(graph: Graph) -> BnnStructure | None:
    """The binarized structure of ``graph``, or None (``bnn_reason`` says why)."""
    try:
        return _parse(graph)
    except _Refuse:
        return None


def bnn_reason(graph: Graph) -> str:
    """Why ``graph`` is (or is not) a binarized network this module encodes."""
    try:
        s = _parse(graph)
    except _Refuse as exc:
        return str(exc)
    sizes = [len(layer.chain.src) for layer in s.layers]
    return f"binarized network: {len(sizes)} sign layers of sizes {sizes}, {s.n_outputs} outputs"


# ----------------------------------------------------------------------------- encoding

Value = tuple  # ("c", v) constant | ("b", y): +1 iff y, else -1 | ("t", p, n): +1 iff p, -1 iff n, else 0


def _row(weight_row: np.ndarray, prev: list[Value]) -> SumRow:
    """The sum of a {-1,0,+1} weight row over the previous layer's values."""
    row = SumRow(0, [], [])
    for j in np.flatnonzero(weight_row):
        w, val = int(weight_row[j]), prev[j]
        if val[0] == "c":
            row.const += w * val[1]
        elif val[0] == "b":
            row.two.append(val[1] if w > 0 else -val[1])
        else:
            row.three.append((val[1], -val[2]) if w > 0 else (val[2], -val[1]))
    return row


def _sign(x) -> int:
    """Sign of a number as -1, 0, +1."""
    return int(x > 0) - int(x < 0)


def _rel(chain: AffineChain, dtype) -> float:
    """Relative float-error band used around sign thresholds."""
    return max(HIDDEN_BAND_REL, 4 * (chain.n_ops() + 2) * float(np.finfo(dtype).eps))


def _const_sign(chain: AffineChain, p: int, exact: Fraction, pre: float, dtype) -> Value:
    """A sign input that does not depend on any variable: all roundings must agree."""
    e = _sign(exact)
    if not (_sign(chain.run(p, pre, dtype)) == _sign(chain.run(p, pre, np.float64)) == e):
        raise _Refuse(f"float rounding decides the constant sign at position {p}")
    return ("c", e)


def _three(f: Formula, p_need: Lit, p_force: Lit, n_need: Lit, n_force: Lit) -> Value:
    """A 3-valued neuron: p -> p_need, p_force -> p, n -> n_need, n_force -> n, not both."""
    p, n = f.new(), f.new()
    f.add([-p, p_need])
    f.add([neg(p_force), p])
    f.add([-n, n_need])
    f.add([neg(n_force), n])
    f.add([-p, -n])
    return ("t", p, n)


def _lit_value(lit: Lit) -> Value:
    """A 2-valued neuron from the literal of its +1 condition."""
    return ("c", 1 if lit else -1) if isinstance(lit, bool) else ("b", lit)


def _band(chain: AffineChain, p: int, a: Fraction, alpha: float, bias: float, t: Fraction, n_fan: int,
          exact_sum: bool, dtype) -> Fraction:
    """Half-width (in units of S) of the band where float rounding may change the sign."""
    rel = _rel(chain, dtype)
    unit = float(np.finfo(dtype).eps) / 2
    gamma = 0.0 if exact_sum else 1.01 * n_fan * unit / max(1 - n_fan * unit, 0.5)
    a_abs, width = abs(float(a)), 1.0
    while True:
        reach = alpha * (abs(float(t)) + width + 1) + abs(bias)
        err = rel * chain.magnitude(p, reach) + a_abs * (1 + rel) * gamma * alpha * n_fan
        new = err / (a_abs * alpha)
        if new <= width:
            return Fraction(new)
        width = 2 * new


def _exact_multiples(alpha: float, n: int, dtype) -> bool:
    """Whether k * alpha is exact in ``dtype`` for every |k| <= n (then the matmul sum is exact)."""
    m = Fraction(alpha).numerator
    return m.bit_length() + n.bit_length() <= np.finfo(dtype).nmant + 1


def _hidden_value(f: Formula, row: SumRow, chain: AffineChain, p: int, bias: float, alpha: float,
                  n_fan: int, dtype) -> Value:
    """Encode sign(chain(alpha * S + bias)) at position p over the row sum S."""
    a, c = chain.exact(p)
    c0, ak = a * Fraction(bias) + c, a * Fraction(alpha)
    if ak == 0 or chain.src[p] < 0:
        pre = float(dtype(bias)) if chain.src[p] >= 0 else 0.0
        return _const_sign(chain, p, c0 if chain.src[p] >= 0 else c, pre, dtype)
    t = -c0 / ak
    exact_sum = _exact_multiples(alpha, n_fan, dtype)
    width = _band(chain, p, a, alpha, bias, t, n_fan, exact_sum, dtype)
    band = row.achievable(ceil(t - width), floor(t + width))
    up = ak > 0  # value increasing in S
    if not band:
        return _lit_value(row.ge(f, floor(t) + 1) if up else neg(row.ge(f, ceil(t))))
    lo, hi = band[0], band[-1]
    if band == [t] and exact_sum and _clean_tie(chain, p, int(t), alpha, bias, dtype):
        plus, minus = row.ge(f, lo + 1), neg(row.ge(f, lo))
        return _tri_or_const(f, plus, minus) if up else _tri_or_const(f, neg(row.ge(f, lo)), row.ge(f, lo + 1))
    need_hi, force_hi = row.ge(f, lo), row.ge(f, hi + 1)  # S >= lo, S >= hi + 1
    if up:
        return _three(f, need_hi, force_hi, neg(force_hi), neg(need_hi))
    return _three(f, neg(force_hi), neg(need_hi), need_hi, force_hi)


def _tri_or_const(f: Formula, plus: Lit, minus: Lit) -> Value:
    """An exact 3-valued neuron from its +1 and -1 conditions (never both true)."""
    if plus is True:
        return ("c", 1)
    if minus is True:
        return ("c", -1)
    if plus is False and minus is False:
        return ("c", 0)
    p = plus if not isinstance(plus, bool) else f.new()
    n = minus if not isinstance(minus, bool) else f.new()
    if plus is False:
        f.add([-p])
    if minus is False:
        f.add([-n])
    return ("t", p, n)


def _clean_tie(chain: AffineChain, p: int, s: int, alpha: float, bias: float, dtype) -> bool:
    """Whether S = s gives exactly 0 in both the network dtype and float64 (alpha * s is exact)."""
    v_dt = chain.run(p, dtype(dtype(dtype(alpha) * dtype(s)) + dtype(bias)), dtype)
    v64 = chain.run(p, alpha * s + bias, np.float64)
    return v_dt == 0.0 and v64 == 0.0


@dataclass(frozen=True)
class _InputSign:
    """How one input X_i reaches the first sign layer: value a * x + c (exact), and its encoding."""

    index: int
    a: Fraction
    c: Fraction
    value: Value


def _input_value(f: Formula, chain: AffineChain, p: int, lo: float, hi: float, dtype) -> tuple[Value, Fraction, Fraction]:
    """Encode the sign of the first layer at position p over the input box (sound superset)."""
    a, c = chain.exact(p)
    ends = (a * Fraction(lo) + c, a * Fraction(hi) + c)
    vmin, vmax = min(ends), max(ends)
    band = Fraction(0)
    if chain.start[p] < chain.n_ops():
        band = Fraction(_rel(chain, dtype) * chain.magnitude(p, max(abs(lo), abs(hi))))
    plus, minus, zero = vmax + band > 0, vmin - band < 0, vmin - band <= 0 <= vmax + band
    allowed = [v for v, ok in ((1, plus), (-1, minus), (0, zero)) if ok]
    if len(allowed) == 1:
        return ("c", allowed[0]), a, c
    if not zero:
        return ("b", f.new()), a, c
    p_lit, n_lit = f.new(), f.new()
    f.add([-p_lit, -n_lit])
    if not plus:
        f.add([-p_lit])
    if not minus:
        f.add([-n_lit])
    return ("t", p_lit, n_lit), a, c


def _input_layer(f: Formula, chain: AffineChain, region: Region, dtype) -> tuple[list[Value], dict[int, _InputSign]]:
    """Values of the first sign layer and, per input used, how to decode it."""
    vals: list[Value] = []
    inputs: dict[int, _InputSign] = {}
    signature: dict[int, tuple] = {}
    for p, i in enumerate(chain.src.tolist()):
        if i < 0:
            vals.append(_const_sign(chain, p, chain.exact(p)[1], 0.0, dtype))
            continue
        sig = tuple((float(s[p]), float(b[p])) for s, b in zip(chain.scales[chain.start[p]:], chain.biases[chain.start[p]:]))
        if i in inputs:
            if signature[i] != sig:
                raise _Refuse(f"input X_{i} reaches the first sign layer through different affine maps")
            vals.append(inputs[i].value)
            continue
        value, a, c = _input_value(f, chain, p, float(region.lower[i]), float(region.upper[i]), dtype)
        inputs[i], signature[i] = _InputSign(i, a, c, value), sig
        vals.append(value)
    return vals, inputs


def _hidden_values(f: Formula, layer: SignLayer, prev: list[Value], dtype, deadline: float) -> list[Value]:
    """Encode one hidden sign layer over the previous layer's values."""
    rows: dict[int, SumRow] = {}
    vals: list[Value] = []
    for p, k in enumerate(layer.chain.src.tolist()):
        if p % 16 == 0 and clock.now() > deadline:
            raise TimeoutError("timeout while encoding")
        if k < 0:
            vals.append(_hidden_value(f, SumRow(0, [], []), layer.chain, p, 0.0, 1.0, 0, dtype))
            continue
        if k not in rows:
            rows[k] = _row(layer.weight[k], prev)
        n_fan = int(np.count_nonzero(layer.weight[k]))
        vals.append(_hidden_value(f, rows[k], layer.chain, p, float(layer.bias[k]), float(layer.row_scale[k]),
                                  n_fan, dtype))
    return vals


def _row_coefficients(out: OutputLayer, a_row: np.ndarray, b: float, dtype) -> tuple[dict[int, Fraction], Fraction]:
    """Exact q, r with ``a_row . y <= b`` (relaxed by the float error) iff ``q . s <= r``."""
    q: dict[int, Fraction] = {}
    rhs, mag = Fraction(b), abs(b)
    n_terms = out.weight.shape[1] + out.chain.n_ops() + 4
    for o in np.flatnonzero(a_row):
        ar = Fraction(float(a_row[o]))
        a, c = out.chain.exact(o)
        k = int(out.chain.src[o])
        if k < 0:
            rhs -= ar * c
            mag += abs(float(a_row[o])) * out.chain.magnitude(o, 0.0)
            continue
        rhs -= ar * (a * Fraction(float(out.bias[k])) + c)
        w = out.weight[k]
        for j in np.flatnonzero(w):
            q[j] = q.get(j, Fraction(0)) + ar * a * Fraction(float(w[j]))
        m = float(np.abs(w).sum()) + abs(float(out.bias[k]))
        mag += abs(float(a_row[o])) * out.chain.magnitude(o, m)
    tol = Fraction(max(1e-7, n_terms * float(np.finfo(dtype).eps)) * mag)
    return q, rhs + tol


def _output_constraint(f: Formula, out: OutputLayer, last: list[Value], poly: Polytope, dtype) -> list | None:
    """Clauses of ``A y <= b`` (every row, relaxed) as exact integer PB constraints; None if infeasible."""
    clauses: list[list[int]] = []
    for a_row, b in zip(poly.A, poly.b):
        q, rhs = _row_coefficients(out, a_row, float(b), dtype)
        den = lcm(rhs.denominator, *(v.denominator for v in q.values()))
        bound = rhs * den
        weighted: list[tuple[int, int]] = []
        for j, coef in q.items():
            w, val = int(coef * den), last[j]
            if val[0] == "c":
                bound -= w * val[1]
            elif val[0] == "b":
                weighted.append((2 * w, val[1]))
                bound += w
            else:
                weighted += [(w, val[1]), (-w, val[2])]
        cls = pb_at_most(weighted, floor(bound), f.vpool)
        if cls is None:
            return None
        clauses += cls
    return clauses


# ----------------------------------------------------------------------------- solving


@dataclass(frozen=True, eq=False)
class SatResult:
    """Outcome of the SAT check: status holds | violated | unknown, a counterexample when violated."""

    status: str
    x: np.ndarray | None
    reason: str
    stats: dict[str, Any]


def _encode(s: BnnStructure, region: Region, polys: tuple[Polytope, ...], encoding: str, deadline: float):
    """The formula, the input decoding table and per-layer counts; None formula when trivially safe."""
    f = Formula(encoding)
    vals, inputs = _input_layer(f, s.layers[0].chain, region, s.dtype)
    counts = [_count(vals)]
    for layer in s.layers[1:]:
        if clock.now() > deadline:
            raise TimeoutError("timeout while encoding")
        vals = _hidden_values(f, layer, vals, s.dtype, deadline)
        counts.append(_count(vals))
    selectors = []
    for poly in polys:
        cls = _output_constraint(f, s.output, vals, poly, s.dtype)
        if cls is None:
            continue
        if len(polys) == 1:
            f.clauses += cls
            return f, inputs, counts
        sel = f.new()  # sel -> this polytope; adding -sel to every clause gives exactly the implication
        f.clauses += [[-sel] + c for c in cls]
        selectors.append(sel)
    if not selectors:
        return None, inputs, counts
    f.add(selectors)
    return f, inputs, counts


def _count(vals: list[Value]) -> dict[str, int]:
    """How many neurons of a layer are constant, 2-valued and 3-valued."""
    kinds = [v[0] for v in vals]
    return {"const": kinds.count("c"), "two": kinds.count("b"), "three": kinds.count("t")}


def _value_in(model: set[int], val: Value) -> int:
    """The sign a model gives a neuron."""
    if val[0] == "c":
        return val[1]
    if val[0] == "b":
        return 1 if val[1] in model else -1
    return 1 if val[1] in model else (-1 if val[2] in model else 0)


def _block(val: Value, v: int) -> list[int]:
    """Literals that are true iff the neuron's value differs from v."""
    if val[0] == "c":
        return []
    if val[0] == "b":
        return [-val[1]] if v > 0 else [val[1]]
    return {1: [-val[1]], -1: [-val[2]], 0: [val[1], val[2]]}[v]


def _inside_f32(x: float, lo: float, hi: float) -> float:
    """A float32-representable value near x inside [lo, hi] when one exists, else x."""
    c = np.float32(x)
    for cand in (c, np.nextafter(c, np.float32(np.inf)), np.nextafter(c, np.float32(-np.inf))):
        if lo <= float(cand) <= hi and _sign(float(cand)) == _sign(x):
            return float(cand)
    return x


def _decode(inputs: dict[int, _InputSign], model: set[int], region: Region) -> np.ndarray:
    """A concrete input realising the model's first-layer signs (extreme points for +-1)."""
    x = np.array([_inside_f32((lo + hi) / 2.0, lo, hi) for lo, hi in zip(region.lower, region.upper)])
    for i, inp in inputs.items():
        lo, hi = float(region.lower[i]), float(region.upper[i])
        v = _value_in(model, inp.value)
        if v == 0:
            xi = float(-inp.c / inp.a) if inp.a != 0 else x[i]
            x[i] = min(max(xi, lo), hi)
            continue
        top = hi if inp.a >= 0 else lo  # maximises a * x + c
        bot = lo if inp.a >= 0 else hi
        x[i] = _inside_f32(top if v > 0 else bot, lo, hi)
    return x


def _confirms(graph: Graph, x: np.ndarray, region: Region, polys: tuple[Polytope, ...], dtype) -> int | None:
    """Index of a polytope that x (inside the box) reaches in the network dtype and in float64."""
    if not region.contains(x):
        return None
    tdt = {np.float64: torch.float64, np.float16: torch.float16}.get(dtype, torch.float32)
    ys = []
    for t in (tdt, torch.float64):
        xt = torch.as_tensor(x, dtype=t).reshape((1,) + tuple(graph.input_shape))
        with torch.no_grad():
            ys.append(graph.to(dtype=t).forward(xt).reshape(-1).double().numpy())
    for i, poly in enumerate(polys):
        if all(np.all(np.isfinite(y)) and poly.satisfied_by(y) for y in ys):
            return i
    return None


def _sign_points(s: BnnStructure, region: Region) -> list[np.ndarray]:
    """Per input, the points worth trying: both box ends and the sign change (each sign it can take)."""
    chain, points = s.layers[0].chain, [np.array([(lo + hi) / 2]) for lo, hi in zip(region.lower, region.upper)]
    for p, i in enumerate(chain.src.tolist()):
        if i < 0:
            continue
        lo, hi = float(region.lower[i]), float(region.upper[i])
        a, c = chain.exact(p)
        zero = [min(max(float(-c / a), lo), hi)] if a != 0 else []
        points[i] = np.unique([_inside_f32(v, lo, hi) for v in [lo, hi] + zero])
    return points


def _margins(graph: Graph, xs: np.ndarray, polys: tuple[Polytope, ...], dtype) -> np.ndarray:
    """Per sample, the worst case over both precisions of min over polytopes of max_r (A y - b)_r."""
    tdt = {np.float64: torch.float64, np.float16: torch.float16}.get(dtype, torch.float32)
    worst = np.full(len(xs), -np.inf)
    for t in (tdt, torch.float64):
        with torch.no_grad():
            ys = graph.to(dtype=t).forward(torch.as_tensor(xs, dtype=t).reshape((len(xs),) + tuple(graph.input_shape)))
        ys = ys.reshape(len(xs), -1).double().numpy()
        m = np.min([np.max(ys @ p.A.T - p.b, axis=1) for p in polys], axis=0)
        worst = np.maximum(worst, np.nan_to_num(m, nan=np.inf))
    return worst


def _attack(graph: Graph, s: BnnStructure, region: Region, polys, samples: int, seed: int) -> np.ndarray | None:
    """Random sign patterns, then greedy one-input moves on the margin; a violating x or None."""
    points = _sign_points(s, region)
    free = [i for i, pts in enumerate(points) if len(pts) > 1]
    rng = np.random.default_rng(seed)
    xs = np.array([[pts[rng.integers(len(pts))] for pts in points] for _ in range(max(samples, 1))])
    margins = _margins(graph, xs, polys, s.dtype)
    best, m = xs[int(np.argmin(margins))], float(margins.min())
    for _ in range(8 if free else 0):
        if m <= 0:
            break
        moves = [(i, v) for i in free for v in points[i] if v != best[i]]
        cand = np.repeat(best[None], len(moves), axis=0)
        for row, (i, v) in enumerate(moves):
            cand[row, i] = v
        cm = _margins(graph, cand, polys, s.dtype)
        if cm.min() >= m:
            break
        best, m = cand[int(np.argmin(cm))], float(cm.min())
    return best if m <= 0 and _confirms(graph, best, region, polys, s.dtype) is not None else None


def _search(f: Formula, inputs, graph: Graph, s: BnnStructure, region: Region, polys: tuple[Polytope, ...],
            backend, deadline: float, stats: dict) -> tuple[str, np.ndarray | None, str]:
    """Solve; confirm each model concretely; block unconfirmed input patterns and solve again."""
    borderline = 0
    while True:
        answer, model_list = backend.solve(deadline)
        if answer is None:
            return "unknown", None, "timeout"
        if not answer:
            if borderline:
                return "unknown", None, (f"{borderline} input sign pattern(s) satisfy the encoding only within the "
                                         "float-rounding tolerance and none was confirmed concretely")
            return "holds", None, "UNSAT: no input sign pattern reaches the unsafe polytope"
        model = set(lit for lit in model_list if lit > 0)
        x = _decode(inputs, model, region)
        hit = _confirms(graph, x, region, polys, s.dtype)
        if hit is not None:
            stats["polytope"] = hit
            return "violated", x, f"SAT model reaches polytope {hit}, confirmed by Graph.forward (network dtype, float64)"
        borderline += 1
        stats["borderline"] = borderline
        clause = [lit for inp in inputs.values() for lit in _block(inp.value, _value_in(model, inp.value))]
        if not clause:
            return "unknown", None, "the only input sign pattern is within the rounding tolerance"
        backend.add_clause(clause)


def _write_proof(backend, f: Formula, proof_path: str, name: str, deadline: float, stats: dict) -> None:
    """Write the DRAT proof and the DIMACS CNF beside it; RUP-check it while time is left."""
    proof = Path(proof_path)
    cnf_path = proof.with_suffix(".cnf")
    CNF(from_clauses=f.clauses).to_file(str(cnf_path))
    lines = backend.write_proof(proof)
    checked, why = rup_check(f.clauses, proof.read_text().splitlines(), deadline)
    stats.update(proof_path=str(proof), cnf_path=str(cnf_path), proof_solver=name, proof_lines=lines,
                 proof_checked=checked, proof_check_reason=f"no DRAT checker (drat-trim) is installed here; {why}")


def verify_bnn(graph: Graph, region: Region, polytope: Polytope, *, timeout: float = 60.0,
               solver: str = "cadical153", proof_path: str | None = None, encoding: str = "auto",
               structure: BnnStructure | None = None, attack_samples: int = 256) -> SatResult:
    """Decide whether some x in the region's box drives the binarized ``graph`` into ``polytope``."""
    return verify_bnn_any(graph, region, (polytope,), timeout=timeout, solver=solver, proof_path=proof_path,
                          encoding=encoding, structure=structure, attack_samples=attack_samples)


def verify_bnn_any(graph: Graph, region: Region, polytopes, *, timeout: float = 60.0,
                   solver: str = "cadical153", proof_path: str | None = None, encoding: str = "auto",
                   structure: BnnStructure | None = None, attack_samples: int = 256) -> SatResult:
    """Like ``verify_bnn`` for the disjunction of ``polytopes`` (one SAT formula, selector per polytope).

    ``attack_samples`` > 0 first tries that many random sign patterns plus greedy moves (0: pure SAT).
    """
    polys = tuple(polytopes)
    t0 = time.monotonic()
    deadline = t0 + timeout
    stats: dict[str, Any] = {"solver": solver, "encoding": encoding}
    try:
        s = structure if structure is not None else _parse(graph)
        if attack_samples > 0:
            x = _attack(graph, s, region, polys, attack_samples, seed=0)
            stats["attack_s"] = time.monotonic() - t0
            if x is not None:
                return SatResult("violated", x, "sampled sign pattern confirmed by Graph.forward", stats)
        f, inputs, counts = _encode(s, region, polys, encoding, deadline)
    except EncodingError as exc:
        return SatResult("unknown", None, f"not encodable: {exc}", stats)
    except TimeoutError:
        return SatResult("unknown", None, "timeout", stats)
    stats.update(layers=counts, encode_s=time.monotonic() - t0)
    if f is None:
        return SatResult("holds", None, "every unsafe polytope is infeasible over all sign patterns", stats)
    stats.update(vars=f.vpool.top, clauses=len(f.clauses))
    if proof_path is not None and solver not in PROOF_SOLVERS:
        return SatResult("unknown", None, f"solver {solver} cannot log proofs (use one of {PROOF_SOLVERS})", stats)
    t1 = time.monotonic()
    backend = (InProcessSolver if solver in INTERRUPTIBLE else ForkedSolver)(solver, f.clauses, proof_path is not None)
    try:
        status, x, reason = _search(f, inputs, graph, s, region, polys, backend, deadline, stats)
        if status == "holds" and proof_path is not None:
            _write_proof(backend, f, proof_path, solver, deadline + 0.5 * timeout, stats)
    finally:
        backend.close()
    stats["solve_s"] = time.monotonic() - t1
    return SatResult(status, x, reason, stats)


def verify_bnn_spec(graph: Graph, spec, *, timeout: float = 60.0, proof_path: str | None = None,
                    **kwargs) -> SatResult:
    """Every region of a ``Spec`` (its polytopes as one disjunction): violated at the first, holds if all hold.

    With ``proof_path``, region i's proof goes to ``<proof_path>.r<i>`` (and its CNF beside it).
    """
    deadline = time.monotonic() + timeout
    try:
        structure = _parse(graph)
    except _Refuse as exc:
        return SatResult("unknown", None, f"not encodable: {exc}", {})
    reasons, stats = [], []
    for ri, region in enumerate(spec.regions):
        left = max(deadline - clock.now(), 0.0)
        proof = f"{proof_path}.r{ri}" if proof_path is not None else None
        res = verify_bnn_any(graph, region, region.unsafe, timeout=left, structure=structure, proof_path=proof, **kwargs)
        stats.append(res.stats)
        if res.status == "violated":
            hit = res.stats.get("polytope")
            return SatResult("violated", res.x, f"region {ri}, polytope {hit}: {res.reason}", {"regions": stats})
        if res.status != "holds":
            reasons.append(f"region {ri}: {res.reason}")
    if reasons:
        return SatResult("unknown", None, "; ".join(reasons), {"regions": stats})
    return SatResult("holds", None, "every region is UNSAT", {"regions": stats})
