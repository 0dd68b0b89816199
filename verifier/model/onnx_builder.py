"""The state and helpers every ONNX lowering function shares: ``Var``, ``Builder`` and friends.

Values are tracked with their full ONNX shape (batch dim of size 1 included): a value whose
shape has rank >= 2 and a leading 1 is *batched*, and its canonical per-sample shape drops that
dim; otherwise the per-sample shape is the whole ONNX shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx.reference import ReferenceEvaluator

from verifier.model.graph import Node
from verifier.model.onnx_file import ModelLoadError


class NodeUnsupported(Exception):
    """Raised by a lowering function: this node cannot be lowered (reason in args[0])."""


@dataclass(frozen=True)
class Var:
    """A variable (input-dependent) tensor: canonical value ``name`` with full ONNX ``shape``."""

    name: str
    shape: tuple[int, ...]

    @property
    def batched(self) -> bool:
        """Whether the leading dim is the (size-1) batch dim."""
        return is_batched(self.shape)

    @property
    def cshape(self) -> tuple[int, ...]:
        """Canonical per-sample shape."""
        return self.shape[1:] if self.batched else self.shape

    @property
    def size(self) -> int:
        """Number of scalars."""
        return int(np.prod(self.shape, dtype=np.int64))


def is_batched(shape) -> bool:
    """The batch rule: rank >= 2 and a leading dim of 1."""
    return len(shape) >= 2 and shape[0] == 1


FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}


class Builder:
    """Accumulates canonical nodes while the ONNX graph is walked."""

    def __init__(self, opsets: dict[str, int], max_params: int):
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self.folded: list[str] = []
        self.opsets = opsets
        self.max_params = max_params

    @property
    def opset(self) -> int:
        """The default-domain opset version."""
        return self.opsets.get("", self.opsets.get("ai.onnx", 13))

    def fresh(self, base: str) -> str:
        """A unique canonical value name derived from ``base``."""
        base = base or "v"
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def emit(self, base: str, op: str, inputs: list[Var], shape, params=None, attrs=None) -> Var:
        """Append one canonical node; ``shape`` is the full ONNX shape of its output."""
        shape = tuple(int(d) for d in shape)
        var = Var(self.fresh(base), shape)
        params = {k: (None if v is None else torch.as_tensor(np.array(v, copy=True)))
                  for k, v in (params or {}).items()}
        for k, v in params.items():
            if v is not None and v.is_floating_point():
                params[k] = v.float()
        self.nodes.append(Node(var.name, op, tuple(i.name for i in inputs), var.cshape, params, attrs or {}))
        return var

    def evaluate(self, node: onnx.NodeProto, values: list) -> list[np.ndarray]:
        """Evaluate one ONNX node on numpy inputs with the ONNX reference implementation."""
        _guard_size(node, values, self.max_params)
        feeds = {n: np.asarray(v) for n, v in zip(node.input, values) if n}
        try:
            outs = ReferenceEvaluator(self._single_node_model(node, feeds)).run(None, feeds)
        except Exception as exc:  # the reference evaluator raises many types
            raise NodeUnsupported(f"cannot evaluate ({type(exc).__name__}: {str(exc)[:80]})") from exc
        return [np.asarray(o) for o in outs]

    def _single_node_model(self, node: onnx.NodeProto, feeds: dict) -> onnx.ModelProto:
        """A one-node model (so the reference evaluator picks the op version of our opset)."""
        h = onnx.helper
        inputs = [h.make_tensor_value_info(k, h.np_dtype_to_tensor_dtype(v.dtype), None) for k, v in feeds.items()]
        outputs = [h.make_value_info(o, onnx.TypeProto()) for o in node.output if o]
        graph = h.make_graph([node], "fold", inputs, outputs)
        return h.make_model(graph, opset_imports=[h.make_opsetid(d, v) for d, v in self.opsets.items()])

    def reindex(self, x: Var, index: np.ndarray, base: str) -> Var:
        """``out.flat[k] = x.flat[index.flat[k]]`` (-1 -> 0) as a reshape or gather node."""
        raw = np.asarray(index)
        index = raw.astype(np.int64)
        if not np.array_equal(index, raw) or (index.size and (index.min() < -1 or index.max() >= x.size)):
            raise NodeUnsupported("re-indexing produced invalid positions")
        shape = tuple(index.shape)
        if index.size == x.size and np.array_equal(index.reshape(-1), np.arange(x.size)):
            if Var("", shape).cshape == x.cshape:
                return Var(x.name, shape)
            return self.emit(base, "reshape", [x], shape)
        out = Var("", shape)
        return self.emit(base, "gather", [x], shape, {"index": index.reshape(out.cshape)})

    def affine(self, x: Var, scale, bias, base: str) -> Var:
        """``x * scale + bias`` with constants broadcast against the full ONNX shape of x."""
        scale = np.ones((), np.float32) if scale is None else np.asarray(scale, np.float32)
        bias = np.zeros((), np.float32) if bias is None else np.asarray(bias, np.float32)
        out_shape = np.broadcast_shapes(x.shape, scale.shape, bias.shape)
        if tuple(out_shape) != x.shape:
            x = self.expand(x, out_shape, base)
        return self.emit(base, "affine", [x], x.shape,
                         {"scale": _compact(scale, x), "bias": _compact(bias, x)})

    def expand(self, x: Var, shape, base: str) -> Var:
        """Broadcast x to the full ONNX ``shape`` (a gather)."""
        return self.reindex(x, np.broadcast_to(flat_index(x), tuple(shape)), base)

    def const_var(self, ref: Var, value: np.ndarray, base: str) -> Var:
        """A constant tensor as a canonical value (zeros gathered from ``ref``, plus a bias)."""
        value = np.asarray(value, np.float32)
        zeros = self.reindex(ref, np.full(value.shape, -1, np.int64), base)
        return self.affine(zeros, None, value, base)


def _compact(c: np.ndarray, x: Var) -> np.ndarray:
    """Broadcast constant ``c`` to x's per-sample shape, keeping size 1 along constant axes."""
    full = np.broadcast_to(c, x.shape)
    if x.batched:
        full = full[0]
    for axis in range(full.ndim):
        first = full.take([0], axis=axis)
        if np.array_equal(full, np.broadcast_to(first, full.shape)):
            full = first
    return np.ascontiguousarray(full, dtype=np.float32)


