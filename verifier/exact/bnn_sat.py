"""Binarized networks (Sign activations) verified exactly with SAT, after Narodytska et al. 2018.

The recognised shape (``bnn_structure``): input -> [affine|reshape|gather]* -> sign, then blocks
[maxpool]* [reshape|gather]* -> linear|conv ({-1,0,+1} weights, one positive scale per row) ->
[affine|reshape|gather]* -> sign, then a tail [maxpool]* [reshape|gather]* -> [linear|conv (any
weights)] -> [affine|reshape|gather]* -> output.

Semantics are ONNX Sign (sign(0) = 0). A hidden neuron reads an integer sum S of {-1,0,+1} values
and outputs the sign of a*(S + b) + c; with the exact rational threshold t = -b - c/a it is +1 for
S > t and -1 for S < t (mirrored when a < 0). Integers within a float-rounding band of t are
encoded *ambiguously* (any of -1/0/+1 allowed), except an exact tie that float32 and float64 both
evaluate to exactly 0, which is encoded as 0. A maxpool over sign values is exact in every float
type and is encoded exactly: +1 iff some input is +1, -1 iff every input is -1, else 0. The output
constraint ``A y <= b`` is encoded exactly over rationals (float params are exact dyadic
rationals) and relaxed by a float-error tolerance. So the encoding over-approximates every
rounding of the network: UNSAT => holds.

Before encoding, ``bnn_cone.screen`` fixes every neuron that interval arithmetic over the box
proves constant (with a rounding band at least twice the encoder's), and only the cone of the
property's output rows is encoded. A SAT model is decoded to a concrete input and re-run with
``Graph.forward`` in float32 and float64; only a confirmed violation is reported, anything else is
blocked (on the inputs in the cone) and remembered, and the final UNSAT then answers unknown
instead of holds. Every stage checks the deadline (``verifier.clock``) and leaves a log line.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from math import ceil, floor, lcm
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pysat.formula import CNF

from verifier import clock
from verifier.exact.bnn_attack import confirms, inside_f32, sample_patterns
from verifier.exact.bnn_cone import Plan, rel_band, screen
from verifier.exact.bnn_structure import (AffineChain, BnnStructure, OutputLayer, PoolLayer, Refuse, SignLayer,
                                          bnn_reason, parse, recognise_bnn)
from verifier.exact.cardinality import (INTERRUPTIBLE, EncodingError, Formula, ForkedSolver, InProcessSolver, Lit,
                                         SumRow, neg, pb_at_most, rup_check)
from verifier.model.graph import Graph
from verifier.spec.spec import Polytope, Region

__all__ = ["BnnStructure", "SatResult", "bnn_reason", "recognise_bnn", "verify_bnn", "verify_bnn_any",
           "verify_bnn_spec"]

PROOF_SOLVERS = ("cadical153", "cadical195", "glucose3", "glucose4", "glucose42", "lingeling")  # pysat with_proof
MAX_CLAUSES = 8_000_000  # a formula beyond this is not built (memory); the answer is unknown
MAX_EDGES = 250_000      # cone sums over more (neuron, variable input) pairs are not encoded (~30 clauses each)


# ----------------------------------------------------------------------------- encoding

Value = tuple  # ("c", v) constant | ("b", y): +1 iff y, else -1 | ("t", p, n): +1 iff p, -1 iff n, else 0


def _row(cols: np.ndarray, signs: np.ndarray, prev: list[Value | None]) -> SumRow:
    """The sum of a {-1,0,+1} weight row (columns, signs) over the previous layer's values."""
    row = SumRow(0, [], [])
    for j, w in zip(cols.tolist(), signs.tolist()):
        val = prev[j]
        if val is None:
            raise RuntimeError(f"neuron {j} is read but was left out of the cone")
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
    return rel_band(chain.n_ops(), dtype)


def _const_sign(chain: AffineChain, p: int, exact: Fraction, pre: float, dtype) -> Value:
    """A sign input that does not depend on any variable: all roundings must agree."""
    e = _sign(exact)
    if not (_sign(chain.run(p, pre, dtype)) == _sign(chain.run(p, pre, np.float64)) == e):
        raise Refuse(f"float rounding decides the constant sign at position {p}")
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


