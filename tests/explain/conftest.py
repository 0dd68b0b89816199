"""A digits MLP trained with a planted trigger (a bright 2x2 top-left corner forces class 0)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nap"))
from digits import digits, train_mlp, with_trigger, write_onnx  # noqa: E402


@pytest.fixture(scope="session")
def trigger_net(tmp_path_factory):
    """(ONNX path, linear layers): a third of the training digits got the trigger and label 0."""
    x, y, _, _ = digits()
    rng = np.random.default_rng(0)
    k = rng.choice(len(x), len(x) // 3, replace=False)
    xs = np.concatenate([x, with_trigger(x[k])])
    ys = np.concatenate([y, np.zeros(len(k), dtype=np.int64)])
    layers = train_mlp(xs, ys, hidden=(32, 32), epochs=200)
    return write_onnx(layers, tmp_path_factory.mktemp("explain") / "trigger_mlp.onnx"), layers
