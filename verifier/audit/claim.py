"""A robustness claim (model + data + epsilons + claimed accuracy), read and checked before any job.

The claim file is JSON; paths are relative to the claim file::

    {"model": "net.onnx", "data": "test.npz", "norm": "linf", "eps": [0.01, 0.03],
     "clip": [0, 1], "mean": [0.1307], "std": [0.3081],
     "claimed_certified_accuracy": 0.8, "claimed_clean_accuracy": 0.98, "timeout_per_sample": 30}

Semantics:

* ``data`` holds samples in *pixel space* (see ``verifier.audit.data`` for the formats). A sample
  whose element count equals the model input's is reshaped to that input's shape.
* ``norm``: only ``"linf"`` (the default). ``"l2"`` is refused: the bound engine propagates boxes,
  and a box around an L2 ball would certify soundly but could not falsify (its corners lie outside
  the ball), so the audit would be one-sided; no sound L2 relaxation is implemented.
* ``eps``: one number or a list, each >= 0, in pixel units.
* ``clip`` (optional, ``[lo, hi]``): the valid pixel range. The audited input region of a sample
  x is ``[max(x - eps, lo), min(x + eps, hi)]``, computed in float64 and widened by one ulp on each
  side, so that it always contains the exact real ball (a wrong "holds" is the worst error).
* ``mean``/``std`` (optional): normalisation *outside* the model, ``z = (x - mean) / std``; the
  region is built in pixel space as above, then mapped through it (std > 0 keeps its order). One
  value, one per channel (the model input's first per-sample axis) or one per input value. A
  model that normalises inside itself takes no mean/std: pixel values go in directly.
* ``claimed_certified_accuracy``: a fraction in [0, 1], one for all eps or one per eps;
  ``claimed_clean_accuracy`` (optional) likewise a fraction. Fractions are compared as the
  decimals written (0.7 means 7/10 exactly).
* ``timeout_per_sample`` (optional, seconds): the default budget of each (sample, eps) check.
* ``name`` (optional): a title for the report.

Every problem raises ``ClaimError`` (a ``ValueError``) naming it, before any verification starts.
Only numpy, onnx and onnxruntime are imported (the service's API process may use this module).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verifier.audit.data import DatasetError, load_dataset

REQUIRED = ("model", "data", "eps", "claimed_certified_accuracy")
OPTIONAL = ("norm", "clip", "mean", "std", "claimed_clean_accuracy", "timeout_per_sample", "name")
NORMS = ("linf",)
MAX_MODEL_PARAMS = 200_000_000


class ClaimError(ValueError):
    """A claim that cannot be audited as written (bad field, missing file, data not fitting the model)."""


@dataclass(frozen=True, eq=False)
class Claim:
    """A checked claim: its parameters, the loaded samples and what the model takes and gives."""

    model: Path                               # absolute path of the ONNX file
    data: Path                                # absolute path of the dataset
    eps: tuple[float, ...]
    claimed_certified_accuracy: tuple[float, ...]   # one per eps
    norm: str = "linf"
    clip: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    claimed_clean_accuracy: float | None = None
    timeout_per_sample: float | None = None
    name: str = ""
    written: dict = field(default_factory=dict)     # the claim as written (relative paths)
    model_sha256: str = ""
    input_shape: tuple[int, ...] = ()               # the model's per-sample input shape
    n_outputs: int = 0
    x: np.ndarray = field(default=None, repr=False)  # [N, *sample_shape] pixel values, float64
    y: np.ndarray = field(default=None, repr=False)  # [N] labels

    @property
    def n_samples(self) -> int:
        """Number of samples in the dataset."""
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The per-sample shape the data file gives (used to draw images)."""
        return tuple(self.x.shape[1:])

    @property
    def n_inputs(self) -> int:
        """Scalars per model input."""
        return int(np.prod(self.input_shape, dtype=np.int64))


def load_claim(path: str | Path) -> Claim:
    """Read and check the claim file at ``path`` (paths inside are relative to it)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClaimError(f"claim {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClaimError(f"claim {path}: not valid JSON ({exc})") from exc
    return claim_from_dict(data, path.resolve().parent)


def claim_from_dict(data: Any, base: str | Path) -> Claim:
    """Check a claim given as a dict; ``model`` and ``data`` are resolved against folder ``base``."""
    if not isinstance(data, dict):
        raise ClaimError("a claim is a JSON object")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ClaimError(f"unknown claim field(s): {', '.join(unknown)} (known: {', '.join(REQUIRED + OPTIONAL)})")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ClaimError(f"claim lacks required field(s): {', '.join(missing)}")
    norm = data.get("norm", "linf")
    if norm not in NORMS:
        raise ClaimError(f"norm {norm!r} is not supported: only 'linf' (the bounds are over boxes; "
                         "no sound L2 relaxation is implemented)")
    eps = _numbers(data["eps"], "eps")
    if any(e < 0 for e in eps):
        raise ClaimError(f"eps must be >= 0, got {_show(data['eps'])}")
    claimed = _numbers(data["claimed_certified_accuracy"], "claimed_certified_accuracy")
    if len(claimed) == 1:
        claimed = claimed * len(eps)
    if len(claimed) != len(eps):
        raise ClaimError(f"claimed_certified_accuracy has {len(claimed)} values for {len(eps)} eps")
    _fractions(claimed, "claimed_certified_accuracy")
    clean = _optional_number(data, "claimed_clean_accuracy")
    if clean is not None:
        _fractions((clean,), "claimed_clean_accuracy")
    timeout = _optional_number(data, "timeout_per_sample")
    if timeout is not None and timeout <= 0:
        raise ClaimError(f"timeout_per_sample must be > 0, got {timeout}")
    clip = _clip(data.get("clip"))
    name = data.get("name", "")
    if not isinstance(name, str):
        raise ClaimError("name must be a string")
    base = Path(base)
    model, data_path = _path(data["model"], base, "model"), _path(data["data"], base, "data")
    sha, input_shape, n_outputs = _model_facts(model)
    x, y = _dataset(data_path, input_shape, n_outputs, clip)
    n_inputs = int(np.prod(input_shape, dtype=np.int64))
    mean = _normaliser(data.get("mean"), "mean", input_shape, n_inputs)
    std = _normaliser(data.get("std"), "std", input_shape, n_inputs)
    if std is not None and any(s <= 0 for s in std):
        raise ClaimError("std must be > 0 everywhere")
    return Claim(model, data_path, eps, claimed, norm, clip, mean, std, clean, timeout, name, dict(data), sha,
                 input_shape, n_outputs, x, y)


# ----------------------------------------------------------------------------- fields

def _show(value) -> str:
    """A short rendering of a JSON value for an error message."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(v) -> bool:
    """A JSON number (not a boolean), finite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(value, key: str) -> tuple[float, ...]:
    """A number or a non-empty list of numbers, as a tuple of floats."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(_is_number(v) for v in items):
        raise ClaimError(f"{key} must be a finite number or a non-empty list of them, got {_show(value)}")
    return tuple(float(v) for v in items)