def _guard_size(node, values, max_params: int) -> None:
    """Refuse to fold ops whose output would exceed ``max_params`` elements."""
    if node.op_type == "ConstantOfShape" and values and values[0] is not None:
        n = int(np.prod(np.asarray(values[0], np.float64)))
    elif node.op_type == "Expand" and len(values) > 1:
        n = int(np.prod(np.broadcast_shapes(np.shape(values[0]), tuple(int(d) for d in values[1])), dtype=np.float64))
    elif node.op_type == "Tile" and len(values) > 1:
        n = int(np.size(values[0]) * np.prod(np.asarray(values[1], np.float64)))
    elif node.op_type == "Range" and len(values) == 3:
        n = int(np.ceil((float(values[1]) - float(values[0])) / float(values[2]) if float(values[2]) else 0))
    else:
        return
    if n > max_params:
        raise ModelLoadError(f"node {node.name or node.op_type} would create {n} elements (> max_params {max_params})")


# ---------------------------------------------------------------------------------------------
# lowering helpers


def variable(x, what: str = "operand") -> Var:
    """``x`` as a Var, or unsupported."""
    if not isinstance(x, Var):
        raise NodeUnsupported(f"{what} must depend on the input")
    return x


def constant(x, what: str = "operand") -> np.ndarray:
    """``x`` as a constant, or unsupported."""
    if isinstance(x, Var):
        raise NodeUnsupported(f"{what} must be constant")
    if x is None:
        raise NodeUnsupported(f"missing {what}")
    return np.asarray(x)


def flat_index(x: Var) -> np.ndarray:
    """Flat positions of x, shaped like x."""
    return np.arange(x.size, dtype=np.int64).reshape(x.shape)


def linear_last(b: Builder, x: Var, weight: np.ndarray, bias, base: str) -> Var:
    """``x @ weight.T + bias`` on the last axis (bias broadcast against the output shape)."""
    if not x.shape:
        raise NodeUnsupported("matrix product of a scalar")
    out_shape = x.shape[:-1] + (weight.shape[0],)
    vec, extra = None, None
    if bias is not None:
        bias = np.asarray(bias, np.float64)
        if tuple(np.broadcast_shapes(out_shape, bias.shape)) != out_shape:
            raise NodeUnsupported("bias broadcasts beyond the product's shape")
        rows = np.broadcast_to(bias, out_shape).reshape(-1, weight.shape[0])
        if (rows == rows[:1]).all():
            vec = rows[0]
        else:
            extra = bias
    y = b.emit(base, "linear", [x], out_shape, {"weight": np.asarray(weight, np.float32), "bias": vec})
    return b.affine(y, None, extra, base) if extra is not None else y



def reduce_axes(x: Var, ins: list, at: dict) -> list[int] | None:
    """Sorted axes of a Reduce* node (attribute before opset 18, input since); None: a no-op."""
    axes = at.get("axes")
    if axes is None and len(ins) > 1 and ins[1] is not None:
        axes = constant(ins[1], "axes").tolist()
    rank = len(x.shape)
    if not axes:
        if at.get("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    return sorted({int(a) % rank for a in axes})


def reduced_last(b: Builder, x: Var, axes: list[int], base: str) -> Var:
    """x re-indexed to [*kept dims, prod(reduced dims)] (the reduced positions along the last axis)."""
    kept = [d for d in range(len(x.shape)) if d not in axes]
    width = int(np.prod([x.shape[a] for a in axes]))
    idx = np.transpose(flat_index(x), kept + axes)
    return b.reindex(x, idx.reshape([x.shape[d] for d in kept] + [width]), base)


def reduced_shape(x: Var, axes: list[int], keepdims) -> list[int]:
    """The output shape of a reduction of x over ``axes``."""
    if keepdims:
        return [1 if d in axes else x.shape[d] for d in range(len(x.shape))]
    return [x.shape[d] for d in range(len(x.shape)) if d not in axes]
