"""The audit's work list: one item per (sample, eps), with its clean prediction and VNN-LIB property.

Torch-free (numpy + onnxruntime), so that the service's API process can plan an audit and send
one job per item. Samples the model misclassifies get no property: they are counted, not verified.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verifier.audit.claim import Claim


@dataclass(frozen=True)
class AuditItem:
    """One (sample, eps) check."""

    key: str                 # unique, file-name safe: "e<eps index>-s<sample index>"
    sample: int              # index into the claim's data
    eps_index: int
    eps: float
    label: int
    prediction: int          # argmax of the model's output on the clean sample (onnxruntime)
    misclassified: bool
    vnnlib_text: str | None  # None for misclassified samples


def item_key(eps_index: int, sample: int) -> str:
    """The key of the item for sample ``sample`` at the ``eps_index``-th eps."""
    return f"e{eps_index}-s{sample:05d}"


def normalise(values: np.ndarray, mean, std, input_shape: tuple[int, ...]) -> np.ndarray:
    """``(values - mean) / std`` for flat samples ``values`` [..., n_inputs] (identity without mean/std)."""
    values = np.asarray(values, dtype=np.float64)
    if mean is None and std is None:
        return values
    n = int(np.prod(input_shape, dtype=np.int64))
    m = _broadcast(mean, 0.0, input_shape, n)
    s = _broadcast(std, 1.0, input_shape, n)
    return (values - m) / s


def denormalise(values: np.ndarray, mean, std, input_shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of ``normalise``: model inputs back to pixel values."""
    values = np.asarray(values, dtype=np.float64)
    if mean is None and std is None:
        return values
    n = int(np.prod(input_shape, dtype=np.int64))
    return values * _broadcast(std, 1.0, input_shape, n) + _broadcast(mean, 0.0, input_shape, n)


def _broadcast(values, default: float, input_shape: tuple[int, ...], n: int) -> np.ndarray:
    """One value, one per channel (first axis of ``input_shape``) or one per input, as a flat [n] vector."""
    if values is None:
        return np.full(n, default)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 1 or v.size == n:
        return np.broadcast_to(v, (n,)).copy()
    return np.repeat(v, n // v.size)   # per channel: C-order, channel axis first


def input_box(x: np.ndarray, eps: float, clip, mean, std, input_shape) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper), flat float64 in model-input space: the L-inf ball of ``x``, clipped, normalised.

    Built in pixel space as ``[max(x - eps, lo), min(x + eps, hi)]``, then normalised; each side is
    moved one ulp outward after every rounded step, so the box contains the exact real region.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    lower = np.nextafter(x - eps, -np.inf) if eps > 0 else x.copy()
    upper = np.nextafter(x + eps, np.inf) if eps > 0 else x.copy()
    if clip is not None:
        lower, upper = np.maximum(lower, clip[0]), np.minimum(upper, clip[1])
    if mean is not None or std is not None:
        lower = np.nextafter(normalise(lower, mean, std, input_shape), -np.inf)
        upper = np.nextafter(normalise(upper, mean, std, input_shape), np.inf)
    return lower, upper


def robustness_vnnlib(lower: np.ndarray, upper: np.ndarray, label: int, n_outputs: int, comment: str) -> str:
    """VNN-LIB: some x in [lower, upper] makes another class score >= ``label``'s (the unsafe outputs).

    The form of ``examples/make_examples.py``, with every bound written as its shortest exact decimal.
    """
    lines = [f"; {line}" for line in comment.splitlines()]
    lines += [f"(declare-const X_{i} Real)" for i in range(lower.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)]
    for i, (lo, hi) in enumerate(zip(lower.tolist(), upper.tolist())):
        lines.append(f"(assert (>= X_{i} {lo!r}))")
        lines.append(f"(assert (<= X_{i} {hi!r}))")
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_outputs) if j != label)
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"


def item_vnnlib(claim: Claim, sample: int, eps: float) -> str:
    """The VNN-LIB property of one (sample, eps) of ``claim``."""
    lower, upper = input_box(claim.x[sample], eps, claim.clip, claim.mean, claim.std, claim.input_shape)
    label = int(claim.y[sample])
    comment = (f"nnverify audit: sample {sample}, label {label}, eps {eps!r} ({claim.norm}"
               f"{'' if claim.clip is None else f', clip [{claim.clip[0]!r}, {claim.clip[1]!r}]'}"
               f"{'' if claim.mean is None and claim.std is None else ', normalised outside the model'})")
    return robustness_vnnlib(lower, upper, label, claim.n_outputs, comment)


def clean_predictions(claim: Claim) -> np.ndarray:
    """argmax class of every clean sample, from onnxruntime on the original model."""
    from verifier.model.reference import OnnxRunner

    runner = OnnxRunner(str(claim.model))
    flat = claim.x.reshape(claim.n_samples, -1)
    outputs = runner.run(normalise(flat, claim.mean, claim.std, claim.input_shape))
    return np.argmax(outputs, axis=1)


def plan_items(claim: Claim) -> list[AuditItem]:
    """One ``AuditItem`` per (eps, sample), eps-major; misclassified samples carry no property."""
    predictions = clean_predictions(claim)
    items = []
    for k, eps in enumerate(claim.eps):
        for i in range(claim.n_samples):
            label, pred = int(claim.y[i]), int(predictions[i])
            wrong = pred != label
            text = None if wrong else item_vnnlib(claim, i, eps)
            items.append(AuditItem(item_key(k, i), i, k, eps, label, pred, wrong, text))
    return items
