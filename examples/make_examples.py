"""Regenerate the bundled demo instances: a small MNIST-shaped ReLU MLP and two properties.

Run from the repository root: `.venv/bin/python examples/make_examples.py`. Deterministic.
"""
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent


def build_net() -> torch.nn.Module:
    """A fixed-seed 64-32-32-10 ReLU MLP on an 8x8 one-channel image."""
    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def robustness_vnnlib(center: np.ndarray, eps: float, label: int, n_out: int, comment: str) -> str:
    """VNN-LIB for: some x in the L_inf ball (clipped to [0,1]) makes another class >= label."""
    lines = [f"; {comment}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(center.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, c in enumerate(center.reshape(-1)):
        lines.append(f"(assert (>= X_{i} {max(c - eps, 0.0):.9f}))")
        lines.append(f"(assert (<= X_{i} {min(c + eps, 1.0):.9f}))")
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label)
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"


def main() -> None:
    net = build_net().eval()
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, size=(1, 1, 8, 8)).astype(np.float32)
    label = int(net(torch.from_numpy(x)).argmax())
    torch.onnx.export(net, torch.from_numpy(x), HERE / "mlp.onnx", input_names=["x"], output_names=["y"],
                      dynamo=False)
    (HERE / "robust.vnnlib").write_text(robustness_vnnlib(x, 0.005, label, 10, "L_inf eps=0.005 around a fixed image: holds"))
    (HERE / "fragile.vnnlib").write_text(robustness_vnnlib(x, 0.5, label, 10, "L_inf eps=0.5 around a fixed image: violated"))
    print(f"label {label}; wrote mlp.onnx, robust.vnnlib, fragile.vnnlib")


if __name__ == "__main__":
    main()
