"""ONNX file reading and safety checks: parse errors, declared sizes, external data."""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import numpy_helper


class ModelLoadError(ValueError):
    """The file is not a readable, safe ONNX model."""


class UnsupportedModelError(ValueError):
    """The model uses ops or attributes nnverify cannot lower exactly."""


def read_file(path: str) -> bytes:
    """The raw bytes of the file at ``path``."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_model(data: bytes, folder: str | None, max_params: int) -> onnx.ModelProto:
    """Parse and check ``data``; read external data from ``folder`` (None: refuse it)."""
    model = _parse(data)
    _check_tensors(model, folder, max_params)
    if folder is not None and _has_external(model):
        try:
            onnx.external_data_helper.load_external_data_for_model(model, folder)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read external data: {exc}") from exc
    return model


def _parse(data: bytes) -> onnx.ModelProto:
    """Decode the protobuf and check it looks like a complete ONNX model."""
    if not data:
        raise ModelLoadError("empty file")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError / RuntimeWarning subclasses
        raise ModelLoadError(f"not an ONNX model (protobuf decode failed: {str(exc)[:80]})") from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelLoadError("not an ONNX model (no ir_version or graph)")
    g = model.graph
    if not g.node or not g.output:
        raise ModelLoadError("ONNX graph has no nodes or no outputs (truncated file?)")
    defined = {i.name for i in g.input} | {i.name for i in g.initializer}
    for node in g.node:
        defined.update(node.output)
    for node in g.node:
        missing = [i for i in node.input if i and i not in defined]
        if missing:
            raise ModelLoadError(f"node {node.name or node.op_type} reads undefined tensor {missing[0]!r} (truncated file?)")
    undefined = [o.name for o in g.output if o.name not in defined]
    if undefined:
        raise ModelLoadError(f"graph output {undefined[0]!r} is never produced (truncated file?)")
    return model


def _all_tensors(model: onnx.ModelProto):
    """Initializers and Constant-node tensors (including nested subgraphs)."""
    def walk(graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from walk(attr.g)
                for sub in attr.graphs:
                    yield from walk(sub)
    yield from walk(model.graph)


def _has_external(model) -> bool:
    """Whether any tensor stores its data in an external file."""
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(model))


def _check_tensors(model, folder: str | None, max_params: int) -> None:
    """Reject absurd declared sizes and external data outside the model's folder."""
    total = 0
    for t in _all_tensors(model):
        n = 1
        for d in t.dims:
            n *= max(int(d), 0)
        if n > max_params:
            raise ModelLoadError(f"tensor {t.name!r} declares {n} elements (> max_params {max_params})")
        total += n
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(t, folder)
    if total > max_params:
        raise ModelLoadError(f"tensors declare {total} elements in all (> max_params {max_params})")


def _check_external(t: onnx.TensorProto, folder: str | None) -> None:
    """External data must be a relative path that stays inside ``folder``."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    if folder is None:
        raise ModelLoadError(f"tensor {t.name!r} uses external data, which needs a model file path")
    if not loc or os.path.isabs(loc) or ".." in loc.replace("\\", "/").split("/"):
        raise ModelLoadError(f"tensor {t.name!r}: external data path {loc!r} leaves the model folder")
    base = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(base, loc))
    if os.path.commonpath([base, target]) != base:
        raise ModelLoadError(f"tensor {t.name!r}: external data path {loc!r} leaves the model folder")


def tensor_array(t: onnx.TensorProto) -> np.ndarray:
    """A numpy copy of an ONNX tensor."""
    return np.array(numpy_helper.to_array(t))
