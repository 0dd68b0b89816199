"""Structural validation of a proof tree: completeness, split points, boxes, and leaf parameters.

Walking a tree yields its leaves with the domain derived from the path (the region box cut by
the input splits, plus the ReLU split constraints). Because every split has exactly two children
and an input split point lies strictly inside its parent box, the leaves' boxes tile the region.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from verifier.certificate import CertificateError, decode_array
from verifier.model.graph import Graph


class ArrayStore:
    """The certificate's arrays, decoded on first use into float64 (unknown keys are errors)."""

    def __init__(self, arrays: Any):
        if not isinstance(arrays, dict):
            raise CertificateError("arrays must be an object {key: array}")
        self._raw = arrays
        self._decoded: dict[str, np.ndarray] = {}

    def get(self, key: Any) -> np.ndarray:
        """The float64 value of array ``key``."""
        if not isinstance(key, str) or key not in self._raw:
            raise CertificateError(f"array key {key!r} is not in the certificate's arrays")
        if key not in self._decoded:
            self._decoded[key] = decode_array(self._raw[key], key)
        return self._decoded[key]

    def dtype(self, key: str) -> np.dtype:
        """The precision array ``key`` was stored in."""
        self.get(key)
        return np.dtype(self._raw[key]["dtype"])


INTERVAL_OPS = ("sigmoid", "tanh")   # activations whose pre-activation interval may be split (GenBaB)


@dataclass(frozen=True)
class Split:
    """A split on a path: neuron ``index`` of the input z of ``node``; sign -1 (z <= at) or +1 (z >= at).

    A relu split has ``at`` = 0; an interval split (node an ``INTERVAL_OPS`` activation) any finite
    ``at``: its two children cover every z whatever the point, so any point is sound.
    """

    node: str
    index: int
    sign: int
    at: float = 0.0


@dataclass(frozen=True)
class Leaf:
    """A leaf domain and what it claims."""

    where: str
    lower: np.ndarray
    upper: np.ndarray
    splits: tuple[Split, ...]
    row: int
    bound: float
    alphas: dict[str, np.ndarray] = field(default_factory=dict)
    betas: np.ndarray | None = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def walk(tree: Any, lower: np.ndarray, upper: np.ndarray, rows: int, graph: Graph, array: ArrayStore,
         where: str, inner: dict[str, tuple] | None = None, splits: tuple[Split, ...] = ()) -> list[Leaf]:
    """All leaves of ``tree`` over the region box, in depth-first order; ``CertificateError`` if malformed.

    ``inner``, when given, receives the domain ``(lower, upper, splits)`` of every split node by path.
    ``splits``: fixed split constraints the root domain carries (``root_splits``); every leaf has them first.
    """
    leaves: list[Leaf] = []
    stack = [(tree, lower, upper, tuple(splits), where)]
    relus = {n.name: n for n in graph.nodes if n.op == "relu"}
    smooth = {n.name: n for n in graph.nodes if n.op in INTERVAL_OPS}
    while stack:
        node, lo, hi, splits, at = stack.pop()
        if not isinstance(node, dict) or len(node) == 0:
            raise CertificateError(f"{at}: a tree node must be a non-empty object")
        if set(node) == {"leaf"}:
            leaves.append(_leaf(node["leaf"], lo, hi, splits, rows, graph, relus, array, at))
        elif set(node) == {"split", "children"}:
            children = node["children"]
            if not isinstance(children, list) or len(children) != 2:
                raise CertificateError(f"{at}: a split needs exactly 2 children")
            kids = _children(node["split"], lo, hi, splits, relus, at, smooth)
            if inner is not None:
                inner[at] = (lo, hi, splits)
            for child, (clo, chi, csplits, cat) in reversed(list(zip(children, kids))):
                stack.append((child, clo, chi, csplits, cat))
        else:
            raise CertificateError(f"{at}: a tree node has keys {sorted(node)}, expected leaf or split+children")
    return leaves


def root_splits(entry: Any, graph: Graph, at: str) -> tuple[Split, ...]:
    """A proof's fixed root splits ``[{"node", "index", "sign"}, ...]``, validated like tree splits."""
    if not isinstance(entry, list):
        raise CertificateError(f"{at}: splits must be a list of {{node, index, sign}}")
    relus = {n.name: n for n in graph.nodes if n.op == "relu"}
    out: list[Split] = []
    for item in entry:
        if not isinstance(item, dict) or set(item) != {"node", "index", "sign"}:
            raise CertificateError(f"{at}: a root split needs exactly node, index and sign")
        name, index, sign = item["node"], item["index"], item["sign"]
        if name not in relus:
            raise CertificateError(f"{at}: root split names {name!r}, which is not a relu node of the graph")
        size = int(np.prod(relus[name].shape))
        if not _is_int(index) or not 0 <= index < size:
            raise CertificateError(f"{at}: root split index {index!r} is not in [0, {size}) for node {name!r}")
        if not _is_int(sign) or sign not in (-1, 1):
            raise CertificateError(f"{at}: root split sign {sign!r} is not -1 or 1")
        if any(s.node == name and s.index == index for s in out):
            raise CertificateError(f"{at}: neuron {index} of relu {name!r} is a root split twice")
        out.append(Split(name, index, sign))
    return tuple(out)


