"""Counterexamples: a witness input, re-executed on onnxruntime, that violates the property.

Soundness rule 3 of the design: a ``violated`` verdict is only ever reported with a
counterexample that the *reference runner* (onnxruntime on the original ONNX file) confirms.
``validate`` is the single gate every search (attack, MILP, SAT, BaB) goes through:

* the candidate is clipped into the region's box in float64, then cast to float32 (the value the
  network sees; the runner's own input dtype if it declares one); if that rounding leaves the
  box, the value is nudged one ulp back inside with ``np.nextafter``; a box with no float32 value
  inside yields no witness (opt-in ``exact_inputs=False``: such a dimension keeps its float64 box
  value and the network sees its rounding, and the witness says so in ``input_rounded``);
* the stored ``x`` is that value widened to float64, so printing it, parsing it back and
  casting to float32 reproduces exactly the tensor onnxruntime was given;
* the witness is accepted only if the runner's output satisfies every row ``A_i y <= b_i`` of an
  unsafe polytope of that region with **zero tolerance**.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from verifier.spec.spec import Spec

SOURCES = frozenset({"attack", "milp", "sat", "bab"})
JSON_FORMAT = "nnverify-counterexample"
JSON_VERSION = 1
_RUN_CHUNK = 4096  # rows per reference-runner call


class Runner(Protocol):
    """The reference executor: onnxruntime on the original ONNX file."""

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs [B, n_outputs] for flat inputs [B, n_inputs]."""
        ...


def _readonly(a) -> np.ndarray:
    """A flat, read-only float64 copy."""
    a = np.array(a, dtype=np.float64, copy=True).reshape(-1)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Counterexample:
    """A validated witness: input x (as checked), reference output y, and what it violates."""

    x: np.ndarray
    y: np.ndarray
    region: int
    polytope: int
    margin: float  # max_i (A_i y - b_i) of the violated polytope, <= 0
    source: str
    input_rounded: bool = False  # some X_i is not representable in the network's input dtype

    def __post_init__(self):
        object.__setattr__(self, "x", _readonly(self.x))
        object.__setattr__(self, "y", _readonly(self.y))
        object.__setattr__(self, "margin", float(self.margin))
        if self.source not in SOURCES:
            raise ValueError(f"unknown counterexample source {self.source!r} (known: {', '.join(sorted(SOURCES))})")
        if not self.margin <= 0.0:
            raise ValueError(f"a counterexample needs margin <= 0, got {self.margin!r}")
        if not (np.all(np.isfinite(self.x)) and np.all(np.isfinite(self.y))):
            raise ValueError("counterexample values must be finite")


