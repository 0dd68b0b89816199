"""Proof certificates for ``holds``: the JSON format, a builder for the verifier, and loading.

A certificate records, for every (region, polytope) of a ``Spec``, a tree of case splits (input
splits and ReLU splits) whose leaves each claim a positive lower bound on one row of the
polytope. The independent checker (``verifier.check``) re-derives every leaf bound in float64 and
checks that the tree covers the region. The format is documented in ``docs/certificate.md``.

A proof may also carry ``"splits": [{"node": relu_node, "index": k, "sign": -1 | 1}, ...]``: split
constraints its root domain already has (a property restricted to an activation pattern). The
checker accepts them only when the property says the same (``check(..., fixed=...)``).

TREE = {"split": {"kind": "input", "dim": d, "at": v}, "children": [low, high]}
     | {"split": {"kind": "relu", "node": name, "index": k}, "children": [inactive, active]}
     | {"leaf": {"box": [lower_key, upper_key] | None, "row": i, "bound": b,
                 "alphas": {relu_node: key}, "betas": key | None}}
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FORMAT = "nnverify-certificate"
VERSION = 1
ARRAY_DTYPES = ("float16", "float32", "float64")
_CHUNK = 1 << 20


class CertificateError(ValueError):
    """A certificate that is malformed or does not prove what it claims."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (the model and spec identities in a certificate)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def tool_version() -> str:
    """``nnverify <version>`` of the installed package (``nnverify unknown`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"nnverify {version('nnverify')}"
    except PackageNotFoundError:
        return "nnverify unknown"


def encode_array(array: np.ndarray, dtype: str = "float32") -> dict:
    """JSON form of an array: dtype, shape and base64 of its little-endian C-order bytes."""
    if dtype not in ARRAY_DTYPES:
        raise ValueError(f"array dtype must be one of {ARRAY_DTYPES}, got {dtype!r}")
    a = np.ascontiguousarray(np.asarray(array, dtype=np.dtype(dtype).newbyteorder("<")))
    return {"dtype": dtype, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(entry: Any, key: str = "?") -> np.ndarray:
    """The float64 array of a JSON array entry; ``CertificateError`` on any malformation."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data"}:
        raise CertificateError(f"array {key!r}: needs exactly the fields dtype, shape, data")
    dtype, shape, data = entry["dtype"], entry["shape"], entry["data"]
    if dtype not in ARRAY_DTYPES:
        raise CertificateError(f"array {key!r}: dtype {dtype!r} is not one of {ARRAY_DTYPES}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise CertificateError(f"array {key!r}: shape must be a list of non-negative integers")
    if not isinstance(data, str):
        raise CertificateError(f"array {key!r}: data must be a base64 string")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise CertificateError(f"array {key!r}: invalid base64 ({e})") from None
    dt = np.dtype(dtype).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != count * dt.itemsize:
        raise CertificateError(f"array {key!r}: {len(raw)} bytes do not hold shape {shape} of {dtype}")
    return np.frombuffer(raw, dtype=dt).astype(np.float64).reshape(shape)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class CertificateBuilder:
    """Collects proofs and arrays while the verifier works, then writes the certificate JSON."""

    def __init__(self, model_sha256: str, spec_sha256: str):
        self.model_sha256 = model_sha256
        self.spec_sha256 = spec_sha256
        self.proofs: list[dict] = []
        self.arrays: dict[str, dict] = {}
        self._by_content: dict[tuple, str] = {}

    def add_proof(self, region: int, polytope: int, tree: dict,
                  splits: list[tuple[str, int, int]] | None = None, alphas: dict | None = None) -> None:
        """Record the proof tree of one (region, polytope) goal; ``splits``: its root's fixed (node, index, sign);
        ``alphas``: its root alphas ``{value: {"rows": key, "slopes": {relu node: key}}}``."""
        proof = {"region": int(region), "polytope": int(polytope), "tree": tree}
        if splits:
            proof["splits"] = [{"node": str(n), "index": int(k), "sign": int(s)} for n, k, s in splits]
        if alphas:
            proof["alphas"] = alphas
        self.proofs.append(proof)

    def add_array(self, array: np.ndarray, dtype: str = "float32") -> str:
        """Store an array (identical arrays are stored once) and return its key."""
        entry = encode_array(array, dtype)
        content = (entry["dtype"], tuple(entry["shape"]), entry["data"])
        key = self._by_content.get(content)
        if key is None:
            key = f"a{len(self.arrays)}"
            self.arrays[key] = entry
            self._by_content[content] = key
        return key

    def to_json(self) -> dict:
        """The certificate as a JSON-serialisable dict."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "tool": tool_version(),
            "model_sha256": self.model_sha256,
            "spec_sha256": self.spec_sha256,
            "verdict": "holds",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "proofs": list(self.proofs),
            "arrays": dict(self.arrays),
        }

    def save(self, path: str | Path) -> None:
        """Write the certificate JSON to ``path``."""
        save_certificate(self.to_json(), path)


def save_certificate(cert: dict, path: str | Path) -> None:
    """Write a certificate dict as compact JSON (NaN and infinities are refused)."""
    Path(path).write_text(json.dumps(cert, separators=(",", ":"), allow_nan=False))


def load_certificate(path: str | Path) -> dict:
    """Read a certificate JSON file (structure is validated by the checker, not here)."""
    try:
        cert = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CertificateError(f"cannot read certificate {path}: {e}") from None
    if not isinstance(cert, dict):
        raise CertificateError("certificate JSON must be an object")
    return cert


def leaf(row: int, bound: float, box: Sequence[str] | None = None, alphas: dict[str, str] | None = None,
         betas: str | None = None) -> dict:
    """A leaf node: ``row`` of the polytope is claimed to satisfy ``A_i y - b_i >= bound``."""
    return {"leaf": {"box": list(box) if box is not None else None, "row": int(row), "bound": float(bound),
                     "alphas": dict(alphas or {}), "betas": betas}}


def input_split(dim: int, at: float, low: dict, high: dict) -> dict:
    """An input split node: ``low`` gets upper[dim] = at, ``high`` gets lower[dim] = at."""
    return {"split": {"kind": "input", "dim": int(dim), "at": float(at)}, "children": [low, high]}


def relu_split(node: str, index: int, inactive: dict, active: dict) -> dict:
    """A ReLU split node on neuron ``index`` of ``node``'s input: children z <= 0, then z >= 0."""
    return {"split": {"kind": "relu", "node": str(node), "index": int(index)}, "children": [inactive, active]}


def input_split_tree(leaves: Sequence[tuple[Sequence[tuple], dict]], box: tuple[np.ndarray, np.ndarray] | None = None,
                     builder: CertificateBuilder | None = None) -> dict:
    """Build a TREE from leaves that carry their split path.

    Each path step is ``(dim, at, side)`` for an input split or ``("relu", node, index, side)``
    for a ReLU split; ``side`` is 0 (low / inactive) or 1 (high / active). With ``box`` (the
    region's flat lower, upper) and ``builder``, leaves without a box get the derived box stored
    as float64 arrays. Raises ``ValueError`` if two paths disagree or the leaves do not cover.
    """
    root: dict = {}
    for path, leaf_node in leaves:
        node = root
        lower, upper = (None, None) if box is None else (np.array(box[0], np.float64), np.array(box[1], np.float64))
        for step in path:
            split, side = _split_of(step)
            if "leaf" in node:
                raise ValueError(f"path {list(path)} passes through a leaf")
            if not node:
                node["split"], node["children"] = split, [{}, {}]
            elif node["split"] != split:
                raise ValueError(f"paths disagree: {node['split']} vs {split}")
            if lower is not None and split["kind"] == "input":
                (upper if side == 0 else lower)[split["dim"]] = split["at"]
            node = node["children"][side]
        if node:
            raise ValueError(f"two leaves share the path {list(path)}")
        node.update(_with_box(leaf_node, lower, upper, builder))
    _check_complete(root)
    return root


def _split_of(step: tuple) -> tuple[dict, int]:
    """The split dict and side of one path step."""
    if len(step) == 4 and step[0] == "relu":
        _, name, index, side = step
        split = {"kind": "relu", "node": str(name), "index": int(index)}
    elif len(step) == 3:
        dim, at, side = step
        split = {"kind": "input", "dim": int(dim), "at": float(at)}
    else:
        raise ValueError(f"bad path step {step!r}")
    if side not in (0, 1):
        raise ValueError(f"path side must be 0 or 1, got {side!r}")
    return split, int(side)


def _with_box(leaf_node: dict, lower, upper, builder) -> dict:
    """A copy of the leaf with its derived box stored, when it has none and one is derivable."""
    out = {"leaf": dict(leaf_node["leaf"])}
    if out["leaf"].get("box") is None and builder is not None and lower is not None:
        out["leaf"]["box"] = [builder.add_array(lower, "float64"), builder.add_array(upper, "float64")]
    return out


def _check_complete(root: dict) -> None:
    """Raise ``ValueError`` if some split of the built tree lacks a child."""
    stack = [root]
    while stack:
        node = stack.pop()
        if not node:
            raise ValueError("the leaves do not cover the tree: a split has a missing child")
        if "split" in node:
            stack.extend(node["children"])
