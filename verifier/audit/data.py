"""Audit datasets: an ``.npz`` with ``x`` and ``y``, or a folder of ``.npy`` samples (numpy only).

Formats (``load_dataset``):

* ``FILE.npz`` with arrays ``x`` (``[N, ...]``, one sample per row, any per-sample shape) and
  ``y`` (``[N]``, integer class labels). Other arrays are ignored.
* ``FOLDER/`` of ``.npy`` files, one sample per file, taken in natural name order (``2.npy``
  before ``10.npy``). Labels come either from ``FOLDER/labels.npy`` (``[N]`` integers, the i-th
  label for the i-th sample file) or, when there is no ``labels.npy``, from each file name:
  ``<anything>_<label>.npy`` (e.g. ``0007_3.npy`` is a sample of class 3).

Sample values are returned as float64 copies of what the files hold (float32 data is exact).
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

LABELS_FILE = "labels.npy"
_LABEL_IN_NAME = re.compile(r"_(-?\d+)$")


class DatasetError(ValueError):
    """A dataset file or folder that cannot be read as (samples, labels)."""


def load_dataset(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(x [N, *sample_shape] float64, y [N] int64) from an ``.npz`` file or a folder of ``.npy`` files."""
    path = Path(path)
    if path.is_dir():
        x, y = _load_folder(path)
    elif path.is_file():
        x, y = _load_npz(path)
    else:
        raise DatasetError(f"data {path}: no such file or folder")
    return _checked(x, y, path)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` of an ``.npz`` archive (pickled objects refused)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise DatasetError(f"data {path}: the .npz has no array {' or '.join(map(repr, missing))} "
                                   f"(found: {', '.join(archive.files) or 'nothing'})")
            return archive["x"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"data {path}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc


def _natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (``s2`` before ``s10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _load_npy(path: Path) -> np.ndarray:
    """One ``.npy`` array (pickled objects refused)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"data {path}: not a readable .npy file ({type(exc).__name__}: {exc})") from exc


def _load_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Samples of a folder of ``.npy`` files, labels from ``labels.npy`` or the file names."""
    files = sorted((p for p in folder.glob("*.npy") if p.name != LABELS_FILE), key=lambda p: _natural_key(p.name))
    if not files:
        raise DatasetError(f"data {folder}: the folder holds no .npy sample files")
    samples = [_load_npy(p) for p in files]
    shapes = {s.shape for s in samples}
    if len(shapes) != 1:
        raise DatasetError(f"data {folder}: sample files differ in shape ({', '.join(map(str, sorted(shapes)))})")
    if (folder / LABELS_FILE).is_file():
        labels = _load_npy(folder / LABELS_FILE).reshape(-1)
        if labels.size != len(files):
            raise DatasetError(f"data {folder}: {LABELS_FILE} has {labels.size} labels for {len(files)} sample files")
    else:
        labels = []
        for p in files:
            match = _LABEL_IN_NAME.search(p.stem)
            if match is None:
                raise DatasetError(f"data {folder}: no {LABELS_FILE}, and {p.name} is not named <anything>_<label>.npy")
            labels.append(int(match.group(1)))
        labels = np.array(labels)
    return np.stack(samples), labels


def _checked(x: np.ndarray, y: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Numeric, finite samples and integer labels, one label per sample."""
    if x.dtype.kind not in "fiub" or x.ndim < 1:
        raise DatasetError(f"data {path}: x must be a numeric array [N, ...], got dtype {x.dtype} shape {x.shape}")
    if x.shape[0] == 0:
        raise DatasetError(f"data {path}: no samples")
    y = np.asarray(y).reshape(-1) if np.asarray(y).ndim <= 1 else np.asarray(y)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DatasetError(f"data {path}: {x.shape[0]} samples but y has shape {tuple(np.shape(y))} (want [{x.shape[0]}])")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DatasetError(f"data {path}: labels must be whole numbers")
    elif y.dtype.kind not in "iub":
        raise DatasetError(f"data {path}: labels must be integers, got dtype {y.dtype}")
    x = np.array(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        bad = int(np.argmax(~np.isfinite(x).reshape(x.shape[0], -1).all(axis=1)))
        raise DatasetError(f"data {path}: sample {bad} has a NaN or infinite value")
    return x, y.astype(np.int64)