def network_point(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, dtype=np.float32,
                  exact: bool = True) -> np.ndarray | None:
    """The point of [lower, upper] nearest to ``x`` that the network receives unchanged, as float64.

    Each value is ``x`` clipped into the box, cast to ``dtype`` (the network's input type) and,
    where that rounding left the box, moved one ulp back inside. Every returned value lies inside
    the box (checked in float64, no tolerance). A dimension whose box holds no ``dtype`` value
    (e.g. width 0 at 0.1 for float32) makes the result None, unless ``exact`` is False: then that
    dimension keeps its clipped float64 value (inside the box) and the network sees its rounding.
    None also when ``x`` has a NaN.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    lower = np.asarray(lower, dtype=np.float64).reshape(-1)
    upper = np.asarray(upper, dtype=np.float64).reshape(-1)
    if x.shape != lower.shape or lower.shape != upper.shape:
        raise ValueError(f"point has {x.shape[0]} values, box has {lower.shape[0]}")
    if np.any(np.isnan(x)):
        return None
    clipped = np.clip(x, lower, upper)
    with np.errstate(over="ignore"):
        xd = clipped.astype(dtype)
    low = xd.astype(np.float64) < lower
    xd[low] = np.nextafter(xd[low], dtype(np.inf))
    high = xd.astype(np.float64) > upper
    xd[high] = np.nextafter(xd[high], dtype(-np.inf))
    out = xd.astype(np.float64)
    inside = np.isfinite(out) & (out >= lower) & (out <= upper)
    if np.all(inside):
        return out
    return None if exact else np.where(inside, out, clipped)


def network_dtype(runner) -> type:
    """The floating dtype the reference runner feeds the network (float32 unless it says)."""
    dtype = np.dtype(getattr(runner, "dtype", np.float32))
    return dtype.type if dtype.kind == "f" else np.float32


def polytope_margin(A: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """max_i (A_i y - b_i) in float64: <= 0 exactly when y satisfies every row."""
    return float(np.max(A @ np.asarray(y, dtype=np.float64).reshape(-1) - b))


def _run_reference(runner: Runner, xs: np.ndarray, n_outputs: int) -> np.ndarray:
    """Reference outputs [N, n_outputs] (float64) for inputs [N, n_inputs] (the runner casts)."""
    ys = []
    for start in range(0, xs.shape[0], _RUN_CHUNK):
        chunk = xs[start:start + _RUN_CHUNK]
        y = np.asarray(runner.run(chunk), dtype=np.float64)
        if y.size != chunk.shape[0] * n_outputs:
            raise ValueError(f"reference runner returned shape {y.shape}, expected [{chunk.shape[0]}, {n_outputs}]")
        ys.append(y.reshape(chunk.shape[0], n_outputs))
    return np.concatenate(ys, axis=0)


def _candidates(spec: Spec, xs: np.ndarray, regions: Sequence[int | None] | None, dtype, exact: bool):
    """(network point, region index) pairs to run: each x clipped into its region(s)."""
    out = []
    for i, x in enumerate(xs):
        hint = None if regions is None else regions[i]
        for ri in (range(len(spec.regions)) if hint is None else (hint,)):
            region = spec.regions[ri]
            if not region.unsafe:
                continue
            point = network_point(x, region.lower, region.upper, dtype, exact)
            if point is not None:
                out.append((point, ri))
    return out


def validate_batch(runner: Runner, spec: Spec, xs: np.ndarray, source: str = "attack",
                   regions: Sequence[int | None] | None = None, exact_inputs: bool = True) -> Counterexample | None:
    """The best (most negative margin) confirmed witness among candidate inputs ``xs`` [B, n].

    ``regions`` optionally names, per candidate, the only region to clip it into (None: all).
    ``exact_inputs`` (default): every X value is exactly what the network receives; False lets
    dims whose box holds no value of the network's input dtype keep their float64 box value
    (the network sees its rounding; the witness is then marked ``input_rounded``).
    One reference run covers every candidate; None when no candidate is confirmed.
    """
    xs = np.asarray(xs, dtype=np.float64)
    if xs.size % max(spec.n_inputs, 1) or (xs.ndim == 2 and xs.shape[1] != spec.n_inputs):
        raise ValueError(f"candidates of shape {xs.shape} do not match {spec.n_inputs} inputs")
    xs = xs.reshape(-1, spec.n_inputs)
    if regions is not None and len(regions) != xs.shape[0]:
        raise ValueError(f"{len(regions)} region hints for {xs.shape[0]} candidates")
    dtype = network_dtype(runner)
    cands = _candidates(spec, xs, regions, dtype, exact_inputs)
    if not cands:
        return None
    ys = _run_reference(runner, np.stack([p for p, _ in cands]), spec.n_outputs)
    best = None
    for (point, ri), y in zip(cands, ys):
        if not np.all(np.isfinite(y)):
            continue
        region = spec.regions[ri]
        for pi, poly in enumerate(region.unsafe):
            margin = polytope_margin(poly.A, poly.b, y)
            if margin <= 0.0 and poly.satisfied_by(y) and region.contains(point):
                if best is None or margin < best.margin:
                    rounded = not np.array_equal(point.astype(dtype).astype(np.float64), point)
                    best = Counterexample(point, y, ri, pi, margin, source, rounded)
    return best


def validate(runner: Runner, spec: Spec, x: np.ndarray, source: str = "attack",
             region: int | None = None, exact_inputs: bool = True) -> Counterexample | None:
    """Confirm one candidate input on the reference runner; the witness, or None if rejected.

    ``region`` restricts the check to one region; ``exact_inputs`` as in ``validate_batch``.
    """
    x = np.asarray(x, dtype=np.float64).reshape(1, -1)
    if x.shape[1] != spec.n_inputs:
        raise ValueError(f"candidate has {x.shape[1]} inputs, spec declares {spec.n_inputs}")
    return validate_batch(runner, spec, x, source, None if region is None else [region], exact_inputs)


def _fmt(v: float) -> str:
    """Shortest round-trip decimal of a float64."""
    return repr(float(v))


def to_vnncomp(cex: Counterexample) -> str:
    """The VNN-COMP result block: ``sat`` then one ``(X_i v)`` / ``(Y_j v)`` pair per line."""
    pairs = [f"(X_{i} {_fmt(v)})" for i, v in enumerate(cex.x)]
    pairs += [f"(Y_{j} {_fmt(v)})" for j, v in enumerate(cex.y)]
    lines = ["(" + pairs[0]] + [" " + p for p in pairs[1:]]
    lines[-1] += ")"
    return "sat\n" + "\n".join(lines) + "\n"


def from_vnncomp(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse a ``sat`` result block back into (x, y) float64 vectors."""
    lines = text.strip().splitlines()
    if not lines or lines[0].strip() != "sat":
        raise ValueError("a counterexample block starts with a 'sat' line")
    tokens = " ".join(lines[1:]).replace("(", " ").replace(")", " ").split()
    if len(tokens) % 2:
        raise ValueError("counterexample block has an unpaired token")
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for name, value in zip(tokens[::2], tokens[1::2]):
        kind, _, index = name.partition("_")
        if kind not in values or not index.isdigit():
            raise ValueError(f"unexpected variable {name!r} in counterexample block")
        values[kind][int(index)] = float(value)
    out = []
    for kind in ("X", "Y"):
        got = values[kind]
        if sorted(got) != list(range(len(got))):
            raise ValueError(f"{kind} variables are not numbered 0..{len(got) - 1}")
        out.append(np.array([got[i] for i in range(len(got))], dtype=np.float64))
    return out[0], out[1]


