"""Upload checks the API runs before anything is stored (ONNX and VNN-LIB; no torch here)."""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from verifier.model.onnx_file import ModelLoadError, read_model
from verifier.spec.vnnlib import VnnlibError, parse_vnnlib
from verifier.spec.vnnlib2 import QueryError, parse_query, version_of
from workers.settings import Settings

MILP_MAX_RELUS = 64   # a network with at most this many ReLU neurons goes to the cpu queue (MILP-sized)


class UploadError(ValueError):
    """An upload the service refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelInfo:
    """What routing needs to know about an accepted model."""

    n_inputs: int
    n_outputs: int
    ops: frozenset[str]
    relus: int | None   # ReLU output elements, when shapes are known


def check_model(data: bytes, settings: Settings) -> ModelInfo:
    """Parse and bound an uploaded ONNX file; raise ``UploadError`` naming the problem."""
    if len(data) > settings.max_model_bytes:
        raise UploadError(413, f"model is {len(data)} bytes (limit {settings.max_model_bytes})")
    try:
        model = read_model(data, None, settings.max_tensor_elements)   # no folder: external data refused
    except ModelLoadError as exc:
        raise UploadError(422, f"model: {_upload_wording(str(exc))}") from exc
    except RecursionError as exc:
        raise UploadError(422, "model: protobuf nested too deeply") from exc
    nodes = _count_nodes(model.graph)
    if nodes > settings.max_nodes:
        raise UploadError(413, f"model has {nodes} nodes (limit {settings.max_nodes})")
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1 or len(model.graph.output) < 1:
        raise UploadError(422, f"model: expected one input tensor, found {len(inputs)}")
    n_in = _elements(inputs[0], settings, "input")
    n_out = _elements(model.graph.output[0], settings, "output")
    return ModelInfo(n_in, n_out, frozenset(n.op_type for n in model.graph.node), _relu_elements(model, settings))


def check_spec(data: bytes, info: ModelInfo, settings: Settings):
    """Parse an uploaded VNN-LIB property and match it to the model; the ``Spec`` (a 2.0 query: the ``Query``)."""
    if len(data) > settings.max_spec_bytes:
        raise UploadError(413, f"spec is {len(data)} bytes (limit {settings.max_spec_bytes})")
    if version_of(data) is not None:
        return _check_query(data, info)
    try:
        spec = parse_vnnlib(data.decode("utf-8"), "spec")
    except UnicodeDecodeError as exc:
        raise UploadError(422, "spec: not UTF-8 text") from exc
    except (VnnlibError, RecursionError) as exc:
        raise UploadError(422, f"spec: {str(exc).splitlines()[0] if str(exc) else 'malformed'}") from exc
    if spec.n_inputs != info.n_inputs:
        raise UploadError(422, f"spec declares {spec.n_inputs} inputs X_i but the model has {info.n_inputs}")
    if spec.n_outputs != info.n_outputs:
        raise UploadError(422, f"spec declares {spec.n_outputs} outputs Y_j but the model has {info.n_outputs}")
    return spec


def _check_query(data: bytes, info: ModelInfo):
    """A VNN-LIB 2.0 query of one network whose declared input/output sizes match the model."""
    try:
        query = parse_query(data.decode("utf-8-sig"), "spec")
        name = query.only_network()
    except UnicodeDecodeError as exc:
        raise UploadError(422, "spec: not UTF-8 text") from exc
    except (QueryError, RecursionError) as exc:
        raise UploadError(422, f"spec: {str(exc).splitlines()[0] if str(exc) else 'malformed'}") from exc
    for kind, have in (("input", info.n_inputs), ("output", info.n_outputs)):
        declared = query.of(name, kind)
        if len(declared) == 1 and declared[0].size != have:
            raise UploadError(422, f"spec: {kind} {declared[0].name} has {declared[0].size} values but the model's "
                                   f"{kind} has {have}")
    return query


def route(info: ModelInfo, gpu_workers: int) -> tuple[str, str]:
    """(queue, reason): SAT- and MILP-sized jobs on cpu; bound propagation on gpu when a GPU worker is up."""
    if "Sign" in info.ops:
        return "cpu", "sign activations: exact SAT encoding runs on the CPU"
    if info.relus is not None and info.relus <= MILP_MAX_RELUS:
        return "cpu", f"{info.relus} ReLU neurons: MILP-sized"
    if gpu_workers:
        return "gpu", f"bound propagation; {gpu_workers} GPU worker(s) registered"
    return "cpu", "bound propagation; no GPU worker registered"


def _upload_wording(message: str) -> str:
    """The loader's message, said the way an upload needs it."""
    if "uses external data" in message:
        return message.split(" uses ")[0] + " uses external data; an upload must embed every tensor"
    if "upb_DecodeOptions_MaxDepth" in message or "Exceeded upb_DecodeOptions" in message:
        return "not an ONNX model (protobuf nested too deeply)"
    return message


def _count_nodes(graph) -> int:
    total = 0
    for node in graph.node:
        total += 1
        for attr in node.attribute:
            if attr.HasField("g"):
                total += _count_nodes(attr.g)
            total += sum(_count_nodes(g) for g in attr.graphs)
    return total


def _elements(value: onnx.ValueInfoProto, settings: Settings, what: str) -> int:
    """The element count of a graph input/output with a static shape (a symbolic batch dim counts 1)."""
    dims = value.type.tensor_type.shape.dim
    n = 1
    for k, d in enumerate(dims):
        if d.HasField("dim_value"):
            n *= max(int(d.dim_value), 0)
        elif k != 0:
            raise UploadError(422, f"model: {what} {value.name!r} has a symbolic dimension {k}")
        if n > settings.max_tensor_elements:
            raise UploadError(413, f"model: {what} {value.name!r} declares more than {settings.max_tensor_elements} elements")
    return n


def _relu_elements(model: onnx.ModelProto, settings: Settings) -> int | None:
    """ReLU output elements by ONNX shape inference (None when a shape stays unknown)."""
    relus = [n.output[0] for n in model.graph.node if n.op_type == "Relu"]
    if not relus:
        return 0
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:   # shape inference is advisory here: routing falls back to bound propagation
        return None
    shapes = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    total = 0
    for name in relus:
        if name not in shapes:
            return None
        try:
            total += _elements(shapes[name], settings, "value")
        except UploadError:
            return None
    return total
