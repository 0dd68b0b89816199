"""Neural activation patterns (NAPs, after Geng et al., "Towards Reliable Neural Specifications").

The NAP of class c fixes the state of the ReLU neurons that are *on* (pre-activation z > 0) for
at least a fraction ``delta`` of c's samples, and of those that are *off* (z <= 0) for at least
``delta`` of them. An input *matches* NAP_c when every fixed neuron is in its state. Neurons are
named by relu node and C-order flat index into that node's per-sample tensor (the same index as
in a certificate's ReLU split).

The NAPs file (JSON, ``FORMAT`` version 1)::

    {"format": "nnverify-naps", "version": 1, "model_sha256": hex, "delta": d,
     "layers": [relu node, ...], "input_range": [lo, hi], "train": n, "heldout": n,
     "classes": [{"label": c, "samples": n_c, "size": k, "on": {node: [index, ...]},
                  "off": {node: [index, ...]}, "recall": r, "precision": p,
                  "precision_predicted": q, "matched": m}, ...],
     "summary": {"mean_recall": ..., "mean_precision": ..., "mean_size": ...}}

``recall``: share of the held-out samples of class c that match NAP_c; ``precision``: share of
the held-out samples matching NAP_c that are labelled c (``precision_predicted``: that the model
classifies as c). ``input_range`` is the range of the mining data, the default valid input box.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

FORMAT = "nnverify-naps"
VERSION = 1
_CHUNK = 4096   # samples per forward pass


class NapError(ValueError):
    """Bad input for NAP mining or verification (the message is one line, fit for a user)."""


@dataclass(frozen=True)
class Nap:
    """The activation pattern of one class: fixed-on and fixed-off neurons per relu node."""

    label: int
    on: dict[str, tuple[int, ...]]
    off: dict[str, tuple[int, ...]]

    @property
    def size(self) -> int:
        """Number of fixed neurons."""
        return sum(len(v) for v in self.on.values()) + sum(len(v) for v in self.off.values())

    def constraints(self) -> list[tuple[str, int, int]]:
        """(relu node, flat index, sign) of every fixed neuron: +1 on (z >= 0 as a split), -1 off (z <= 0)."""
        out = [(n, int(k), 1) for n, ks in self.on.items() for k in ks]
        out += [(n, int(k), -1) for n, ks in self.off.items() for k in ks]
        return sorted(out)

    def signs(self, graph) -> dict[str, np.ndarray]:
        """Per relu node of the pattern, an int8 array [size]: +1 on, -1 off, 0 free."""
        sizes = {n.name: n.size for n in graph.nodes}
        out: dict[str, np.ndarray] = {}
        for node, index, sign in self.constraints():
            out.setdefault(node, np.zeros(sizes[node], dtype=np.int8))[index] = sign
        return out


def as_model(model):
    """A loaded ``verifier.model.Model`` from a path (or the model itself); ``NapError`` if unreadable."""
    from verifier.model import Model, ModelLoadError, UnsupportedModelError, load_onnx

    if isinstance(model, Model):
        return model
    try:
        return load_onnx(str(model))
    except (ModelLoadError, UnsupportedModelError) as exc:
        raise NapError(f"cannot load model {model}: {exc}") from None


def relu_layers(graph, layers: Sequence[str | int] | None = None) -> list[str]:
    """The relu node names to use: all (None), or the given names / positions among the relu nodes."""
    relus = [n.name for n in graph.nodes if n.op == "relu"]
    if not relus:
        raise NapError("the model has no ReLU layer")
    if not layers:
        return relus
    out = []
    for item in layers:
        text = str(item)
        name = relus[int(text)] if text.lstrip("-").isdigit() and -len(relus) <= int(text) < len(relus) else text
        if name not in relus:
            raise NapError(f"layer {item!r} is not a ReLU layer of the model (ReLU layers: {', '.join(relus)})")
        if name not in out:
            out.append(name)
    return out


def inputs_of(graph, x: np.ndarray, what: str = "data") -> np.ndarray:
    """``x`` as float64 [N, n_inputs]; ``NapError`` when a sample's size does not fit the model."""
    x = np.asarray(x, dtype=np.float64)
    n = graph.n_inputs
    per_sample = x.size if x.ndim == 1 else int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
    if x.size == 0 or per_sample != n:
        raise NapError(f"{what}: a sample has {per_sample} values, the model takes {n} inputs")
    if not np.all(np.isfinite(x)):
        raise NapError(f"{what}: values must be finite")
    return x.reshape(-1, n)


