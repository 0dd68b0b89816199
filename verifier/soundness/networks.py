"""Random ONNX networks for the soundness suite: MLPs and small CNNs, with an optional planted bump.

A *bump* is a ReLU gadget that is zero everywhere except in a tiny L1 ball around a hidden point
``x*``::

    bump(x) = relu(1 - k * sum_i (relu(x_i - x*_i) + relu(x*_i - x_i)))

It is added, scaled by ``height``, to one output logit. It is merged into the network either
block-diagonally (ReLU MLPs with two or more hidden layers: its neurons sit in the hidden layers
beside the main neurons, and later layers carry it with an identity weight) or as a parallel
branch joined to the main output with an ``Add`` (every other architecture). Either way the result
is one ordinary ONNX graph. All weights are float32; ``x*`` must be float32-exact so that the
bump is exactly 1 at ``x*``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
POOLS = {"max": "MaxPool", "avg": "AveragePool"}


@dataclass(frozen=True)
class Bump:
    """The planted gadget: centre (float32-exact, flat), slope k (1 / L1 radius), output row."""

    center: np.ndarray
    slope: float
    height: float
    output: int


@dataclass(frozen=True)
class MlpSpec:
    """A fully connected net: Gemm [-> BatchNorm] -> act per hidden layer, then a Gemm output."""

    n_inputs: int
    hidden: tuple[int, ...]
    n_outputs: int
    activation: str = "relu"
    batchnorm: bool = False


@dataclass(frozen=True)
class CnnSpec:
    """[1, C, H, W] -> Conv 3x3 [-> BatchNorm] -> act [-> pool 2x2] -> Flatten -> Gemm -> act -> Gemm."""

    image: tuple[int, int, int] = (1, 8, 8)
    channels: int = 4
    hidden: int = 16
    n_outputs: int = 3
    activation: str = "relu"
    pool: str | None = None
    batchnorm: bool = False

    @property
    def n_inputs(self) -> int:
        """Number of scalar inputs."""
        c, h, w = self.image
        return c * h * w


@dataclass
class _Builder:
    """Collects ONNX nodes and initializers with unique names."""

    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    count: int = 0

    def const(self, value: np.ndarray, base: str) -> str:
        """Add a float32 (or int64) initializer; return its name."""
        self.count += 1
        name = f"{base}_{self.count}"
        arr = np.asarray(value)
        arr = arr.astype(np.int64) if arr.dtype.kind in "iu" else arr.astype(np.float32)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str, **attrs) -> str:
        """Add a node with one output; return the output name."""
        self.count += 1
        out = f"{base}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def gemm(self, x: str, w: np.ndarray, b: np.ndarray, base: str) -> str:
        """y = x @ w.T + b."""
        return self.op("Gemm", [x, self.const(w, f"{base}_w"), self.const(b, f"{base}_b")], base, transB=1)

    def batchnorm(self, x: str, rng: np.random.Generator, channels: int, base: str) -> str:
        """Inference BatchNormalization with random (well-conditioned) statistics."""
        scale = rng.uniform(0.5, 1.5, channels)
        bias = rng.normal(0.0, 0.2, channels)
        mean = rng.normal(0.0, 0.2, channels)
        var = rng.uniform(0.5, 2.0, channels)
        names = [self.const(v, f"{base}_{k}") for k, v in (("s", scale), ("b", bias), ("m", mean), ("v", var))]
        return self.op("BatchNormalization", [x] + names, base, epsilon=1e-5)


def _dense(rng: np.random.Generator, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """He-scaled random weights and small random biases."""
    w = rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in))
    return w.astype(np.float32), (rng.normal(0.0, 0.1, n_out)).astype(np.float32)


def _model(b: _Builder, in_shape: list[int], out: str, n_outputs: int) -> onnx.ModelProto:
    """Wrap the builder's graph (input "input", output "output") in a checked model."""
    b.nodes.append(helper.make_node("Identity", [out], ["output"], name="output_identity"))
    graph = helper.make_graph(
        b.nodes, "soundness", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, n_outputs])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nnverify-soundness")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def bump_branch(b: _Builder, flat: str, bump: Bump, n_outputs: int) -> str:
    """The bump as a parallel branch on the flat input; returns a [1, n_outputs] value."""
    n = bump.center.size
    eye = np.eye(n, dtype=np.float32)
    c = bump.center.astype(np.float32)
    h = b.op("Relu", [b.gemm(flat, np.vstack([eye, -eye]), np.concatenate([-c, c]), "bump_abs")], "bump_abs_relu")
    z = b.op("Relu", [b.gemm(h, np.full((1, 2 * n), -bump.slope), np.ones(1), "bump_z")], "bump_relu")
    w = np.zeros((n_outputs, 1), dtype=np.float32)
    w[bump.output, 0] = bump.height
    return b.gemm(z, w, np.zeros(n_outputs), "bump_out")