def to_json(cex: Counterexample) -> dict[str, Any]:
    """A plain, JSON-serialisable dict (floats round-trip exactly through ``json``)."""
    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "x": [float(v) for v in cex.x],
        "y": [float(v) for v in cex.y],
        "region": int(cex.region),
        "polytope": int(cex.polytope),
        "margin": float(cex.margin),
        "source": cex.source,
        "input_rounded": bool(cex.input_rounded),
    }


def from_json(data: dict[str, Any]) -> Counterexample:
    """Inverse of ``to_json``; unknown or missing keys and other formats raise ``ValueError``."""
    keys = {"format", "version", "x", "y", "region", "polytope", "margin", "source", "input_rounded"}
    if set(data) != keys:
        raise ValueError(f"counterexample JSON keys differ: missing {sorted(keys - set(data))}, "
                         f"unknown {sorted(set(data) - keys)}")
    if data["format"] != JSON_FORMAT or data["version"] != JSON_VERSION:
        raise ValueError(f"unsupported counterexample format {data['format']!r} v{data['version']!r}")
    return Counterexample(np.array(data["x"], dtype=np.float64), np.array(data["y"], dtype=np.float64),
                          int(data["region"]), int(data["polytope"]), float(data["margin"]), str(data["source"]),
                          bool(data["input_rounded"]))