def root_alphas(entry: Any, graph: Graph, array: ArrayStore, at: str, values: set[str]) -> dict[str, tuple]:
    """A proof's root alphas ``{value: {"rows": key, "slopes": {relu node: key}}}``, validated.

    Returns value -> (rows as int64 [k], {relu node: slopes [2k or 1, *shape] in [0, 1]}). ``values``
    are the values whose bounds the checker derives (inputs of nonlinear ops).
    """
    if not isinstance(entry, dict):
        raise CertificateError(f"{at}: alphas must be an object {{value: {{rows, slopes}}}}")
    relus = {n.name: n for n in graph.nodes if n.op == "relu"}
    sizes = {n.name: n.size for n in graph.nodes}
    out = {}
    for value, body in entry.items():
        if value not in values or value not in sizes:    # the graph input has no backward pass to tighten it
            raise CertificateError(f"{at}: alphas name value {value!r}, which is not a node feeding a nonlinear op of the graph")
        if not isinstance(body, dict) or set(body) != {"rows", "slopes"} or not isinstance(body["slopes"], dict):
            raise CertificateError(f"{at}: alphas of {value!r} need exactly rows and slopes {{relu node: key}}")
        rows = array.get(body["rows"])
        if rows.ndim != 1 or not np.all(np.isfinite(rows)) or not np.array_equal(rows, np.round(rows)) \
                or not np.all((rows >= 0) & (rows < sizes[value])) or len(np.unique(rows)) != rows.size:
            raise CertificateError(f"{at}: alphas rows of {value!r} must be distinct integers in [0, {sizes[value]})")
        k, slopes = rows.size, {}
        for name, key in body["slopes"].items():
            if name not in relus:
                raise CertificateError(f"{at}: alphas of {value!r} name {name!r}, which is not a relu node of the graph")
            a = array.get(key)
            if a.shape not in ((2 * k,) + tuple(relus[name].shape), (1,) + tuple(relus[name].shape)):
                raise CertificateError(f"{at}: slopes of {name!r} for {value!r} have shape {list(a.shape)}, expected "
                                       f"[{2 * k} or 1, {', '.join(map(str, relus[name].shape))}]")
            if not np.all((a >= 0) & (a <= 1)):
                raise CertificateError(f"{at}: slopes of {name!r} for {value!r} are outside [0, 1] (or not finite)")
            slopes[name] = a
        out[value] = (rows.astype(np.int64), slopes)
    return out


def parent_path(path: str) -> str:
    """The path of a node's parent (every step appends one of .L .H .I .A)."""
    return path[:-2]