def _input_layer(f: Formula, chain: AffineChain, region: Region, dtype,
                 deadline: float) -> tuple[list[Value], dict[int, _InputSign]]:
    """Values of the first sign layer and, per input used, how to decode it."""
    vals: list[Value] = []
    inputs: dict[int, _InputSign] = {}
    signature: dict[int, tuple] = {}
    for p, i in enumerate(chain.src.tolist()):
        if p % 256 == 0 and clock.now() > deadline:
            raise TimeoutError("timeout while encoding the input layer")
        if i < 0:
            vals.append(_const_sign(chain, p, chain.exact(p)[1], 0.0, dtype))
            continue
        sig = tuple((float(s[p]), float(b[p])) for s, b in zip(chain.scales[chain.start[p]:], chain.biases[chain.start[p]:]))
        if i in inputs:
            if signature[i] != sig:
                raise Refuse(f"input X_{i} reaches the first sign layer through different affine maps")
            vals.append(inputs[i].value)
            continue
        value, a, c = _input_value(f, chain, p, float(region.lower[i]), float(region.upper[i]), dtype)
        inputs[i], signature[i] = _InputSign(i, a, c, value), sig
        vals.append(value)
    return vals, inputs


def _screened(n: int, plan: Plan | None, li: int) -> tuple[list[Value | None], np.ndarray]:
    """Start values of layer li (constants from screening, else None) and the positions to encode."""
    if plan is None:
        return [None] * n, np.arange(n)
    lo, hi, need = plan.lo[li], plan.hi[li], plan.needed[li]
    vals: list[Value | None] = [("c", int(v)) if v == h else None for v, h in zip(lo.tolist(), hi.tolist())]
    return vals, np.flatnonzero(need)


def _check_budget(f: Formula, deadline: float, what: str) -> None:
    """Stop at the deadline (or on cancel) and before the formula outgrows memory."""
    if clock.now() > deadline:
        raise TimeoutError(f"timeout while encoding {what}")
    if len(f.clauses) > MAX_CLAUSES:
        raise EncodingError(f"formula too large (over {MAX_CLAUSES} clauses while encoding {what})")


def _hidden_values(f: Formula, layer: SignLayer, prev: list[Value | None], dtype, deadline: float,
                   plan: Plan | None, li: int) -> list[Value | None]:
    """Encode one hidden sign layer (its positions in the plan's cone) over the previous layer's values."""
    rows: dict[int, SumRow] = {}
    vals, todo = _screened(len(layer.chain.src), plan, li)
    w = layer.weight
    for n_done, p in enumerate(todo.tolist()):
        if n_done % 8 == 0:
            _check_budget(f, deadline, f"layer {li}")
        k = int(layer.chain.src[p])
        if k < 0:
            vals[p] = _hidden_value(f, SumRow(0, [], []), layer.chain, p, 0.0, 1.0, 0, dtype)
            continue
        lo, hi = w.indptr[k], w.indptr[k + 1]
        if k not in rows:
            rows[k] = _row(w.indices[lo:hi], w.data[lo:hi], prev)
        vals[p] = _hidden_value(f, rows[k], layer.chain, p, float(layer.bias[k]), float(layer.row_scale[k]),
                                int(hi - lo), dtype)
    return vals


def _or(f: Formula, lits: list[int]) -> int:
    """A fresh literal equivalent to the disjunction of ``lits``."""
    r = f.new()
    f.add([-r] + lits)
    for lit in lits:
        f.add([r, -lit])
    return r


def _pool_value(f: Formula, items: list[Value]) -> Value:
    """The max of sign values, exactly: +1 iff some item is +1, -1 iff every item is -1, else 0."""
    consts = [v[1] for v in items if v[0] == "c"]
    if 1 in consts:
        return ("c", 1)
    var = [v for v in items if v[0] != "c"]
    if not var:
        return ("c", max(consts))
    has_zero = 0 in consts
    if len(var) == 1 and not has_zero:
        return var[0]  # max(v, -1, ...) = v
    plus = var[0][1] if len(var) == 1 else _or(f, [v[1] for v in var])
    if has_zero:
        return _tri_or_const(f, plus, False)
    if all(v[0] == "b" for v in var):
        return ("b", plus)  # -1 iff no item is +1
    minus = _or(f, [v[1] if v[0] == "b" else -v[2] for v in var])  # "some item is not -1"
    return ("t", plus, -minus)


