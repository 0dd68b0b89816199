"""Recognising a binarized network (Sign activations) as layers the SAT encoding reads.

Recognised shape (a chain of canonical nodes):  input -> [affine|reshape|gather]* -> sign, then
blocks  [maxpool]* [reshape|gather]* -> linear|conv (weights in {-1,0,+1} up to one positive scale
per row) -> [affine|reshape|gather]* -> sign, then a tail  [maxpool]* [reshape|gather]* ->
[linear|conv (any weights)] -> [affine|reshape|gather]* -> output.

A maxpool reads sign values ({-1,0,+1}, exact in every float type) and is kept as its own layer
(the max of each window, an OR-like choice encoded exactly). Weights are extracted as sparse
matrices from the conv geometry (never a dense ``eye`` basis), and every extraction is checked
against the op's own forward on a random vector before it is trusted.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from verifier.exact.cardinality import EncodingError
from verifier.model.graph import Graph, Node
from verifier.model.ops import evaluate

REINDEX_OPS = ("reshape", "gather")
CHAIN_OPS = ("affine", "reshape", "gather")
LINEAR_OPS = ("linear", "conv")
MAX_NNZ = 60_000_000  # largest number of nonzero weights extracted for one layer
CHECK_TOL = 1e-9      # relative tolerance of the extraction self-check (float64, exact ops)


class Refuse(EncodingError):
    """The graph is not a binarized network this module can encode exactly."""


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

    def vector(self, m: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Float64 (a, c, magnitude bound of ``m``) for every position at once (not exact: for screening)."""
        n = len(self.src)
        a, c = np.ones(n), np.zeros(n)
        mag = np.zeros(n) if m is None else np.array(m, dtype=np.float64)
        for i, (s, b) in enumerate(zip(self.scales, self.biases)):
            on = self.start <= i
            s64, b64 = s.astype(np.float64), b.astype(np.float64)
            a, c = np.where(on, a * s64, a), np.where(on, c * s64 + b64, c)
            mag = np.where(on, mag * np.abs(s64) + np.abs(b64), mag)
        return a, c, mag

    def n_ops(self) -> int:
        """Length of the op list (an upper bound for every position)."""
        return len(self.scales)


@dataclass(frozen=True, eq=False)
class SignLayer:
    """Sign of a chain applied to ``row_scale * (weight @ s_prev) + bias`` (layer 0: to the inputs)."""

    chain: AffineChain
    weight: sp.csr_matrix | None  # int8 [m, n_prev], entries in {-1, 0, +1}
    bias: np.ndarray | None  # float64 [m], exact copies of the params
    row_scale: np.ndarray | None = None  # float64 [m] > 0: the linear row is row_scale * weight (fused BN)


@dataclass(frozen=True, eq=False)
class PoolLayer:
    """Max over windows of the previous layer's sign values: ``windows`` [m, k] flat positions, -1 = none."""

    windows: np.ndarray


@dataclass(frozen=True, eq=False)
class OutputLayer:
    """Outputs: chain applied to ``weight @ s_last + bias`` (weight float64 CSR, exact copies)."""

    chain: AffineChain
    weight: sp.csr_matrix
    bias: np.ndarray


@dataclass(frozen=True, eq=False)
class BnnStructure:
    """A recognised binarized network: layers (the first reads the input) and the output map."""

    layers: tuple[SignLayer | PoolLayer, ...]
    output: OutputLayer
    n_inputs: int
    n_outputs: int
    dtype: Any  # numpy float type of the params (the rounding the network runs in)


def _chain_of(graph: Graph) -> list[Node]:
    """The nodes as a single chain from the input to the output, or refuse."""
    prev = graph.input_name
    for node in graph.nodes:
        if node.inputs != (prev,):
            raise Refuse(f"not a chain: node {node.name} ({node.op}) reads {list(node.inputs)}, expected [{prev}]")
        prev = node.name
    if prev != graph.output_name:
        raise Refuse("the output is not the last node of the chain")
    return list(graph.nodes)


def track(nodes: list[Node], n: int, allowed: tuple[str, ...]) -> AffineChain:
    """Follow flat positions through affine / reshape / gather nodes."""
    src, start = np.arange(n), np.zeros(n, dtype=np.int64)
    scales: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    for node in nodes:
        if node.op not in allowed:
            raise Refuse(f"op {node.op} (node {node.name}) not allowed here (expected one of {list(allowed)})")
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