def _children(split: Any, lo, hi, splits: tuple[Split, ...], relus: dict, at: str, smooth: dict | None = None) -> list[tuple]:
    """The two child domains of a split node (after validating the split)."""
    if not isinstance(split, dict):
        raise CertificateError(f"{at}: split must be an object")
    kind = split.get("kind")
    if kind == "input" and set(split) == {"kind", "dim", "at"}:
        dim, point = split["dim"], split["at"]
        if not _is_int(dim) or not 0 <= dim < lo.shape[0]:
            raise CertificateError(f"{at}: input split dim {dim!r} is not in [0, {lo.shape[0]})")
        if not _is_real(point) or not lo[dim] < point < hi[dim]:
            raise CertificateError(f"{at}: input split point {point!r} on dim {dim} is not strictly inside "
                                   f"({lo[dim]!r}, {hi[dim]!r})")
        low_hi, high_lo = hi.copy(), lo.copy()
        low_hi[dim] = high_lo[dim] = float(point)
        return [(lo, low_hi, splits, at + ".L"), (high_lo, hi, splits, at + ".H")]
    if kind == "relu" and set(split) == {"kind", "node", "index"}:
        name, index = split["node"], split["index"]
        if name not in relus:
            raise CertificateError(f"{at}: relu split names {name!r}, which is not a relu node of the graph")
        size = int(np.prod(relus[name].shape))
        if not _is_int(index) or not 0 <= index < size:
            raise CertificateError(f"{at}: relu split index {index!r} is not in [0, {size}) for node {name!r}")
        if any(s.node == name and s.index == index for s in splits):
            raise CertificateError(f"{at}: neuron {index} of relu {name!r} is split twice on one path")
        return [(lo, hi, splits + (Split(name, index, -1),), at + ".I"),
                (lo, hi, splits + (Split(name, index, +1),), at + ".A")]
    if kind == "interval" and set(split) == {"kind", "node", "index", "at"}:
        name, index, point = split["node"], split["index"], split["at"]
        if name not in (smooth or {}):
            raise CertificateError(f"{at}: interval split names {name!r}, which is not a {'/'.join(INTERVAL_OPS)} node")
        size = int(np.prod(smooth[name].shape))
        if not _is_int(index) or not 0 <= index < size:
            raise CertificateError(f"{at}: interval split index {index!r} is not in [0, {size}) for node {name!r}")
        if not _is_real(point):
            raise CertificateError(f"{at}: interval split point {point!r} is not a finite number")
        return [(lo, hi, splits + (Split(name, index, -1, float(point)),), at + ".I"),
                (lo, hi, splits + (Split(name, index, +1, float(point)),), at + ".A")]
    raise CertificateError(f"{at}: unknown split {split!r} (kind input: dim, at; kind relu: node, index; "
                           "kind interval: node, index, at)")


def _leaf(body: Any, lo, hi, splits, rows: int, graph: Graph, relus: dict, array: ArrayStore, at: str) -> Leaf:
    """Validate a leaf body against its derived domain."""
    if not isinstance(body, dict) or not {"row", "bound"} <= set(body) <= {"box", "row", "bound", "alphas", "betas"}:
        raise CertificateError(f"{at}: a leaf needs row and bound (and optionally box, alphas, betas)")
    row, bound = body["row"], body["bound"]
    if not _is_int(row) or not 0 <= row < rows:
        raise CertificateError(f"{at}: leaf row {row!r} is not in [0, {rows})")
    if not _is_real(bound) or bound <= 0:
        raise CertificateError(f"{at}: leaf claims bound {bound!r}, which is not a finite number > 0")
    _check_box(body.get("box"), lo, hi, array, at)
    alphas = _alphas(body.get("alphas") or {}, relus, array, at)
    betas = _betas(body.get("betas"), len(splits), array, at)
    return Leaf(at, lo, hi, splits, row, float(bound), alphas, betas)


def _check_box(box: Any, lo, hi, array: ArrayStore, at: str) -> None:
    """A stored box must equal the derived one (compared in the stored precision)."""
    if box is None:
        return
    if not isinstance(box, list) or len(box) != 2:
        raise CertificateError(f"{at}: leaf box must be [lower_key, upper_key] or null")
    for name, key, derived in (("lower", box[0], lo), ("upper", box[1], hi)):
        stored, dtype = array.get(key), array.dtype(key)
        if stored.shape != derived.shape or not np.array_equal(stored, derived.astype(dtype).astype(np.float64)):
            raise CertificateError(f"{at}: leaf box {name} differs from the box derived from the split path")


def _alphas(alphas: Any, relus: dict, array: ArrayStore, at: str) -> dict[str, np.ndarray]:
    """Leaf alphas: per relu node, an array of the node's shape with every value in [0, 1]."""
    if not isinstance(alphas, dict):
        raise CertificateError(f"{at}: alphas must be an object {{relu node: array key}}")
    out = {}
    for name, key in alphas.items():
        if name not in relus:
            raise CertificateError(f"{at}: alphas name {name!r}, which is not a relu node of the graph")
        a = array.get(key)
        if a.shape != tuple(relus[name].shape):
            raise CertificateError(f"{at}: alphas of {name!r} have shape {list(a.shape)}, "
                                   f"the node has {list(relus[name].shape)}")
        if not np.all((a >= 0) & (a <= 1)):
            raise CertificateError(f"{at}: alphas of {name!r} are outside [0, 1] (or not finite)")
        out[name] = a
    return out


def _betas(key: Any, n_splits: int, array: ArrayStore, at: str) -> np.ndarray | None:
    """Leaf betas: one finite value >= 0 per relu split on the path."""
    if key is None:
        return None
    b = array.get(key)
    if b.shape != (n_splits,):
        raise CertificateError(f"{at}: betas have shape {list(b.shape)}, the path has {n_splits} relu splits")
    if not np.all(np.isfinite(b) & (b >= 0)):
        raise CertificateError(f"{at}: betas must be finite and >= 0")
    return b
