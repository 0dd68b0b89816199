"""Audit datasets from eps-ball robustness properties (the VNN-COMP mnist_fc ones).

Each mnist_fc property ``prop_<i>_<eps>.vnnlib`` boxes an MNIST test image x (float32 values
k/255) as ``lower = max(fl32(x - fl32(eps)), 0)``, ``upper = min(fl32(x + fl32(eps)), 1)``
(float32 arithmetic: this reproduces every shared file exactly), and its output constraint
``(or (and (>= Y_j Y_label)) ...)`` names the label. Inverting it, per pixel:

* where ``lower > 0`` the pixel is ``lower + eps``; where ``upper < 1`` it is ``upper - eps``
  (so where ``lower == 0`` and ``upper < 1``, the pixel is ``upper - eps``, possibly 0 itself;
  where ``upper == 1`` and ``lower > 0``, it is ``lower + eps``); where both are clipped the box
  says nothing about the pixel (only when 2 eps >= 1) and recovery fails;
* float32 rounding makes a few neighbouring values (an ulp apart) give the same box: the value on
  the 8-bit grid k/255 is taken where it reproduces the box, else the plain inversion or an ulp
  neighbour that does. Every recovered image is re-boxed and must reproduce the file's box exactly
  (else ``ValueError``), with the float64 rule (``lower = max(x - eps, 0)``) tried as a fallback.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

PROPERTY_NAME = re.compile(r"^prop_(\d+)_([0-9.eE+-]+)\.vnnlib$")
ULPS = (1, -1, 2, -2, 3, -3)


def parse_name(path: str | Path) -> tuple[int, float]:
    """(property index, eps) from a file named ``prop_<i>_<eps>.vnnlib``."""
    match = PROPERTY_NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{Path(path).name}: not named prop_<index>_<eps>.vnnlib")
    return int(match.group(1)), float(match.group(2))


def _rebox(x: np.ndarray, eps: float, clip: tuple[float, float], float32: bool) -> tuple[np.ndarray, np.ndarray]:
    """The generator's box of ``x`` (float32 or float64 arithmetic), as float64."""
    if float32:
        x32, e32 = x.astype(np.float32), np.float32(eps)
        lo = np.maximum(x32 - e32, np.float32(clip[0])).astype(np.float64)
        hi = np.minimum(x32 + e32, np.float32(clip[1])).astype(np.float64)
        return lo, hi
    return np.maximum(x - eps, clip[0]), np.minimum(x + eps, clip[1])


def _candidates(lower: np.ndarray, upper: np.ndarray, eps: float, clip, float32: bool) -> list[np.ndarray]:
    """Candidate images, most preferred first: 8-bit grid values, plain inversion, ulp neighbours."""
    dtype = np.float32 if float32 else np.float64
    e = dtype(eps)
    lo, hi = lower.astype(dtype), upper.astype(dtype)
    plain = np.where(lo > dtype(clip[0]), lo + e, hi - e).astype(dtype)
    other = np.where(hi < dtype(clip[1]), hi - e, lo + e).astype(dtype)
    grid = (np.round(plain.astype(np.float64) * 255) / 255).astype(dtype)
    out = [grid, plain, other]
    for k in ULPS:
        step = np.full_like(plain, np.inf if k > 0 else -np.inf)
        shifted = plain
        for _ in range(abs(k)):
            shifted = np.nextafter(shifted, step)
        out.append(shifted)
    return [c.astype(np.float64) for c in out]


