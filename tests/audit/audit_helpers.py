"""Helpers for the audit tests: claim files, and the digits models trained once per session."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SAMPLES = 30          # test samples audited
EPOCHS = 20           # training epochs (a few seconds per model on two cores)
TIMEOUT = 5.0         # seconds per (sample, eps)


def write_claim(folder: Path, name: str = "claim.json", **fields) -> Path:
    """A claim file in ``folder`` with ``fields`` (paths relative to it)."""
    path = folder / name
    path.write_text(json.dumps(fields, indent=1))
    return path


def train_digits(folder: Path) -> dict:
    """The demo's two models (fewer epochs and samples) and an audit dataset of ``SAMPLES`` test images."""
    from verifier.audit import demo

    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = demo.digits(seed=1)
    norm = ((x_train.reshape(-1, 64) - demo.DIGITS_MEAN) / demo.DIGITS_STD).astype(np.float32)
    mlp = demo.train(demo.mlp(1), norm, y_train, EPOCHS, seed=1)
    cnn = demo.train(demo.cnn(1), x_train[:, None], y_train, EPOCHS, ibp_eps=0.15, seed=1)
    np.savez_compressed(folder / "digits.npz", x=x_test[:SAMPLES], y=y_test[:SAMPLES])
    return {"folder": folder, "mlp": demo.export(mlp, (64,), folder / "mlp.onnx"),
            "cnn": demo.export(cnn, (1, 8, 8), folder / "cnn-ibp.onnx"), "data": folder / "digits.npz",
            "x": x_test[:SAMPLES], "y": y_test[:SAMPLES]}


def mlp_claim(folder: Path, name: str = "mlp.json", **overrides) -> Path:
    """A claim on the digits MLP (normalised outside the model), overridable field by field."""
    from verifier.audit import demo

    fields = {"model": "mlp.onnx", "data": "digits.npz", "norm": "linf", "eps": 0.05, "clip": [0, 1],
              "mean": [demo.DIGITS_MEAN], "std": [demo.DIGITS_STD], "claimed_certified_accuracy": 0.5,
              "timeout_per_sample": TIMEOUT}
    fields.update(overrides)
    return write_claim(folder, name, **{k: v for k, v in fields.items() if v is not None})