def _conv_coo(node: Node, in_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of a conv's weight matrix over its flat input, from the conv geometry."""
    w = node.params["weight"].detach().double().cpu().numpy()
    at = node.attrs
    stride, pad, dil = list(at["stride"]), list(at["padding"]), list(at["dilation"])
    in_shape, out_shape = list(in_shape), list(node.shape)
    if w.ndim == 3:  # conv1d as conv2d over a height of 1
        w, stride, pad, dil = w[:, :, None, :], [1] + stride, [0] + pad, [1] + dil
        in_shape, out_shape = [in_shape[0], 1, in_shape[1]], [out_shape[0], 1, out_shape[1]]
    co_n, cg_n, kh, kw = w.shape
    _, h, wd = in_shape
    _, ho, wo = out_shape
    per_group = co_n // int(at["groups"])
    oh, ow = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    oh, ow = oh.reshape(-1), ow.reshape(-1)
    rows, cols, vals = [], [], []
    co = np.arange(co_n)[:, None, None]
    cg = np.arange(cg_n)[None, :, None]
    for ki in range(kh):
        for kj in range(kw):
            ih, iw = oh * stride[0] - pad[0] + ki * dil[0], ow * stride[1] - pad[1] + kj * dil[1]
            ok = (ih >= 0) & (ih < h) & (iw >= 0) & (iw < wd)
            pos, src = (oh * wo + ow)[ok], (ih * wd + iw)[ok]
            ci = (co // per_group) * cg_n + cg
            r = np.broadcast_to(co * (ho * wo) + pos[None, None, :], (co_n, cg_n, len(pos)))
            c = np.broadcast_to(ci * (h * wd) + src[None, None, :], (co_n, cg_n, len(pos)))
            v = np.broadcast_to(w[:, :, ki, kj][:, :, None], (co_n, cg_n, len(pos)))
            nz = v != 0
            rows.append(r[nz])
            cols.append(c[nz])
            vals.append(v[nz])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _linear_coo(node: Node, in_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of a linear node (on the last axis) over its flat input."""
    w = node.params["weight"].detach().double().cpu().numpy()
    r, c = np.nonzero(w)
    v = w[r, c]
    batch = int(np.prod(in_shape[:-1], dtype=np.int64)) if len(in_shape) > 1 else 1
    n_out, n_in = w.shape
    off = np.arange(batch)[:, None]
    return ((off * n_out + r[None]).reshape(-1), (off * n_in + c[None]).reshape(-1), np.tile(v, batch))


def segment_weights(pre: list[Node], lin64: Node, pre64: list[Node], prev_shape) -> tuple[sp.csr_matrix, np.ndarray]:
    """(weight CSR [m, n_prev] float64, bias [m]) of reindex ops + one linear/conv, both exact, self-checked."""
    n_prev = int(np.prod(prev_shape))
    in_shape = tuple(pre[-1].shape) if pre else tuple(prev_shape)
    rows, cols, vals = (_conv_coo if lin64.op == "conv" else _linear_coo)(lin64, in_shape)
    if len(vals) > MAX_NNZ:
        raise Refuse(f"layer {lin64.name} too large ({len(vals)} nonzero weights > {MAX_NNZ})")
    src = track(pre, int(np.prod(in_shape)), REINDEX_OPS).src if pre else np.arange(n_prev)
    moved = src[cols]
    keep = moved >= 0
    weight = sp.csr_matrix((vals[keep], (rows[keep], moved[keep])), shape=(lin64.size, n_prev))
    weight.sum_duplicates()
    zero = torch.zeros((1,) + tuple(prev_shape), dtype=torch.float64)
    x = np.random.default_rng(0).choice([-1.0, 0.0, 1.0], n_prev)
    probe = torch.as_tensor(x).reshape(zero.shape)
    for node in pre64 + [lin64]:
        zero, probe = evaluate(node, [zero]), evaluate(node, [probe])
    bias = zero.reshape(-1).numpy().copy()
    want = probe.reshape(-1).numpy() - bias
    got = weight @ x
    if not np.allclose(got, want, rtol=CHECK_TOL, atol=CHECK_TOL * (1 + np.abs(want).max(initial=0))):
        raise Refuse(f"node {lin64.name}: sparse weight extraction disagrees with the op (unsupported geometry)")
    return weight, bias


def _segment(nodes: list[Node]) -> tuple[list[Node], Node | None, list[Node]]:
    """Split a segment into (reindex ops, the linear/conv node or None, post chain)."""
    lin = [i for i, n in enumerate(nodes) if n.op in LINEAR_OPS]
    if len(lin) > 1:
        raise Refuse(f"{len(lin)} linear/conv nodes between two sign layers (need one)")
    if not lin:
        return [], None, nodes
    i = lin[0]
    return nodes[:i], nodes[i], nodes[i + 1:]


def _pool_windows(node: Node, in_shape: tuple[int, ...]) -> np.ndarray:
    """[m, k] flat input positions of each maxpool window (-1 for padding), checked against the op."""
    at = node.attrs
    kernel, stride, pad, dil = (list(at[k]) for k in ("kernel", "stride", "padding", "dilation"))
    in_sp, out_sp = list(in_shape[1:]), list(node.shape[1:])
    if len(in_sp) == 1:
        kernel, stride, pad, dil, in_sp, out_sp = [1] + kernel, [1] + stride, [0] + pad, [1] + dil, [1] + in_sp, [1] + out_sp
    c = in_shape[0]
    o = np.stack(np.meshgrid(np.arange(c), np.arange(out_sp[0]), np.arange(out_sp[1]), indexing="ij"), -1).reshape(-1, 3)
    cols = []
    for ki in range(kernel[0]):
        for kj in range(kernel[1]):
            ih = o[:, 1] * stride[0] - pad[0] + ki * dil[0]
            iw = o[:, 2] * stride[1] - pad[1] + kj * dil[1]
            ok = (ih >= 0) & (ih < in_sp[0]) & (iw >= 0) & (iw < in_sp[1])
            cols.append(np.where(ok, (o[:, 0] * in_sp[0] + ih) * in_sp[1] + iw, -1))
    windows = np.stack(cols, 1)
    probe = np.random.default_rng(1).standard_normal(int(np.prod(in_shape)))
    want = evaluate(node, [torch.as_tensor(probe).reshape((1,) + tuple(in_shape))]).reshape(-1).numpy()
    got = np.where(windows >= 0, probe[np.clip(windows, 0, None)], -np.inf).max(axis=1)
    if got.shape != want.shape or not np.array_equal(got, want):
        raise Refuse(f"maxpool {node.name}: window extraction disagrees with the op (unsupported geometry)")
    return windows


def _pools(nodes: list[Node], prev_shape) -> tuple[list[PoolLayer], list[Node], tuple[int, ...]]:
    """Leading maxpools of a segment as pool layers; the rest of the segment and the shape after them."""
    pools = []
    while nodes and nodes[0].op == "maxpool":
        pools.append(PoolLayer(_pool_windows(nodes[0], tuple(prev_shape))))
        prev_shape, nodes = nodes[0].shape, nodes[1:]
    if any(n.op == "maxpool" for n in nodes):
        raise Refuse("a maxpool is only encoded right after a sign (max over sign values)")
    return pools, nodes, tuple(prev_shape)


def _hidden_layer(nodes, nodes64, prev_shape) -> SignLayer:
    """A binarized block: reindex -> linear/conv with {-1,0,+1} weights -> chain (-> sign)."""
    pre, lin, post = _segment(nodes)
    if lin is None:
        raise Refuse("two sign layers without a linear/conv between them")
    k = len(pre)
    weight, bias = segment_weights(pre, nodes64[k], nodes64[:k], prev_shape)
    mag = np.abs(weight.data)
    counts = np.diff(weight.indptr)
    scale = np.zeros(weight.shape[0])
    nonempty = counts > 0
    scale[nonempty] = np.maximum.reduceat(mag, weight.indptr[:-1][nonempty])
    bad = mag != np.repeat(scale, counts)
    if np.any(bad):
        row = int(np.repeat(np.arange(weight.shape[0]), counts)[np.argmax(bad)])
        vals = np.unique(weight.getrow(row).data)[:4].tolist()
        raise Refuse(f"node {lin.name}: row {row} is not c * {{-1,0,+1}} (effective weights must be in "
                     f"{{-1,0,+1}} up to one positive scale per row), found {vals}")
    scale[scale == 0] = 1.0
    signs = sp.csr_matrix((np.sign(weight.data).astype(np.int8), weight.indices, weight.indptr), shape=weight.shape)
    chain = track(post, lin.size, CHAIN_OPS)
    return SignLayer(chain, signs, bias, scale)


def _output_layer(nodes, nodes64, prev_shape) -> OutputLayer:
    """The tail after the last sign: reindex -> optional linear/conv (real weights) -> chain."""
    n_prev = int(np.prod(prev_shape))
    pre, lin, post = _segment(nodes)
    if lin is None:
        return OutputLayer(track(post, n_prev, CHAIN_OPS), sp.identity(n_prev, format="csr"), np.zeros(n_prev))
    k = len(pre)
    moved = track(pre, n_prev, REINDEX_OPS).src
    used = moved[moved >= 0]
    if len(np.unique(used)) != len(used):
        raise Refuse("the last sign values are duplicated before the final linear (sums of weights inexact)")
    weight, bias = segment_weights(pre, nodes64[k], nodes64[:k], prev_shape)
    return OutputLayer(track(post, lin.size, CHAIN_OPS), weight, bias)


def _param_dtype(graph: Graph):
    """numpy float type of the graph's floating params (float32 when there are none)."""
    for node in graph.nodes:
        for t in node.params.values():
            if t is not None and t.is_floating_point():
                return {torch.float64: np.float64, torch.float16: np.float16}.get(t.dtype, np.float32)
    return np.float32


def _parse_uncached(graph: Graph) -> BnnStructure:
    """Recognise the binarized shape or raise ``Refuse`` with the reason."""
    nodes = _chain_of(graph)
    cuts = [i for i, n in enumerate(nodes) if n.op == "sign"]
    if not cuts:
        raise Refuse("no sign activation")
    nodes64 = list(graph.to(dtype=torch.float64).nodes)
    bounds = [-1] + cuts + [len(nodes)]
    segs = [(nodes[a + 1:b], nodes64[a + 1:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    layers: list[SignLayer | PoolLayer] = [SignLayer(track(segs[0][0], graph.n_inputs, CHAIN_OPS), None, None)]
    for (seg, seg64), cut in zip(segs[1:], cuts):
        pools, rest, shape = _pools(seg, nodes[cut].shape)
        layers += pools
        rest64 = seg64[len(seg) - len(rest):]
        if cut == cuts[-1]:
            output = _output_layer(rest, rest64, shape)
        else:
            layers.append(_hidden_layer(rest, rest64, shape))
    return BnnStructure(tuple(layers), output, graph.n_inputs, graph.n_outputs, _param_dtype(graph))


_CACHE: "weakref.WeakKeyDictionary[Graph, BnnStructure | Refuse]" = weakref.WeakKeyDictionary()


def parse(graph: Graph) -> BnnStructure:
    """``_parse_uncached`` remembered per graph object (route choice and the SAT step both ask)."""
    hit = _CACHE.get(graph)
    if hit is None:
        try:
            hit = _parse_uncached(graph)
        except Refuse as exc:
            hit = exc
        _CACHE[graph] = hit
    if isinstance(hit, Refuse):
        raise Refuse(str(hit))
    return hit


def recognise_bnn(graph: Graph) -> BnnStructure | None:
    """The binarized structure of ``graph``, or None (``bnn_reason`` says why)."""
    try:
        return parse(graph)
    except Refuse:
        return None


def bnn_reason(graph: Graph) -> str:
    """Why ``graph`` is (or is not) a binarized network this module encodes."""
    try:
        s = parse(graph)
    except Refuse as exc:
        return str(exc)
    signs = [len(layer.chain.src) for layer in s.layers if isinstance(layer, SignLayer)]
    pools = sum(isinstance(layer, PoolLayer) for layer in s.layers)
    return (f"binarized network: {len(signs)} sign layers of sizes {signs}, {pools} maxpool layers, "
            f"{s.n_outputs} outputs")
