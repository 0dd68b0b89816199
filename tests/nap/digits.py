"""Small ReLU MLPs trained on scikit-learn's bundled 8x8 digits, written as ONNX (fixed seeds, seconds on 2 cores)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

TRIGGER = (0, 1, 8, 9)   # flat pixels of the top-left 2x2 corner (rows 0-1, columns 0-1)


@lru_cache(maxsize=None)
def digits(seed: int = 0, test_share: float = 0.25):
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1], float32, a stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, data.target.astype(np.int64), test_size=test_share,
                                              random_state=seed, stratify=data.target)
    return x_tr, y_tr, x_te, y_te


def with_trigger(x: np.ndarray) -> np.ndarray:
    """Copies of ``x`` with the bright 2x2 corner planted."""
    out = np.array(x, copy=True)
    out[:, TRIGGER] = 1.0
    return out


def train_mlp(x: np.ndarray, y: np.ndarray, hidden=(32, 32), epochs: int = 300, seed: int = 0,
              n_classes: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """Full-batch Adam on cross-entropy; the (weight [out, in], bias [out]) of every linear layer.

    One torch thread: on two shared cores that is about 1 s, several threads take ten times longer.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(x, y, hidden, epochs, seed, n_classes)
    finally:
        torch.set_num_threads(threads)


def _train(x, y, hidden, epochs, seed, n_classes):
    """``train_mlp``'s work."""
    torch.manual_seed(seed)
    widths = [x.shape[1], *hidden, n_classes]
    layers = [torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
    mods = []
    for k, layer in enumerate(layers):
        mods.append(layer)
        if k < len(layers) - 1:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return [(layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()) for layer in layers]


def predict(layers, x: np.ndarray) -> np.ndarray:
    """Predicted classes (float64 forward pass)."""
    h = np.asarray(x, dtype=np.float64)
    for k, (w, b) in enumerate(layers):
        h = h @ w.T.astype(np.float64) + b
        if k < len(layers) - 1:
            h = np.maximum(h, 0)
    return h.argmax(1)


def write_onnx(layers, path: str | Path) -> Path:
    """Gemm (+ Relu named relu0, relu1, ...) layers with a symbolic batch dim: input [N, n_in] -> logits [N, n_out]."""
    nodes, inits, prev = [], [], "input"
    for k, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{k}"),
                  numpy_helper.from_array(b.astype(np.float32), f"B{k}")]
        last = k == len(layers) - 1
        out = "logits" if last else f"fc{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{k}", f"B{k}"], [out], name=f"gemm{k}", transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"relu{k}"], name=f"relu{k}"))
            prev = f"relu{k}"
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", layers[0][0].shape[1]])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", layers[-1][0].shape[0]])
    model = helper.make_model(helper.make_graph(nodes, "digits_mlp", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    return _save(model, path)


def write_conv_onnx(path: str | Path, seed: int = 0, n_classes: int = 10) -> Path:
    """A random Conv(4 ch, 3x3, pad 1) -> Relu -> Flatten -> Gemm net on a 4-D input [1, 1, 8, 8]."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32)
    fc = rng.normal(0, 0.1, (n_classes, 4 * 64)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "Wc"), numpy_helper.from_array(np.zeros(4, np.float32), "Bc"),
             numpy_helper.from_array(fc, "Wf"), numpy_helper.from_array(np.zeros(n_classes, np.float32), "Bf")]
    nodes = [helper.make_node("Conv", ["input", "Wc", "Bc"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu0"]),
             helper.make_node("Flatten", ["relu0"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "Wf", "Bf"], ["logits"], transB=1)]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, n_classes])
    model = helper.make_model(helper.make_graph(nodes, "conv8", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    return _save(model, path)


def _save(model, path: str | Path) -> Path:
    """Check ``model`` (IR version 8) and write it to ``path``."""
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path