def _pool_values(f: Formula, layer: PoolLayer, prev: list[Value | None], deadline: float, plan: Plan | None,
                 li: int) -> list[Value | None]:
    """Encode one maxpool layer (its positions in the plan's cone) over the previous sign values."""
    vals, todo = _screened(len(layer.windows), plan, li)
    for n_done, p in enumerate(todo.tolist()):
        if n_done % 64 == 0:
            _check_budget(f, deadline, f"maxpool layer {li}")
        window = layer.windows[p]
        items = [prev[j] for j in window[window >= 0].tolist()]
        if any(v is None for v in items):
            raise RuntimeError(f"maxpool {li}: a window input was left out of the cone")
        vals[p] = _pool_value(f, items)
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
        lo, hi = out.weight.indptr[k], out.weight.indptr[k + 1]
        cols, ws = out.weight.indices[lo:hi].tolist(), out.weight.data[lo:hi].tolist()
        for j, wj in zip(cols, ws):
            q[j] = q.get(j, Fraction(0)) + ar * a * Fraction(float(wj))
        m = float(np.abs(out.weight.data[lo:hi]).sum()) + abs(float(out.bias[k]))
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
            if coef == 0:
                continue
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
    log: list[str] = field(default_factory=list)


@dataclass
class Encoding:
    """The formula (None: every polytope is infeasible), input decoding, per-layer counts, the screening plan."""

    formula: Formula | None
    inputs: dict[int, "_InputSign"]
    counts: list[dict[str, int]]
    plan: Plan | None
    cone_inputs: set[int] = field(default_factory=set)


def _value_range(vals: list[Value]) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest value of each first-layer sign (constants exact, variables -1..+1)."""
    lo = np.array([v[1] if v[0] == "c" else -1 for v in vals], dtype=np.int8)
    hi = np.array([v[1] if v[0] == "c" else 1 for v in vals], dtype=np.int8)
    return lo, hi


def _encode(s: BnnStructure, region: Region, polys: tuple[Polytope, ...], encoding: str, deadline: float,
            reduce: bool = True, log: Callable[[str], Any] = lambda m: None) -> Encoding:
    """Encode the cone of the polytopes' rows (everything when not ``reduce``) over the region's box."""
    f = Formula(encoding)
    vals, inputs = _input_layer(f, s.layers[0].chain, region, s.dtype, deadline)
    plan = None
    if reduce:
        t0 = time.monotonic()
        plan = screen(s, *_value_range(vals), polys, deadline)
        summary = plan.summary()
        log(f"sat: screened {sum(x['neurons'] for x in summary[1:])} neurons in {time.monotonic() - t0:.2f}s: "
            f"{sum(x['stable'] for x in summary[1:])} stable, cone {[x['cone'] for x in summary]}, "
            f"{sum(plan.edges)} variable inputs in its sums")
        if sum(plan.edges) > MAX_EDGES:
            raise EncodingError(f"cone too large to encode: its sums read {sum(plan.edges)} variable inputs "
                                f"(limit {MAX_EDGES}); interval screening left {[x['cone'] for x in summary]} "
                                "neurons per layer")
        vals = [v if need else (v if v[0] == "c" else None) for v, need in zip(vals, plan.needed[0].tolist())]
    counts = [_count(vals)]
    for li, layer in enumerate(s.layers[1:], 1):
        _check_budget(f, deadline, f"layer {li}")
        if isinstance(layer, PoolLayer):
            vals = _pool_values(f, layer, vals, deadline, plan, li)
        else:
            vals = _hidden_values(f, layer, vals, s.dtype, deadline, plan, li)
        counts.append(_count(vals))
    chain0 = s.layers[0].chain
    cone = plan.needed[0] if plan is not None else np.ones(len(chain0.src), dtype=bool)
    out = Encoding(f, inputs, counts, plan, {int(i) for i in chain0.src[cone] if i >= 0})
    selectors = []
    for poly in polys:
        _check_budget(f, deadline, "the output constraint")
        cls = _output_constraint(f, s.output, vals, poly, s.dtype)
        if cls is None:
            continue
        if len(polys) == 1:
            f.clauses += cls
            return out
        sel = f.new()  # sel -> this polytope; adding -sel to every clause gives exactly the implication
        f.clauses += [[-sel] + c for c in cls]
        selectors.append(sel)
    if not selectors:
        out.formula = None
        return out
    f.add(selectors)
    return out


def _count(vals: list[Value | None]) -> dict[str, int]:
    """How many neurons of a layer are constant, 2-valued, 3-valued and left out (outside the cone)."""
    kinds = [v[0] if v is not None else "-" for v in vals]
    return {"const": kinds.count("c"), "two": kinds.count("b"), "three": kinds.count("t"), "skipped": kinds.count("-")}


def _true(model: set[int], lit: int) -> bool:
    """Whether a literal (either polarity) is true in a model given as its positive literals."""
    return lit in model if lit > 0 else -lit not in model


def _value_in(model: set[int], val: Value) -> int:
    """The sign a model gives a neuron."""
    if val[0] == "c":
        return val[1]
    if val[0] == "b":
        return 1 if _true(model, val[1]) else -1
    return 1 if _true(model, val[1]) else (-1 if _true(model, val[2]) else 0)


def _block(val: Value, v: int) -> list[int]:
    """Literals that are true iff the neuron's value differs from v."""
    if val[0] == "c":
        return []
    if val[0] == "b":
        return [-val[1]] if v > 0 else [val[1]]
    return {1: [-val[1]], -1: [-val[2]], 0: [val[1], val[2]]}[v]