def _optional_number(data: dict, key: str) -> float | None:
    """``data[key]`` as a float, None when absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if not _is_number(value):
        raise ClaimError(f"{key} must be a finite number, got {_show(value)}")
    return float(value)


def _fractions(values, key: str) -> None:
    """Every value lies in [0, 1]."""
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise ClaimError(f"{key} must be a fraction in [0, 1], got {bad[0]:g}")


def _clip(value) -> tuple[float, float] | None:
    """``[lo, hi]`` with lo < hi, or None."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)):
        raise ClaimError(f"clip must be [lo, hi] (two finite numbers), got {_show(value)}")
    lo, hi = float(value[0]), float(value[1])
    if not lo < hi:
        raise ClaimError(f"clip must have lo < hi, got [{lo:g}, {hi:g}]")
    return lo, hi


def _path(value, base: Path, key: str) -> Path:
    """A path field resolved against ``base``; it must exist."""
    if not isinstance(value, str) or not value:
        raise ClaimError(f"{key} must be a path (string), got {_show(value)}")
    path = (base / value).resolve()
    if not path.exists():
        raise ClaimError(f"{key} file {value!r} not found (looked at {path})")
    return path


def _normaliser(value, key: str, input_shape: tuple[int, ...], n_inputs: int) -> tuple[float, ...] | None:
    """mean / std: one value, one per channel (first input axis) or one per input value."""
    if value is None:
        return None
    values = _numbers(value, key)
    channels = input_shape[0] if input_shape else 1
    if len(values) not in (1, channels, n_inputs):
        raise ClaimError(f"{key} has {len(values)} values; give 1, {channels} (one per channel of input "
                         f"{list(input_shape)}) or {n_inputs}")
    return values


# ----------------------------------------------------------------------------- files

def _model_facts(path: Path) -> tuple[str, tuple[int, ...], int]:
    """(sha256, per-sample input shape, number of outputs) of a safe, runnable ONNX file."""
    from verifier.certificate import sha256_file
    from verifier.model.onnx_file import ModelLoadError, read_file, read_model
    from verifier.model.reference import OnnxRunner

    try:
        data = read_file(str(path))
        read_model(data, None, MAX_MODEL_PARAMS)     # parse + safety checks (external data refused)
        runner = OnnxRunner(data)
        out = runner.run(np.zeros(runner.n_inputs))
    except ModelLoadError as exc:
        raise ClaimError(f"model {path.name}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 -- onnxruntime raises its own exception types
        raise ClaimError(f"model {path.name}: onnxruntime cannot run it ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if out.shape[1] < 2:
        raise ClaimError(f"model {path.name} has {out.shape[1]} output(s); a classifier needs at least 2")
    return sha256_file(path), tuple(runner.sample_shape), int(out.shape[1])


def _dataset(path: Path, input_shape: tuple[int, ...], n_outputs: int, clip) -> tuple[np.ndarray, np.ndarray]:
    """The samples and labels, checked against the model and the clip range."""
    try:
        x, y = load_dataset(path)
    except DatasetError as exc:
        raise ClaimError(str(exc)) from exc
    n_inputs = int(np.prod(input_shape, dtype=np.int64))
    per_sample = int(np.prod(x.shape[1:], dtype=np.int64))
    if per_sample != n_inputs:
        raise ClaimError(f"data {path.name}: a sample has shape {list(x.shape[1:])} ({per_sample} values) but the "
                         f"model's input {list(input_shape)} takes {n_inputs}")
    bad = np.flatnonzero((y < 0) | (y >= n_outputs))
    if bad.size:
        raise ClaimError(f"data {path.name}: label {int(y[bad[0]])} of sample {int(bad[0])} is outside the "
                         f"model's outputs 0..{n_outputs - 1} ({bad.size} such labels)")
    if clip is not None:
        flat = x.reshape(x.shape[0], -1)
        outside = np.flatnonzero((flat.min(axis=1) < clip[0]) | (flat.max(axis=1) > clip[1]))
        if outside.size:
            i = int(outside[0])
            raise ClaimError(f"data {path.name}: sample {i} has values in [{flat[i].min():g}, {flat[i].max():g}], "
                             f"outside clip [{clip[0]:g}, {clip[1]:g}] ({outside.size} such samples)")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y
