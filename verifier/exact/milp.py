"""Exact MILP verification of piecewise-linear canonical graphs (big-M encoding).

The encoding keeps every value of the graph as an *affine expression* over a small set of
solver columns (the input box, the outputs of unstable ReLUs / max-pools and the integer
selectors). Linear ops (linear, conv, affine, add) and re-indexing ops (reshape, gather,
concat) just transform expressions; a column is created only where a piecewise-linear op is
actually unstable. For one polytope ``A y <= b`` the model is

    minimise t  s.t.  x in box,  y = f(x) exactly,  A_i y - b_i <= t  for every row i,

so the property holds on the region iff the optimum is > 0 and is violated iff some x reaches
t <= 0. Big-M constants come from the tightest bounds available (the caller's, intersected with
the interval of each expression over its columns' bounds).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from verifier import clock
from verifier.model.graph import Graph, Node
from verifier.model.ops import evaluate
from verifier.spec.spec import Polytope, Region

HOLDS_TOL = 1e-6  # the proven lower bound on t must exceed this to report "holds"
VIOLATION_EPS = 1e-6  # stop the search once a solution with t < -VIOLATION_EPS is found
CUTOFF = 2e-6  # objective cutoff: subtrees whose bound reaches it are pruned
GUROBI_SIZE_LIMIT = 2000  # variables and constraints allowed by the pip (size-limited) licence
CONV_CHUNK = 256
TIGHTEN_SHARE = 1 / 3  # at most this share of the timeout goes to LP bound tightening
FINISHED = ("Optimal", "Infeasible", "optimal", "infeasible")  # solver statuses that end a complete search  # basis vectors pushed through a conv at once when unrolling it


class MilpUnsupported(ValueError):
    """The graph contains ops the exact MILP encoding cannot express."""


@dataclass(frozen=True)
class MilpResult:
    """Outcome of one MILP query (one region box, one unsafe polytope)."""

    status: str  # "holds" | "violated" | "unknown"
    x: np.ndarray | None  # flat float64 input of the violating point (status violated)
    objective: float | None  # best found min-margin (primal); negative = violation
    bound: float | None  # proven lower bound on the min-margin (dual)
    backend: str
    reason: str
    stats: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Expr:
    """A value as ``M @ columns + c`` (flat, C-order) with its per-sample shape."""

    M: sp.csr_matrix
    c: np.ndarray
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of scalars."""
        return self.c.shape[0]


def _widen(M: sp.spmatrix, n_cols: int) -> sp.csr_matrix:
    """``M`` as CSR with ``n_cols`` columns (new columns are zero)."""
    M = sp.csr_matrix(M)
    if M.shape[1] == n_cols:
        return M
    return sp.csr_matrix((M.data, M.indices, M.indptr), shape=(M.shape[0], n_cols))


# ----------------------------------------------------------------------------- model builder


class MilpModel:
    """Columns (bounds, integrality) and row blocks ``lo <= M @ cols <= hi`` of a MILP."""

    def __init__(self):
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.rows: list[tuple[sp.csr_matrix, np.ndarray, np.ndarray]] = []
        self.n_cols = 0

    def add_columns(self, lower, upper, integer: bool = False) -> np.ndarray:
        """Add columns with the given bounds; returns their indices."""
        lower = np.asarray(lower, dtype=np.float64).reshape(-1)
        upper = np.asarray(upper, dtype=np.float64).reshape(-1)
        idx = np.arange(self.n_cols, self.n_cols + lower.size)
        self.lower.append(lower)
        self.upper.append(upper)
        self.integer.append(np.full(lower.size, integer))
        self.n_cols += lower.size
        return idx

    def column_expr(self, idx: np.ndarray, shape: tuple[int, ...]) -> Expr:
        """The expression that is exactly the columns ``idx``."""
        n = idx.size
        M = sp.csr_matrix((np.ones(n), idx, np.arange(n + 1)), shape=(n, self.n_cols))
        return Expr(M, np.zeros(n), shape)

    def add_rows(self, M: sp.spmatrix, lo, hi):
        """Add rows ``lo <= M @ cols <= hi`` (use +-inf for one-sided rows)."""
        M = sp.csr_matrix(M)
        if M.shape[0] == 0:
            return
        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (M.shape[0],)).copy()
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (M.shape[0],)).copy()
        self.rows.append((M, lo, hi))

    def col_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Current lower and upper bounds of every column."""
        return np.concatenate(self.lower), np.concatenate(self.upper)

    def interval(self, e: Expr) -> tuple[np.ndarray, np.ndarray]:
        """Sound interval of an expression over the column bounds (float64)."""
        lo, hi = self.col_bounds()
        M = _widen(e.M, self.n_cols)
        pos, neg = M.maximum(0), M.minimum(0)
        return pos @ lo + neg @ hi + e.c, pos @ hi + neg @ lo + e.c

    def finish(self) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(A, row_lo, row_hi, col_lo, col_hi, is_integer) as flat arrays."""
        A = sp.vstack([_widen(M, self.n_cols) for M, _, _ in self.rows], format="csr")
        A.sum_duplicates()
        A.eliminate_zeros()
        lo = np.concatenate([r[1] for r in self.rows])
        hi = np.concatenate([r[2] for r in self.rows])
        cl, cu = self.col_bounds()
        return A, lo, hi, cl, cu, np.concatenate(self.integer)


