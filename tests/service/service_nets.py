"""Small networks and properties the service tests generate (besides the bundled examples)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

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


def write_digits_mlp(folder: Path, hidden: int = 24, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small ReLU MLP trained on sklearn's 8x8 digits (scaled to [0, 1]); (onnx path, x, y) of all digits."""
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x[:1500]), torch.from_numpy(y[:1500])
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    path = folder / "mlp.onnx"
    torch.onnx.export(net.eval(), xt[:1], path, input_names=["x"], output_names=["y"], dynamo=False)
    return path, x, y