def recover_image(lower: np.ndarray, upper: np.ndarray, eps: float, clip: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """The image whose clipped eps-box is [lower, upper] (see module docstring); float64 values."""
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    blind = (lower <= clip[0]) & (upper >= clip[1])
    if np.any(blind):
        raise ValueError(f"pixel {int(np.argmax(blind))}: the box is the whole range [{clip[0]:g}, {clip[1]:g}], "
                         "so it does not determine the pixel")
    for float32 in (True, False):
        x = np.full(lower.shape, np.nan)
        for cand in _candidates(lower, upper, eps, clip, float32):
            lo, hi = _rebox(cand, eps, clip, float32)
            fits = np.isnan(x) & (lo == lower) & (hi == upper)
            x[fits] = cand[fits]
        if not np.any(np.isnan(x)):
            return x
    bad = int(np.argmax(np.isnan(x)))
    raise ValueError(f"pixel {bad}: no value reproduces the box [{lower[bad]!r}, {upper[bad]!r}] at eps {eps!r}")


def property_label(spec) -> int:
    """The label of a robustness property: the class every unsafe polytope compares the others against."""
    if len(spec.regions) != 1:
        raise ValueError(f"expected one input box, found {len(spec.regions)}")
    polys = spec.regions[0].unsafe
    n = spec.n_outputs
    rows = [p.A for p in polys if p.A.shape[0] == 1]
    if len(rows) != len(polys) or len(polys) != n - 1:
        raise ValueError("not a robustness property (want one 'Y_j >= Y_label' disjunct per other class)")
    A = np.concatenate(rows)
    plus = np.flatnonzero(np.all(A == 1.0, axis=0))
    if plus.size != 1 or not all(p.b[0] == 0.0 for p in polys):
        raise ValueError("not a robustness property (no single label in every disjunct)")
    label = int(plus[0])
    minus = sorted(int(np.flatnonzero(r[0] == -1.0)[0]) for r in rows if np.sum(r[0] != 0) == 2 and np.sum(r[0] == -1) == 1)
    if minus != [j for j in range(n) if j != label]:
        raise ValueError("not a robustness property (the disjuncts do not cover every other class once)")
    return label


def read_property(path: str | Path, clip: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, int, int, float]:
    """(image, label, property index, eps) of one ``prop_<i>_<eps>.vnnlib`` file."""
    from verifier.spec.vnnlib import load_vnnlib

    index, eps = parse_name(path)
    spec = load_vnnlib(str(path))
    region = spec.regions[0] if spec.regions else None
    label = property_label(spec)
    try:
        image = recover_image(region.lower, region.upper, eps, clip)
    except ValueError as exc:
        raise ValueError(f"{Path(path).name}: {exc}") from None
    return image, label, index, eps


def dataset_from_properties(folder: str | Path, eps: float | None = None) -> dict[str, np.ndarray]:
    """Arrays ``x`` (images, square when the input count is), ``y``, ``index``, ``eps`` from a property folder.

    ``folder`` is a benchmark folder (with ``vnnlib/``) or the folder of property files. Properties
    of the same index (other eps) must recover the same image; one entry per index, in index order.
    ``eps``: use only the files of that eps.
    """
    folder = Path(folder)
    files = sorted((folder / "vnnlib" if (folder / "vnnlib").is_dir() else folder).glob("prop_*.vnnlib"))
    if eps is not None:
        files = [f for f in files if math.isclose(parse_name(f)[1], eps, rel_tol=1e-12)]
    if not files:
        raise ValueError(f"{folder}: no prop_<index>_<eps>.vnnlib files{'' if eps is None else f' at eps {eps:g}'}")
    found: dict[int, tuple[np.ndarray, int, float]] = {}
    for f in files:
        image, label, index, e = read_property(f)
        if index in found:
            prev, prev_label, _ = found[index]
            if prev_label != label or not np.array_equal(prev, image):
                raise ValueError(f"{f.name}: property {index} gives another image or label than at another eps")
            continue
        found[index] = (image, label, e)
    order = sorted(found)
    x = np.stack([found[i][0] for i in order])
    if np.array_equal(x.astype(np.float32), x):
        x = x.astype(np.float32)
    side = math.isqrt(x.shape[1])
    if side * side == x.shape[1]:
        x = x.reshape(len(order), side, side)
    return {"x": x, "y": np.array([found[i][1] for i in order], dtype=np.int64),
            "index": np.array(order, dtype=np.int64), "eps": np.array([found[i][2] for i in order])}


def write_dataset(folder: str | Path, out: str | Path, eps: float | None = None) -> dict[str, np.ndarray]:
    """``dataset_from_properties`` saved as an ``.npz`` audit dataset at ``out``."""
    arrays = dataset_from_properties(folder, eps)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return arrays