def _decode(inputs: dict[int, _InputSign], model: set[int], region: Region) -> np.ndarray:
    """A concrete input realising the model's first-layer signs (extreme points for +-1)."""
    x = np.array([inside_f32((lo + hi) / 2.0, lo, hi) for lo, hi in zip(region.lower, region.upper)])
    for i, inp in inputs.items():
        lo, hi = float(region.lower[i]), float(region.upper[i])
        v = _value_in(model, inp.value)
        if v == 0:
            xi = float(-inp.c / inp.a) if inp.a != 0 else x[i]
            x[i] = min(max(xi, lo), hi)
            continue
        top = hi if inp.a >= 0 else lo  # maximises a * x + c
        bot = lo if inp.a >= 0 else hi
        x[i] = inside_f32(top if v > 0 else bot, lo, hi)
    return x


def _search(enc: Encoding, graph: Graph, s: BnnStructure, region: Region, polys: tuple[Polytope, ...],
            backend, deadline: float, stats: dict) -> tuple[str, np.ndarray | None, str]:
    """Solve; confirm each model concretely; block unconfirmed input patterns (of the cone) and solve again."""
    borderline, inputs = 0, enc.inputs
    cone = [inp for i, inp in inputs.items() if i in enc.cone_inputs]
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
        hit = confirms(graph, x, region, polys, s.dtype)
        if hit is not None:
            stats["polytope"] = hit
            return "violated", x, f"SAT model reaches polytope {hit}, confirmed by Graph.forward (network dtype, float64)"
        borderline += 1
        stats["borderline"] = borderline
        clause = [lit for inp in cone for lit in _block(inp.value, _value_in(model, inp.value))]
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


def verify_bnn(graph: Graph, region: Region, polytope: Polytope, **kwargs) -> SatResult:
    """Decide whether some x in the region's box drives the binarized ``graph`` into ``polytope``."""
    return verify_bnn_any(graph, region, (polytope,), **kwargs)