def forward(graph, x: np.ndarray, layers: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Float64 pass of the lowered graph: logits [N, n_out] and each layer's pre-activations z [N, size]."""
    g = graph.to(dtype=torch.float64)
    x = np.asarray(x, dtype=np.float64).reshape(-1, graph.n_inputs)
    inputs = {n.name: n.inputs[0] for n in g.nodes if n.op == "relu"}
    logits, pre = [], {name: [] for name in layers}
    with torch.no_grad():
        for start in range(0, x.shape[0], _CHUNK):
            chunk = torch.as_tensor(x[start:start + _CHUNK]).reshape((-1,) + tuple(g.input_shape))
            values = g.forward(chunk, keep=True)
            logits.append(values[g.output_name].reshape(chunk.shape[0], -1).numpy())
            for name in layers:
                pre[name].append(values[inputs[name]].reshape(chunk.shape[0], -1).numpy())
    return np.concatenate(logits), {k: np.concatenate(v) for k, v in pre.items()}


def matches(nap: Nap, pre: dict[str, np.ndarray]) -> np.ndarray:
    """Which samples match ``nap`` ([N] bool), given pre-activations z per relu node (on: z > 0, off: z <= 0)."""
    n = next(iter(pre.values())).shape[0]
    ok = np.ones(n, dtype=bool)
    for name, ks in nap.on.items():
        ok &= np.all(pre[name][:, list(ks)] > 0, axis=1)
    for name, ks in nap.off.items():
        ok &= np.all(pre[name][:, list(ks)] <= 0, axis=1)
    return ok


def mine(model, x: np.ndarray, y: np.ndarray, delta: float = 0.99, layers: Sequence[str | int] | None = None,
         heldout: tuple[np.ndarray, np.ndarray] | None = None, holdout: float = 0.2, seed: int = 0) -> dict:
    """Mine every class's NAP from ``(x, y)`` and score it on held-out data; the NAPs file as a dict.

    ``heldout``: (x, y) to measure recall and precision on; without it a stratified share
    ``holdout`` of ``(x, y)`` is set aside (fixed ``seed``) and the rest is mined.
    """
    m = as_model(model)
    graph = m.graph
    if not 0.5 < float(delta) <= 1.0:
        raise NapError(f"delta must be in (0.5, 1], got {delta}")
    x, y = inputs_of(graph, x), _labels(y, graph.n_outputs, "data")
    if x.shape[0] != y.shape[0]:
        raise NapError(f"data: {x.shape[0]} samples but {y.shape[0]} labels")
    if heldout is None:
        train, test = _split(y, holdout, seed)
        (x, y), (x_te, y_te) = (x[train], y[train]), (x[test], y[test])
    else:
        x_te = inputs_of(graph, heldout[0], "held-out data")
        y_te = _labels(heldout[1], graph.n_outputs, "held-out data")
        if x_te.shape[0] != y_te.shape[0]:
            raise NapError(f"held-out data: {x_te.shape[0]} samples but {y_te.shape[0]} labels")
    names = relu_layers(graph, layers)
    _, pre = forward(graph, x, names)
    logits_te, pre_te = forward(graph, x_te, names)
    pred_te = logits_te.argmax(1)
    classes = []
    for c in sorted(set(y.tolist())):
        nap = _mine_class(c, {k: v[y == c] for k, v in pre.items()}, float(delta))
        classes.append(_score(nap, int((y == c).sum()), matches(nap, pre_te), y_te, pred_te))
    lo, hi = float(min(x.min(), x_te.min())), float(max(x.max(), x_te.max()))
    return {"format": FORMAT, "version": VERSION, "model_sha256": m.sha256, "delta": float(delta), "layers": names,
            "input_range": [lo, hi], "train": int(x.shape[0]), "heldout": int(x_te.shape[0]), "classes": classes,
            "summary": _summary(classes)}


def _labels(y, n_outputs: int, what: str) -> np.ndarray:
    """Integer labels in [0, n_outputs)."""
    y = np.asarray(y).reshape(-1)
    if y.size == 0 or not np.all(np.isfinite(y.astype(np.float64))) or not np.all(y == np.round(y)):
        raise NapError(f"{what}: labels must be integers")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= n_outputs:
        raise NapError(f"{what}: label {int(y.max() if y.max() >= n_outputs else y.min())} is out of range "
                       f"[0, {n_outputs}) for the model's {n_outputs} outputs")
    return y


def _split(y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) index arrays, about ``share`` of each class in test."""
    if not 0.0 < share < 1.0:
        raise NapError(f"holdout share must be in (0, 1), got {share}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(share * idx.size)) if idx.size > 1 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _mine_class(label: int, pre: dict[str, np.ndarray], delta: float) -> Nap:
    """The neurons on (z > 0) or off (z <= 0) for at least ``delta`` of this class's samples."""
    on, off = {}, {}
    for name, z in pre.items():
        share = (z > 0).mean(0)
        on[name] = tuple(int(k) for k in np.flatnonzero(share >= delta))
        off[name] = tuple(int(k) for k in np.flatnonzero(1.0 - share >= delta))
    return Nap(label, {k: v for k, v in on.items() if v}, {k: v for k, v in off.items() if v})


def _score(nap: Nap, samples: int, matched: np.ndarray, y_te: np.ndarray, pred_te: np.ndarray) -> dict:
    """One class entry of the NAPs file: the pattern with its held-out recall and precision."""
    c = nap.label
    own = y_te == c
    hit = int(matched.sum())
    return {"label": c, "samples": samples, "size": nap.size,
            "on": {k: list(v) for k, v in nap.on.items()}, "off": {k: list(v) for k, v in nap.off.items()},
            "recall": float(matched[own].mean()) if own.any() else None,
            "precision": float((y_te[matched] == c).mean()) if hit else None,
            "precision_predicted": float((pred_te[matched] == c).mean()) if hit else None,
            "matched": hit}


def _summary(classes: list[dict]) -> dict:
    """Means over the classes (None where no class has a value)."""
    def mean(key):
        vals = [e[key] for e in classes if e[key] is not None]
        return float(np.mean(vals)) if vals else None
    return {"mean_recall": mean("recall"), "mean_precision": mean("precision"),
            "mean_precision_predicted": mean("precision_predicted"), "mean_size": mean("size")}


def save_naps(naps: dict, path: str | Path) -> None:
    """Write the NAPs file."""
    Path(path).write_text(json.dumps(naps, indent=1))


def load_naps(source: str | Path | dict, model) -> tuple[dict, dict[int, Nap]]:
    """The NAPs file (path or dict) checked against ``model``: (document, {label: Nap}).

    ``NapError`` when it is malformed, names neurons the model lacks, or was mined on another
    model (sha256 mismatch).
    """
    m = as_model(model)
    doc = source if isinstance(source, dict) else _read_json(source)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise NapError(f"not an {FORMAT} version {VERSION} document")
    if doc.get("model_sha256") != m.sha256:
        raise NapError(f"the NAP file was mined on another model (sha256 {str(doc.get('model_sha256'))[:16]}..., "
                       f"this model has {m.sha256[:16]}...)")
    sizes = {n.name: n.size for n in m.graph.nodes if n.op == "relu"}
    naps: dict[int, Nap] = {}
    for entry in doc.get("classes") or []:
        nap = _nap_of(entry, sizes, m.graph.n_outputs)
        if nap.label in naps:
            raise NapError(f"the NAP file has two patterns for class {nap.label}")
        naps[nap.label] = nap
    if not naps:
        raise NapError("the NAP file has no class patterns")
    return doc, naps


def _read_json(path) -> Any:
    """Parsed JSON of a file; ``NapError`` if unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NapError(f"cannot read NAP file {path}: {exc}") from None


def _nap_of(entry: Any, sizes: dict[str, int], n_outputs: int) -> Nap:
    """One validated class pattern."""
    if not isinstance(entry, dict) or not isinstance(entry.get("label"), int) or isinstance(entry.get("label"), bool):
        raise NapError("each NAP class entry needs an integer label")
    label = entry["label"]
    if not 0 <= label < n_outputs:
        raise NapError(f"NAP label {label} is out of range [0, {n_outputs})")
    parts = {}
    for key in ("on", "off"):
        table = entry.get(key, {})
        if not isinstance(table, dict):
            raise NapError(f"class {label}: {key} must map relu layers to index lists")
        parts[key] = {}
        for name, ks in table.items():
            if name not in sizes:
                raise NapError(f"class {label}: {name!r} is not a ReLU layer of the model")
            valid = lambda k: isinstance(k, int) and not isinstance(k, bool) and 0 <= k < sizes[name]  # noqa: E731
            if not isinstance(ks, list) or not all(valid(k) for k in ks):
                raise NapError(f"class {label}: {key} indices of {name!r} must be integers in [0, {sizes[name]})")
            if ks:
                parts[key][name] = tuple(sorted(set(ks)))
    both = [(n, k) for n, ks in parts["on"].items() for k in ks if k in parts["off"].get(n, ())]
    if both:
        raise NapError(f"class {label}: neuron {both[0][1]} of {both[0][0]!r} is both on and off")
    return Nap(label, parts["on"], parts["off"])


def canonical_sha256(data: Any) -> str:
    """sha256 of the canonical JSON text of ``data`` (sorted keys, no spaces): a property's identity."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