def mlp_weights(spec: MlpSpec, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random weights of every Gemm layer (hidden layers, then the output)."""
    widths = (spec.n_inputs,) + spec.hidden + (spec.n_outputs,)
    return [_dense(rng, widths[i + 1], widths[i]) for i in range(len(widths) - 1)]


def block_diagonal(layers: list[tuple[np.ndarray, np.ndarray]], bump: Bump) -> list[tuple[np.ndarray, np.ndarray]]:
    """Merge the bump into a ReLU MLP's layers (needs two or more hidden layers)."""
    if len(layers) < 3:
        raise ValueError("block-diagonal bump needs at least two hidden layers")
    n = bump.center.size
    c = bump.center.astype(np.float32)
    (w1, b1), (w2, b2) = layers[0], layers[1]
    eye = np.eye(n, dtype=np.float32)
    out = [(np.vstack([w1, eye, -eye]), np.concatenate([b1, -c, c]))]
    w2n = np.zeros((w2.shape[0] + 1, w2.shape[1] + 2 * n), dtype=np.float32)
    w2n[:w2.shape[0], :w2.shape[1]] = w2
    w2n[-1, w2.shape[1]:] = -bump.slope
    out.append((w2n, np.concatenate([b2, [1.0]]).astype(np.float32)))
    for w, bias in layers[2:-1]:
        wn = np.zeros((w.shape[0] + 1, w.shape[1] + 1), dtype=np.float32)
        wn[:-1, :-1], wn[-1, -1] = w, 1.0
        out.append((wn, np.concatenate([bias, [0.0]]).astype(np.float32)))
    w, bias = layers[-1]
    wn = np.zeros((w.shape[0], w.shape[1] + 1), dtype=np.float32)
    wn[:, :-1] = w
    wn[bump.output, -1] = bump.height
    out.append((wn, bias))
    return out


def mlp_model(spec: MlpSpec, seed: int, bump: Bump | None = None) -> onnx.ModelProto:
    """An MLP ONNX model (weights from ``seed``); a bump is merged block-diagonally when possible, else as a branch."""
    rng = np.random.default_rng(seed)
    layers = mlp_weights(spec, rng)
    merged = bump is not None and spec.activation == "relu" and not spec.batchnorm and len(spec.hidden) >= 2
    if merged:
        layers = block_diagonal(layers, bump)
    b, x = _Builder(), "input"
    for i, (w, bias) in enumerate(layers[:-1]):
        x = b.gemm(x, w, bias, f"fc{i}")
        if spec.batchnorm:
            x = b.batchnorm(x, rng, w.shape[0], f"bn{i}")
        x = b.op(ACTIVATIONS[spec.activation], [x], f"act{i}")
    out = b.gemm(x, *layers[-1], "fc_out")
    if bump is not None and not merged:
        out = b.op("Add", [out, bump_branch(b, "input", bump, spec.n_outputs)], "join")
    return _model(b, [1, spec.n_inputs], out, spec.n_outputs)


def cnn_model(spec: CnnSpec, seed: int, bump: Bump | None = None) -> onnx.ModelProto:
    """A small CNN ONNX model (weights from ``seed``); a bump joins as a parallel branch."""
    rng = np.random.default_rng(seed)
    c, h, w = spec.image
    b = _Builder()
    k = rng.normal(0.0, np.sqrt(2.0 / (9 * c)), (spec.channels, c, 3, 3))
    x = b.op("Conv", ["input", b.const(k, "conv_w"), b.const(rng.normal(0, 0.1, spec.channels), "conv_b")],
             "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    if spec.batchnorm:
        x = b.batchnorm(x, rng, spec.channels, "bn")
    x = b.op(ACTIVATIONS[spec.activation], [x], "act0")
    if spec.pool is not None:
        x = b.op(POOLS[spec.pool], [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
        h, w = h // 2, w // 2
    x = b.op("Flatten", [x], "flat", axis=1)
    n_flat = spec.channels * h * w
    x = b.op(ACTIVATIONS[spec.activation], [b.gemm(x, *_dense(rng, spec.hidden, n_flat), "fc0")], "act1")
    out = b.gemm(x, *_dense(rng, spec.n_outputs, spec.hidden), "fc_out")
    if bump is not None:
        flat_in = b.op("Flatten", ["input"], "flat_in", axis=1)
        out = b.op("Add", [out, bump_branch(b, flat_in, bump, spec.n_outputs)], "join")
    return _model(b, [1] + list(spec.image), out, spec.n_outputs)