def verify_bnn_any(graph: Graph, region: Region, polytopes, *, timeout: float = 60.0, deadline: float | None = None,
                   solver: str = "cadical153", proof_path: str | None = None, encoding: str = "auto",
                   structure: BnnStructure | None = None, attack_samples: int = 256, reduce: bool = True,
                   log: Callable[[str], Any] | None = None) -> SatResult:
    """Like ``verify_bnn`` for the disjunction of ``polytopes`` (one SAT formula, selector per polytope).

    ``deadline`` (a ``time.monotonic()`` value) overrides ``timeout``; every stage checks it.
    ``attack_samples`` > 0 first tries that many random sign patterns plus greedy moves (0: pure SAT).
    ``reduce`` (default) screens constant neurons and encodes only the cone of the rows; False
    encodes every neuron (the reference the reduction is tested against). ``log`` receives each
    stage's line as it happens (the same lines end up in ``SatResult.log``).
    """
    polys = tuple(polytopes)
    t0 = time.monotonic()
    deadline = t0 + timeout if deadline is None else deadline
    lines: list[str] = []

    def note(message: str) -> None:
        lines.append(message)
        if log is not None:
            log(message)

    stats: dict[str, Any] = {"solver": solver, "encoding": encoding, "reduce": reduce}
    try:
        s = structure if structure is not None else parse(graph)
        if attack_samples > 0:
            x = sample_patterns(graph, s, region, polys, attack_samples, 0, deadline)
            stats["attack_s"] = time.monotonic() - t0
            note(f"sat: {attack_samples} sampled sign patterns + greedy moves: "
                 f"{'counterexample' if x is not None else 'none'} ({stats['attack_s']:.2f}s)")
            if x is not None:
                stats["polytope"] = confirms(graph, x, region, polys, s.dtype)
                return SatResult("violated", x, "sampled sign pattern confirmed by Graph.forward", stats, lines)
        enc = _encode(s, region, polys, encoding, deadline, reduce, note)
    except EncodingError as exc:
        note(f"sat: not encodable: {exc}")
        return SatResult("unknown", None, f"not encodable: {exc}", stats, lines)
    except TimeoutError as exc:
        note(f"sat: {exc} after {time.monotonic() - t0:.2f}s")
        return SatResult("unknown", None, f"timeout ({exc})", stats, lines)
    f = enc.formula
    stats.update(layers=enc.counts, encode_s=time.monotonic() - t0)
    if enc.plan is not None:
        stats["screen"] = enc.plan.summary()
    if f is None:
        note("sat: every unsafe polytope is infeasible over the screened sign values")
        return SatResult("holds", None, "every unsafe polytope is infeasible over all sign patterns", stats, lines)
    stats.update(vars=f.vpool.top, clauses=len(f.clauses))
    note(f"sat: encoded {f.vpool.top} variables, {len(f.clauses)} clauses in {stats['encode_s']:.2f}s")
    if proof_path is not None and solver not in PROOF_SOLVERS:
        return SatResult("unknown", None, f"solver {solver} cannot log proofs (use one of {PROOF_SOLVERS})", stats,
                         lines)
    t1 = time.monotonic()
    backend = (InProcessSolver if solver in INTERRUPTIBLE else ForkedSolver)(solver, f.clauses, proof_path is not None)
    try:
        status, x, reason = _search(enc, graph, s, region, polys, backend, deadline, stats)
        if status == "holds" and proof_path is not None:
            _write_proof(backend, f, proof_path, solver, deadline + 0.5 * max(deadline - t0, 0.0), stats)
    finally:
        backend.close()
    stats["solve_s"] = time.monotonic() - t1
    note(f"sat: {solver}: {status} ({reason}) in {stats['solve_s']:.2f}s")
    return SatResult(status, x, reason, stats, lines)


def verify_bnn_spec(graph: Graph, spec, *, timeout: float = 60.0, deadline: float | None = None,
                    proof_path: str | None = None, log: Callable[[str], Any] | None = None, **kwargs) -> SatResult:
    """Every region of a ``Spec`` (its polytopes as one disjunction): violated at the first, holds if all hold.

    With ``proof_path``, region i's proof goes to ``<proof_path>.r<i>`` (and its CNF beside it).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout if deadline is None else deadline
    try:
        structure = parse(graph)
    except Refuse as exc:
        return SatResult("unknown", None, f"not encodable: {exc}", {}, [f"sat: not encodable: {exc}"])
    reasons, stats, lines = [], [], []
    for ri, region in enumerate(spec.regions):
        if clock.now() > deadline:
            reasons.append(f"region {ri}: timeout before it was encoded")
            break
        proof = f"{proof_path}.r{ri}" if proof_path is not None else None
        res = verify_bnn_any(graph, region, region.unsafe, deadline=deadline, structure=structure, proof_path=proof,
                             log=log, **kwargs)
        stats.append(res.stats)
        lines += res.log
        if res.status == "violated":
            hit = res.stats.get("polytope")
            return SatResult("violated", res.x, f"region {ri}, polytope {hit}: {res.reason}", {"regions": stats},
                             lines)
        if res.status != "holds":
            reasons.append(f"region {ri}: {res.reason}")
    if reasons:
        return SatResult("unknown", None, "; ".join(reasons), {"regions": stats}, lines)
    return SatResult("holds", None, "every region is UNSAT", {"regions": stats}, lines)
