"""Small networks and properties the service tests generate (besides the bundled examples)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from tests.test_portfolio import write_mlp, write_spec


def write_slow_instance(folder: Path) -> tuple[Path, Path]:
    """A 40-128-128-128-2 ReLU MLP and a property far above its sampled maximum: the attack finds
    nothing and branch and bound runs for minutes, so a job on it keeps running until stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    net, prop = folder / "slow.onnx", folder / "slow.vnnlib"
    write_mlp(net, 11, [40, 128, 128, 128, 2])
    session = ort.InferenceSession(str(net))
    x = np.random.default_rng(0).uniform(-1, 1, (2000, 40)).astype(np.float32)
    y = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    d = y[:, 0] - y[:, 1]
    threshold = float(d.max() + 2.0 * (d.max() - d.min()))
    write_spec(prop, -np.ones(40), np.ones(40), [({0: -1.0, 1: 1.0}, -threshold)], 2)   # unsafe: Y0 - Y1 >= t
    return net, prop