# ----------------------------------------------------------------------------- op encoders


class Encoder:
    """Walks a graph once, turning every node into an expression and adding its constraints."""

    def __init__(self, model: MilpModel, bounds: dict[str, tuple[np.ndarray, np.ndarray]],
                 tighten_until: float | None = None):
        self.model = model
        self.bounds = bounds
        self.tighten_until = tighten_until  # time.monotonic() deadline for LP tightening (None: off)
        self.stats = {"unstable": {}, "binaries": 0, "lp_tightened": 0, "lp_stabilized": 0}

    def tightened(self, e: Expr, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of unstable entries of ``e`` tightened by the LP relaxation of the model so far."""
        idx = np.flatnonzero((lo < 0) & (hi > 0))
        if self.tighten_until is None or idx.size == 0 or self.stats["binaries"] == 0:
            return lo, hi
        new_lo, new_hi = lp_bounds(self.model, e, idx, lo[idx], hi[idx], self.tighten_until)
        lo, hi = lo.copy(), hi.copy()
        lo[idx], hi[idx] = np.maximum(lo[idx], new_lo), np.minimum(hi[idx], new_hi)
        self.stats["lp_tightened"] += int(idx.size)
        self.stats["lp_stabilized"] += int(np.sum((lo[idx] >= 0) | (hi[idx] <= 0)))
        return lo, hi

    def value_bounds(self, name: str, e: Expr) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of value ``name``: the caller's (already widened) bounds meet the expression interval."""
        lo, hi = self.model.interval(e)
        pad = 1e-9 * (1.0 + np.maximum(np.abs(lo), np.abs(hi)))
        lo, hi = lo - pad, hi + pad
        if name in self.bounds:
            blo, bhi = self.bounds[name]
            lo, hi = np.maximum(lo, blo), np.minimum(hi, bhi)
        if np.any(lo > hi):
            raise ValueError(f"inconsistent bounds for {name}: lower exceeds upper (unsound bounds passed?)")
        return lo, hi

    def materialize(self, e: Expr, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """New columns equal to ``e[rows]`` (bounded by lo/hi); returns the column indices."""
        cols = self.model.add_columns(lo, hi)
        M = _widen(e.M[rows], self.model.n_cols)
        eye = sp.csr_matrix((np.ones(rows.size), cols, np.arange(rows.size + 1)), shape=(rows.size, self.model.n_cols))
        self.model.add_rows(M - eye, -e.c[rows], -e.c[rows])
        return cols


def lp_bounds(model: MilpModel, e: Expr, idx: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              deadline: float) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``e[idx]`` over the LP relaxation of ``model`` (padded; old bound kept on failure)."""
    import highspy

    A, rlo, rhi, clo, chi, _ = model.finish()
    h = _highs_model(A, rlo, rhi, clo, chi, np.zeros(clo.size), None)
    h.setOptionValue("time_limit", max(deadline - clock.now(), 0.01))
    rows = _widen(e.M[idx], model.n_cols).toarray()
    lo, hi = lo.copy(), hi.copy()
    cols = np.arange(clo.size, dtype=np.int32)
    for j in range(idx.size):
        if clock.now() > deadline:
            break
        h.changeColsCost(clo.size, cols, rows[j])
        for sense, out in ((highspy.ObjSense.kMinimize, lo), (highspy.ObjSense.kMaximize, hi)):
            h.changeObjectiveSense(sense)
            h.run()
            if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                continue
            v = h.getInfo().objective_function_value + e.c[idx[j]]
            pad = 1e-6 * (1.0 + abs(v))
            out[j] = max(out[j], v - pad) if out is lo else min(out[j], v + pad)
    return lo, hi


def _linear_map(K: sp.spmatrix, e: Expr, bias: np.ndarray, shape: tuple[int, ...]) -> Expr:
    """The expression ``K @ e + bias``."""
    K = sp.csr_matrix(K)
    return Expr(sp.csr_matrix(K @ e.M), K @ e.c + bias, shape)


def _param(node: Node, key: str) -> np.ndarray | None:
    """A node param as a float64 numpy array (None when absent)."""
    t = node.params.get(key)
    return None if t is None else t.detach().cpu().to(torch.float64).numpy()


def _enc_linear(enc: Encoder, node: Node, xs: list[Expr]) -> Expr:
    """Linear map along the last axis: block-diagonal weight over the leading axes."""
    W = _param(node, "weight")
    b = _param(node, "bias")
    lead = xs[0].size // W.shape[1]
    K = sp.kron(sp.identity(lead, format="csr"), sp.csr_matrix(W), format="csr")
    bias = np.tile(b if b is not None else np.zeros(W.shape[0]), lead)
    return _linear_map(K, xs[0], bias, node.shape)


def _enc_conv(enc: Encoder, node: Node, xs: list[Expr]) -> Expr:
    """Convolution unrolled to a sparse matrix by pushing basis vectors through it (float64)."""
    weight = node.params["weight"].detach().cpu().to(torch.float64)
    bare = Node(node.name, "conv", node.inputs, node.shape, {"weight": weight, "bias": None}, node.attrs)
    n_in = xs[0].size
    in_shape = xs[0].shape
    blocks = []
    for start in range(0, n_in, CONV_CHUNK):
        stop = min(n_in, start + CONV_CHUNK)
        basis = torch.zeros(stop - start, n_in, dtype=torch.float64)
        basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        out = evaluate(bare, [basis.reshape((stop - start,) + tuple(in_shape))])
        blocks.append(sp.csc_matrix(out.reshape(stop - start, -1).numpy().T))
    K = sp.hstack(blocks, format="csr")
    b = _param(node, "bias")
    n_sp = node.size // node.shape[0]
    bias = np.repeat(b, n_sp) if b is not None else np.zeros(node.size)
    return _linear_map(K, xs[0], bias, node.shape)


def _enc_affine(enc: Encoder, node: Node, xs: list[Expr]) -> Expr:
    """Elementwise ``x * scale + bias`` with broadcasting."""
    s = np.broadcast_to(_param(node, "scale"), node.shape).reshape(-1)
    b = np.broadcast_to(_param(node, "bias"), node.shape).reshape(-1)
    return _linear_map(sp.diags(s, format="csr"), xs[0], b, node.shape)


def _enc_add(enc: Encoder, node: Node, xs: list[Expr]) -> Expr:
    """Sum of two values."""
    n = enc.model.n_cols
    return Expr(_widen(xs[0].M, n) + _widen(xs[1].M, n), xs[0].c + xs[1].c, node.shape)


def _enc_reshape(enc: Encoder, node: Node, xs: list[Expr]) -> Expr:
    """Same values, new shape."""
    return Expr(xs[0].M, xs[0].c, node.shape)


def _enc_gather(enc: Encoder, node: Node, xs: list[Expr]) -> Expr:
    """Re-indexing; index -1 yields the constant 0."""
    index = node.params["index"].detach().cpu().numpy().reshape(-1).astype(np.int64)
    valid = index >= 0
    pick = sp.csr_matrix((valid.astype(np.float64), np.where(valid, index, 0), np.arange(index.size + 1)),
                         shape=(index.size, xs[0].size))
    pick.eliminate_zeros()
    return _linear_map(pick, xs[0], np.zeros(index.size), node.shape)


def _enc_concat(enc: Encoder, node: Node, xs: list[Expr]) -> Expr:
    """Concatenation along a per-sample axis, as a row permutation of the stacked inputs."""
    offsets = np.cumsum([0] + [e.size for e in xs])
    ids = [np.arange(e.size).reshape(e.shape) + off for e, off in zip(xs, offsets)]
    order = np.concatenate(ids, axis=node.attrs["axis"]).reshape(-1)
    n = enc.model.n_cols
    M = sp.vstack([_widen(e.M, n) for e in xs], format="csr")[order]
    c = np.concatenate([e.c for e in xs])[order]
    return Expr(M, c, node.shape)


def _relu_columns(enc: Encoder, node: Node, x: Expr) -> Expr:
    """Exact ReLU: stable neurons stay affine, unstable ones get a binary and big-M rows."""
    lo, hi = enc.tightened(x, *enc.value_bounds(node.inputs[0], x))
    active, unstable = lo >= 0, (lo < 0) & (hi > 0)
    keep = sp.diags(active.astype(np.float64), format="csr")
    out = Expr(_widen(keep @ x.M, enc.model.n_cols), np.where(active, x.c, 0.0), node.shape)
    idx = np.flatnonzero(unstable)
    enc.stats["unstable"][node.name] = int(idx.size)
    if idx.size == 0:
        return out
    l, u = lo[idx], hi[idx]
    a = enc.materialize(x, idx, l, u)
    z = enc.model.add_columns(np.zeros(idx.size), u)
    d = enc.model.add_columns(np.zeros(idx.size), np.ones(idx.size), integer=True)
    enc.stats["binaries"] += int(idx.size)
    k, n = idx.size, enc.model.n_cols

    def rows(coef_cols):
        """Sparse rows with one (column, coefficient) pair per term."""
        cols = np.stack([c for c, _ in coef_cols], axis=1)
        vals = np.stack([np.broadcast_to(v, (k,)) for _, v in coef_cols], axis=1)
        return sp.csr_matrix((vals.reshape(-1), cols.reshape(-1), np.arange(0, k * cols.shape[1] + 1, cols.shape[1])),
                             shape=(k, n))

    enc.model.add_rows(rows([(z, 1.0), (a, -1.0)]), 0.0, np.inf)  # z >= a
    enc.model.add_rows(rows([(z, 1.0), (a, -1.0), (d, -l)]), -np.inf, -l)  # z <= a - l (1 - d)
    enc.model.add_rows(rows([(z, 1.0), (d, -u)]), -np.inf, 0.0)  # z <= u d
    inject = sp.csr_matrix((np.ones(k), (idx, z)), shape=(x.size, n))
    return Expr(_widen(out.M, n) + inject, out.c, node.shape)


def _enc_relu(enc: Encoder, node: Node, xs: list[Expr]) -> Expr:
    """max(x, 0)."""
    return _relu_columns(enc, node, xs[0])


def _enc_leaky_relu(enc: Encoder, node: Node, xs: list[Expr]) -> Expr:
    """alpha x + (1 - alpha) relu(x): exact for any alpha."""
    alpha = float(node.attrs["alpha"])
    r = _relu_columns(enc, node, xs[0])
    n = enc.model.n_cols
    return Expr(_widen(xs[0].M, n) * alpha + _widen(r.M, n) * (1.0 - alpha), alpha * xs[0].c + (1 - alpha) * r.c,
                node.shape)


def _pool_windows(node: Node, in_shape: tuple[int, ...]) -> np.ndarray:
    """[n_out, k] flat input indices of every pooling window, -1 for padding."""
    a = node.attrs
    spatial = len(in_shape) - 1

    def pair(v, fill: int):
        """Attribute as a 2-d tuple (1-d pooling gets a dummy leading axis holding ``fill``)."""
        t = tuple(v) if isinstance(v, (tuple, list)) else (v,) * spatial
        return (fill,) + t if spatial == 1 else t

    kernel, dil = pair(a["kernel"], 1), pair(a.get("dilation", 1), 1)
    stride, pad = pair(a["stride"] if a["stride"] else a["kernel"], 1), pair(a.get("padding", 0), 0)
    shape2 = (in_shape[0],) + ((1,) + tuple(in_shape[1:]) if spatial == 1 else tuple(in_shape[1:]))
    out2 = ((1,) + tuple(node.shape[1:])) if spatial == 1 else tuple(node.shape[1:])
    ids = torch.arange(1, math.prod(shape2) + 1, dtype=torch.float64).reshape(shape2)
    right = [max(0, (o - 1) * s + d * (k - 1) + 1 - (n + p)) for o, s, d, k, n, p in
             zip(out2, stride, dil, kernel, shape2[1:], pad)]
    ids = torch.nn.functional.pad(ids, (pad[1], right[1], pad[0], right[0]))
    cols = torch.nn.functional.unfold(ids.unsqueeze(1), kernel, dilation=dil, stride=stride)  # [C, k, L]
    grid = [(n + p + r - d * (k - 1) - 1) // s + 1 for n, p, r, d, k, s in zip(shape2[1:], pad, right, dil, kernel, stride)]
    cols = cols.reshape(cols.shape[0], cols.shape[1], *grid)[:, :, : out2[0], : out2[1]]  # the windows torch keeps
    return (cols.permute(0, 2, 3, 1).reshape(-1, cols.shape[1]).numpy().astype(np.int64)) - 1


def _enc_maxpool(enc: Encoder, node: Node, xs: list[Expr]) -> Expr:
    """Max over each window: drop dominated inputs, one binary per remaining candidate."""
    x = xs[0]
    lo, hi = enc.value_bounds(node.inputs[0], x)
    windows = _pool_windows(node, x.shape)
    n = enc.model.n_cols
    X = _widen(x.M, n)
    rows, consts, n_bin = [], np.zeros(windows.shape[0]), 0
    for o, win in enumerate(windows):
        win = win[win >= 0]
        floor = lo[win].max()
        cand = win[hi[win] >= floor]
        if cand.size == 1:
            rows.append(("alias", cand[0]))
            continue
        rows.append(("max", cand))
        n_bin += cand.size
    if n_bin:
        enc.stats["binaries"] += n_bin
    enc.stats["unstable"][node.name] = sum(1 for r in rows if r[0] == "max")
    pieces = []
    for o, (kind, cand) in enumerate(rows):
        if kind == "alias":
            pieces.append(X[cand])
            consts[o] = x.c[cand]
            continue
        pieces.append(_maxpool_window(enc, x, cand, lo, hi))
    M = sp.vstack([_widen(p, enc.model.n_cols) for p in pieces], format="csr")
    return Expr(M, consts, node.shape)


def _maxpool_window(enc: Encoder, x: Expr, cand: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> sp.csr_matrix:
    """Columns and rows for y = max(x[cand]); returns the 1-row expression of y."""
    l, u = lo[cand], hi[cand]
    y = enc.model.add_columns([l.max()], [u.max()])[0]
    d = enc.model.add_columns(np.zeros(cand.size), np.ones(cand.size), integer=True)
    n = enc.model.n_cols
    X = _widen(x.M[cand], n)
    ycol = sp.csr_matrix((np.ones(cand.size), np.full(cand.size, y), np.arange(cand.size + 1)), shape=(cand.size, n))
    enc.model.add_rows(ycol - X, x.c[cand], np.inf)  # y >= x_i
    big = u.max() - l  # y - x_i <= big_i (1 - d_i)
    dcol = sp.csr_matrix((big, d, np.arange(cand.size + 1)), shape=(cand.size, n))
    enc.model.add_rows(ycol - X + dcol, -np.inf, big + x.c[cand])
    enc.model.add_rows(sp.csr_matrix((np.ones(cand.size), d, [0, cand.size]), shape=(1, n)), 1.0, 1.0)
    return sp.csr_matrix(([1.0], [y], [0, 1]), shape=(1, n))


ENCODERS: dict[str, Callable[[Encoder, Node, list[Expr]], Expr]] = {
    "linear": _enc_linear,
    "conv": _enc_conv,
    "affine": _enc_affine,
    "add": _enc_add,
    "relu": _enc_relu,
    "leaky_relu": _enc_leaky_relu,
    "maxpool": _enc_maxpool,
    "reshape": _enc_reshape,
    "gather": _enc_gather,
    "concat": _enc_concat,
}


# ----------------------------------------------------------------------------- bounds


def _as_array(v) -> np.ndarray:
    """A bound tensor/array as a flat float64 numpy array."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().to(torch.float64).numpy()
    return np.asarray(v, dtype=np.float64).reshape(-1)


def _slack_for(v) -> float:
    """Relative widening applied to a caller's bound: float32 bounds get float32-sized slack."""
    dtype = v.dtype if isinstance(v, (torch.Tensor, np.ndarray)) else np.float64
    return 1e-9 if dtype in (torch.float64, np.float64, np.dtype(np.float64)) else 1e-5


def normalize_bounds(graph: Graph, bounds) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Caller bounds (dict or object with ``.intermediate``) as widened flat float64 pairs."""
    if hasattr(bounds, "intermediate"):
        bounds = bounds.intermediate
    sizes = {graph.input_name: graph.n_inputs} | {n.name: n.size for n in graph.nodes}
    out = {}
    for name, pair in dict(bounds).items():
        if name not in sizes or pair is None:
            continue
        lo, hi = _as_array(pair[0]), _as_array(pair[1])
        if lo.size != sizes[name] or hi.size != sizes[name]:
            raise ValueError(f"bounds for {name} have {lo.size} values, the node has {sizes[name]}")
        s_lo, s_hi = _slack_for(pair[0]), _slack_for(pair[1])
        out[name] = (lo - s_lo * (1.0 + np.abs(lo)), hi + s_hi * (1.0 + np.abs(hi)))
    return out


def _default_bounds(graph: Graph, region: Region) -> tuple[dict, str]:
    """Interval bounds from ``verifier.bounds`` (expression intervals alone if it is unavailable)."""
    try:
        from verifier.bounds import interval_bounds
    except ImportError as exc:
        return {}, f"expression intervals only ({exc})"
    shape = (1,) + tuple(graph.input_shape)
    lo = torch.tensor(region.lower, dtype=torch.float64).reshape(shape)
    hi = torch.tensor(region.upper, dtype=torch.float64).reshape(shape)
    return interval_bounds(graph.to(dtype=torch.float64), lo, hi), "interval_bounds"


# ----------------------------------------------------------------------------- problem


@dataclass(frozen=True)
class MilpProblem:
    """The assembled MILP: minimise column ``t`` subject to ``row_lo <= A cols <= row_hi``."""

    A: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    integer: np.ndarray
    t: int
    n_inputs: int
    stats: dict

    @property
    def cost(self) -> np.ndarray:
        """Objective vector: 1 on t."""
        c = np.zeros(self.col_lo.size)
        c[self.t] = 1.0
        return c


def unsupported_ops(graph: Graph) -> list[str]:
    """Sorted names of the graph's ops that have no MILP encoder."""
    return sorted({n.op for n in graph.nodes if n.op not in ENCODERS})


def encode(graph: Graph, region: Region, polytope: Polytope, bounds: dict,
           tighten_until: float | None = None) -> MilpProblem:
    """Build the MILP for one region box and one polytope (bounds: normalized, may be partial).

    With ``tighten_until`` (a ``time.monotonic()`` deadline) every ReLU's unstable inputs are
    first bounded by the LP relaxation of the layers before it.
    """
    bad = unsupported_ops(graph)
    if bad:
        raise MilpUnsupported(f"MILP encoding does not support ops: {', '.join(bad)}")
    model = MilpModel()
    x = model.add_columns(region.lower, region.upper)
    enc = Encoder(model, bounds, tighten_until)
    values = {graph.input_name: model.column_expr(x, tuple(graph.input_shape))}
    for node in graph.nodes:
        values[node.name] = ENCODERS[node.op](enc, node, [values[i] for i in node.inputs])
    y = values[graph.output_name]
    A = sp.csr_matrix(polytope.A)
    margin = _linear_map(A, y, -polytope.b, (A.shape[0],))  # A y - b, one row per constraint
    m_lo, m_hi = model.interval(margin)
    t_lo = float(m_lo.max()) if m_lo.size else -1.0
    t = model.add_columns([t_lo], [np.inf])[0]
    n = model.n_cols
    tcol = sp.csr_matrix((np.full(A.shape[0], -1.0), np.full(A.shape[0], t), np.arange(A.shape[0] + 1)), shape=(A.shape[0], n))
    model.add_rows(_widen(margin.M, n) + tcol, -np.inf, -margin.c)  # A y - b - t <= 0
    if not model.rows:  # a linear net with an empty polytope: keep the solvers happy
        model.add_rows(sp.csr_matrix(([1.0], [t], [0, 1]), shape=(1, n)), -np.inf, np.inf)
    A_full, rlo, rhi, clo, chi, integer = model.finish()
    stats = {"columns": int(n), "rows": int(A_full.shape[0]), "nonzeros": int(A_full.nnz),
             **enc.stats}
    return MilpProblem(A_full, rlo, rhi, clo, chi, integer, int(t), int(x.size), stats)


# ----------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class SolveOutcome:
    """What a backend reports: incumbent (full column vector), primal and dual values, status."""

    solution: np.ndarray | None
    objective: float | None
    bound: float | None
    status: str
    nodes: int


def _highs_model(A: sp.csr_matrix, rlo, rhi, clo, chi, cost, integer: np.ndarray | None):
    """A silent HiGHS instance holding ``min cost.x, rlo <= A x <= rhi, clo <= x <= chi``."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = clo.size, A.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, clo, chi
    lp.row_lower_, lp.row_upper_ = rlo, rhi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = lp.num_col_, lp.num_row_
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data
    if integer is not None:
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in integer]
    h.passModel(lp)
    return h


def _solve_highs(problem: MilpProblem, time_limit: float) -> SolveOutcome:
    """Solve with HiGHS: cutoff at CUTOFF, interrupt at the first clearly violating incumbent."""
    import highspy

    h = _highs_model(problem.A, problem.row_lo, problem.row_hi, problem.col_lo, problem.col_hi, problem.cost,
                     problem.integer)
    h.setOptionValue("time_limit", max(time_limit, 0.01))
    if not problem.integer.any():  # every neuron stable: a plain LP, its optimum is the exact min
        h.run()
        return _highs_lp_outcome(h, highspy)
    h.setOptionValue("objective_bound", CUTOFF)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 1e-7)
    found = {"hit": False}

    def on_solution(event):
        """Flag an incumbent that already proves a violation."""
        if event.data_out.objective_function_value < -VIOLATION_EPS:
            found["hit"] = True
            event.interrupt()

    def on_interrupt(event):
        """Stop the search once a violating incumbent exists or the run is cancelled."""
        if found["hit"] or clock.cancelled():
            event.interrupt()

    h.cbMipImprovingSolution.subscribe(on_solution)
    h.cbMipInterrupt.subscribe(on_interrupt)
    h.run()
    return _highs_outcome(h, highspy)


def _highs_lp_outcome(h, highspy) -> SolveOutcome:
    """Read a pure LP solve: at optimality the primal optimum is the exact minimum."""
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        return SolveOutcome(None, None, None, h.modelStatusToString(status), 0)
    value = float(h.getInfo().objective_function_value)
    solution = np.asarray(h.getSolution().col_value, dtype=np.float64)
    return SolveOutcome(solution, value, value, "Optimal", 0)


def _highs_outcome(h, highspy) -> SolveOutcome:
    """Read status, incumbent and bounds out of a finished HiGHS run."""
    status = h.getModelStatus()
    info = h.getInfo()
    has_sol = info.primal_solution_status == 2
    solution = np.asarray(h.getSolution().col_value, dtype=np.float64) if has_sol else None
    objective = float(info.objective_function_value) if has_sol else None
    bound = float(info.mip_dual_bound)
    if status == highspy.HighsModelStatus.kInfeasible and not has_sol:
        bound = CUTOFF  # everything was pruned by the cutoff: min t >= CUTOFF
    # subtrees whose bound reached the cutoff were pruned, so beyond it HiGHS's dual bound proves nothing
    bound = min(bound, CUTOFF)
    if not math.isfinite(bound):
        bound = None
    return SolveOutcome(solution, objective, bound, h.modelStatusToString(status), int(info.mip_node_count))


@functools.lru_cache(maxsize=1)
def gurobi_size_limited() -> bool | None:
    """Whether the gurobipy licence is the size-limited one (None when gurobipy is unusable)."""
    try:
        import gurobipy as gp
    except ImportError:
        return None
    try:
        with gp.Env(params={"OutputFlag": 0}) as env, gp.Model(env=env) as m:
            m.addMVar(GUROBI_SIZE_LIMIT + 1)
            m.optimize()
    except gp.GurobiError as exc:
        if exc.errno == 10010:
            return True
        return None
    return False


def _solve_gurobi(problem: MilpProblem, time_limit: float) -> SolveOutcome:
    """Solve with gurobipy: stop at a violating incumbent or once the bound passes CUTOFF."""
    import gurobipy as gp

    with gp.Env(params={"OutputFlag": 0}) as env, gp.Model(env=env) as m:
        m.Params.TimeLimit = max(time_limit, 0.01)
        m.Params.BestObjStop = -VIOLATION_EPS
        m.Params.BestBdStop = CUTOFF
        m.Params.IntFeasTol = 1e-9
        m.Params.MIPGap = 0.0
        m.Params.MIPGapAbs = 1e-7
        m.Params.Threads = 1
        vtype = np.where(problem.integer, gp.GRB.BINARY, gp.GRB.CONTINUOUS)
        lo = np.where(problem.integer, 0.0, problem.col_lo)
        v = m.addMVar(problem.col_lo.size, lb=lo, ub=problem.col_hi, vtype=vtype)
        _add_gurobi_rows(m, v, problem)
        m.setObjective(v[problem.t], gp.GRB.MINIMIZE)
        m.optimize(_gurobi_cancel)
        has_sol = m.SolCount > 0
        solution = np.asarray(v.X, dtype=np.float64) if has_sol else None
        objective = float(m.ObjVal) if has_sol else None
        bound = float(m.ObjBound) if m.Status != gp.GRB.INFEASIBLE else None
        if bound is not None and not math.isfinite(bound):
            bound = None
        status = {gp.GRB.OPTIMAL: "optimal", gp.GRB.USER_OBJ_LIMIT: "objective limit", gp.GRB.TIME_LIMIT: "time limit",
                  gp.GRB.INTERRUPTED: "interrupted", gp.GRB.INFEASIBLE: "infeasible"}.get(m.Status, f"gurobi status {m.Status}")
        return SolveOutcome(solution, objective, bound, status, int(m.NodeCount))


def _gurobi_cancel(model, where) -> None:
    """Gurobi callback: stop the solve once the run is cancelled (``verifier.clock``)."""
    if clock.cancelled():
        model.terminate()


def _add_gurobi_rows(m, v, problem: MilpProblem):
    """Split ranged rows into equality, <= and >= blocks for gurobipy's matrix API."""
    eq = problem.row_lo == problem.row_hi
    le = ~eq & np.isfinite(problem.row_hi)
    ge = ~eq & np.isfinite(problem.row_lo)
    for mask, sense, rhs in ((eq, "=", problem.row_hi), (le, "<", problem.row_hi), (ge, ">", problem.row_lo)):
        if mask.any():
            m.addMConstr(problem.A[mask], v, sense, rhs[mask])


BACKENDS: dict[str, Callable[[MilpProblem, float], SolveOutcome]] = {
    "highs": _solve_highs,
    "gurobi": _solve_gurobi,
}


def choose_backend(problem: MilpProblem, backend: str) -> tuple[str, str]:
    """(backend name, reason) honouring availability and the size-limited gurobipy licence."""
    if backend not in ("auto", "highs", "gurobi"):
        raise ValueError(f"unknown MILP backend {backend!r} (known: auto, highs, gurobi)")
    if backend == "highs":
        return "highs", "requested"
    limited = gurobi_size_limited()
    if limited is None:
        return "highs", "gurobipy not importable or not licensed"
    too_big = problem.col_lo.size > GUROBI_SIZE_LIMIT or problem.A.shape[0] > GUROBI_SIZE_LIMIT
    if limited and too_big:
        return "highs", (f"model has {problem.col_lo.size} variables / {problem.A.shape[0]} constraints, over the "
                         f"size-limited gurobipy licence ({GUROBI_SIZE_LIMIT})")
    return "gurobi", "requested" if backend == "gurobi" else "gurobipy licensed and the model fits"


# ----------------------------------------------------------------------------- entry point


def _margin(graph64: Graph, polytope: Polytope, x: np.ndarray) -> np.ndarray:
    """max_i (A_i f(x) - b_i) for a batch of flat inputs, evaluated in float64."""
    xt = torch.as_tensor(x, dtype=torch.float64).reshape((-1,) + tuple(graph64.input_shape))
    with torch.no_grad():
        y = graph64.forward(xt).reshape(xt.shape[0], -1).numpy()
    if polytope.A.shape[0] == 0:
        return np.full(y.shape[0], -np.inf)
    return (y @ polytope.A.T - polytope.b).max(axis=1)


def _check_bounds(graph64: Graph, region: Region, bounds: dict, n: int = 8):
    """Refuse bounds that exclude the value at the box centre or a few seeded points (unsound input)."""
    rng = np.random.default_rng(1)
    pts = region.lower + rng.random((n, region.lower.size)) * (region.upper - region.lower)
    pts = np.vstack([(region.lower + region.upper) / 2, pts])
    with torch.no_grad():
        values = graph64.forward(torch.as_tensor(pts).reshape((-1,) + tuple(graph64.input_shape)), keep=True)
    for name, (lo, hi) in bounds.items():
        v = values[name].reshape(pts.shape[0], -1).numpy()
        tol = 1e-9 * (1.0 + np.abs(v))
        if np.any(v < lo - tol) or np.any(v > hi + tol):
            raise ValueError(f"bounds for {name} exclude values the network takes inside the box: unsound bounds")


def _probe(graph64: Graph, region: Region, polytope: Polytope, n: int = 32) -> tuple[np.ndarray, float]:
    """Best (lowest-margin) of the box centre and a few seeded random points."""
    rng = np.random.default_rng(0)
    pts = region.lower + rng.random((n, region.lower.size)) * (region.upper - region.lower)
    pts = np.vstack([(region.lower + region.upper) / 2, pts])
    margins = _margin(graph64, polytope, pts)
    k = int(np.argmin(margins))
    return pts[k], float(margins[k])


def verify_milp(graph: Graph, region: Region, polytope: Polytope, *, bounds=None, timeout: float = 60.0,
                backend: str = "auto", tighten: bool = True, probe_points: int = 32) -> MilpResult:
    """Decide exactly whether some x in the region box reaches the polytope ``A f(x) <= b``.

    ``bounds``: {value name: (lo, hi)} per-sample arrays/tensors (``None``: interval bounds from
    ``verifier.bounds``); ``tighten``: LP-tighten big-M constants (at most a third of the timeout);
    ``probe_points``: seeded random points (plus the box centre) tried before building the MILP.
    """
    start = time.monotonic()
    bad = unsupported_ops(graph)
    if bad:
        raise MilpUnsupported(f"MILP encoding does not support ops: {', '.join(bad)}")
    graph64 = graph.to(dtype=torch.float64)
    if probe_points > 0:
        x0, m0 = _probe(graph64, region, polytope, probe_points)
        if m0 <= 0:
            return MilpResult("violated", x0, m0, None, "probe", "a sampled point violates",
                              {"time": time.monotonic() - start})
    source = "caller"
    if bounds is None:
        bounds, source = _default_bounds(graph, region)
    tighten_until = start + timeout * TIGHTEN_SHARE if tighten else None
    bounds = normalize_bounds(graph, bounds)
    _check_bounds(graph64, region, bounds)
    problem = encode(graph, region, polytope, bounds, tighten_until)
    name, why = choose_backend(problem, backend)
    build_time = time.monotonic() - start
    outcome = BACKENDS[name](problem, clock.left(start + timeout))   # minimal once cancelled
    stats = dict(problem.stats, bounds=source, backend_reason=why, solver_status=outcome.status, nodes=outcome.nodes,
                 build_time=build_time, time=time.monotonic() - start)
    return _decide(graph64, region, polytope, outcome, name, why, stats)


def _decide(graph64: Graph, region: Region, polytope: Polytope, out: SolveOutcome, backend: str, why: str,
            stats: dict) -> MilpResult:
    """Turn a solver outcome into a verdict: witnesses are re-checked, ties are never 'holds'."""
    reason = f"{out.status} ({why})"
    if out.solution is not None and out.objective is not None and out.objective <= HOLDS_TOL:
        x = np.clip(out.solution[: region.lower.size], region.lower, region.upper)
        margin = float(_margin(graph64, polytope, x[None])[0])
        stats["witness_margin"] = margin
        if margin <= 0:
            return MilpResult("violated", x, out.objective, out.bound, backend, f"witness found: {reason}", stats)
        reason = f"solver incumbent {out.objective:.3g} does not validate (margin {margin:.3g}): {reason}"
    if out.bound is not None and out.bound > HOLDS_TOL:
        return MilpResult("holds", None, out.objective, out.bound, backend, f"bound > 0: {reason}", stats)
    if out.bound is not None and out.bound > -VIOLATION_EPS and out.status in FINISHED:
        reason = f"tie: min margin within tolerance of 0 ({reason})"
    return MilpResult("unknown", None, out.objective, out.bound, backend, reason, stats)
