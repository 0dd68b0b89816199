"""ONNX file -> canonical ``Graph``: the driver (constant folding, lowering, graph assembly).

File reading and safety checks live in ``onnx_file``; the per-op lowering functions and the
``ONNX_OPS`` registry in ``onnx_lowering``. Every ONNX op with a variable input is lowered by one
function of that registry; nodes with only constant inputs are folded.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import onnx

from verifier.model.graph import Graph, Node
from verifier.model.onnx_file import ModelLoadError, UnsupportedModelError, read_file, read_model, tensor_array
from verifier.model.onnx_lowering import FLOAT_TYPES, ONNX_OPS, Builder, NodeUnsupported, Var

__all__ = ["ONNX_OPS", "Model", "ModelLoadError", "UnsupportedModelError", "load_onnx", "load_onnx_bytes"]


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded network: the canonical graph plus what identifies the original file."""

    graph: Graph
    path: str
    sha256: str
    input_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    folded: list[str]

    def reference_runner(self):
        """onnxruntime on the original file (the one judge of counterexamples)."""
        from verifier.model.reference import OnnxRunner

        return OnnxRunner(self.path)


def load_onnx(path: str, *, max_params: int = 200_000_000) -> Model:
    """Load an ONNX file and lower it to a canonical ``Model`` (errors list every problem)."""
    path = str(path)
    return _load(read_file(path), path, os.path.dirname(os.path.abspath(path)), max_params)


def load_onnx_bytes(data: bytes, name: str = "<bytes>", *, max_params: int = 200_000_000) -> Model:
    """Load an ONNX model from bytes (external data is refused: there is no folder)."""
    return _load(bytes(data), name, None, max_params)


def _load(data: bytes, path: str, folder: str | None, max_params: int) -> Model:
    """Hash, parse, check, read external data and lower."""
    digest = hashlib.sha256(data).hexdigest()
    graph, input_name, folded = lower_model(read_model(data, folder, max_params), max_params)
    return Model(graph, path, digest, input_name, graph.input_shape, graph.output_shape, folded)


class _Unknown:
    """Marker for a value whose producer could not be lowered."""


_UNKNOWN = _Unknown()


def lower_model(model: onnx.ModelProto, max_params: int) -> tuple[Graph, str, list[str]]:
    """Walk the ONNX graph, fold constants, lower every node; raise listing all problems."""
    g = model.graph
    b, values = _builder(model)
    inp = _single_input(g, values)
    b.names.add(inp.name)
    values[inp.name] = x = Var(inp.name, _input_shape(inp))
    problems = _lower_all(b, g, values)
    out = values.get(g.output[0].name)
    if not problems and not isinstance(out, Var):
        problems.setdefault("(output)", []).append((g.output[0].name, "graph output does not depend on the input"))
    if problems:
        raise UnsupportedModelError(_format_problems(problems))
    nodes = _fuse(_prune(b.nodes, out.name), out.name, b.folded)
    graph = Graph(inp.name, x.cshape, tuple(nodes), out.name)
    return graph, inp.name, b.folded


def _builder(model: onnx.ModelProto, max_params: int = 200_000_000) -> tuple[Builder, dict]:
    """A lowering builder for the model's opsets and the initializer values."""
    opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
    return Builder(opsets, max_params), {t.name: tensor_array(t) for t in model.graph.initializer}


def _lower_all(b: Builder, g, values: dict) -> dict[str, list[tuple[str, str]]]:
    """Lower every node in topological order; the problems found, by op."""
    problems: dict[str, list[tuple[str, str]]] = {}
    for node in _toposort(g):
        _lower_node(b, node, values, problems)
    return problems


def graph_inputs(model: onnx.ModelProto) -> list[tuple[str, tuple[int, ...]]]:
    """The (name, full shape) of every non-initializer graph input, in order."""
    consts = {t.name for t in model.graph.initializer}
    return [(i.name, _input_shape(i)) for i in model.graph.input if i.name not in consts]


def lower_flat(model: onnx.ModelProto, tensors: list[str], max_params: int = 200_000_000) -> tuple[Graph, list[str]]:
    """A graph over every input flattened and concatenated (in graph order) to the flat values of ``tensors``.

    ``tensors`` names ONNX values (graph outputs or hidden tensors); the graph's output is their
    C-order values concatenated. Used for queries over several inputs, outputs or hidden nodes.
    """
    g = model.graph
    b, values = _builder(model, max_params)
    inputs = graph_inputs(model)
    for name, _ in inputs:
        if next(i for i in g.input if i.name == name).type.tensor_type.elem_type not in FLOAT_TYPES:
            raise UnsupportedModelError(f"graph input {name} is not a float tensor")
    total = sum(int(np.prod(shape)) for _, shape in inputs)
    flat = Var(b.fresh("inputs"), (1, total))
    offset = 0
    for name, shape in inputs:
        b.names.add(name)
        size = int(np.prod(shape))
        cshape = Var(name, shape).cshape
        index = (offset + np.arange(size, dtype=np.int64)).reshape(cshape)
        values[name] = b.emit(name, "gather", [flat], shape, {"index": index})
        offset += size
    problems = _lower_all(b, g, values)
    parts = []
    for name in tensors:
        v = values.get(name)
        if name not in values and not problems:
            problems.setdefault("(query)", []).append((name, "no tensor of this name in the ONNX graph"))
        elif not isinstance(v, Var) and not problems:
            problems.setdefault("(query)", []).append((name, "tensor does not depend on the input"))
        elif isinstance(v, Var):
            parts.append(b.emit(f"{name}_flat", "reshape", [v], (1, v.size)))
    if problems:
        raise UnsupportedModelError(_format_problems(problems))
    out = parts[0] if len(parts) == 1 else b.emit("observed", "concat", parts, (1, sum(p.size for p in parts)),
                                                  attrs={"axis": 0})
    nodes = _fuse(_prune(b.nodes, out.name), out.name, b.folded)
    return Graph(flat.name, flat.cshape, tuple(nodes), out.name), b.folded


def _single_input(g, consts) -> onnx.ValueInfoProto:
    """The one non-initializer float input (and check there is exactly one output)."""
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"expected exactly one graph input, found {len(inputs)}: {[i.name for i in inputs]}")
    if len(g.output) != 1:
        raise UnsupportedModelError(f"expected exactly one graph output, found {len(g.output)}")
    if inputs[0].type.tensor_type.elem_type not in FLOAT_TYPES:
        raise UnsupportedModelError(f"graph input {inputs[0].name} is not a float tensor")
    return inputs[0]


def _input_shape(inp: onnx.ValueInfoProto) -> tuple[int, ...]:
    """Full ONNX input shape; a symbolic first dim is the batch dim (taken as 1)."""
    dims = inp.type.tensor_type.shape.dim
    shape = []
    for k, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif k == 0:
            shape.append(1)
        else:
            raise UnsupportedModelError(f"graph input {inp.name} has a symbolic dim at axis {k}")
    if not shape:
        raise UnsupportedModelError(f"graph input {inp.name} has no declared shape")
    return tuple(shape)


def _toposort(g) -> list[onnx.NodeProto]:
    """Nodes in an order where every input is defined first."""
    defined = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, order = list(g.node), []
    while pending:
        ready = [n for n in pending if all(i in defined for i in n.input)]
        if not ready:
            raise ModelLoadError(f"ONNX graph has a cycle or an undefined input near node {pending[0].name}")
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
        for n in ready:
            defined.update(n.output)
        order.extend(ready)
    return order


def _attrs(node: onnx.NodeProto) -> dict:
    """Node attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


# ops that only ever see constants in supported models: not reported again behind a failure
_FOLD_ONLY = frozenset({"Constant", "ConstantOfShape", "Range", "Equal", "Where", "Less", "Greater", "Not",
                        "And", "Or", "NonZero", "Min", "Max", "Floor", "Ceil", "Sqrt"})


def _lower_node(b: Builder, node, values: dict, problems: dict) -> None:
    """Fold, lower, or record why not; set the node's output values."""
    label = node.name or (node.output[0] if node.output else node.op_type)
    ins = [values[n] if n else None for n in node.input]
    outs: list = []
    try:
        if node.domain not in ("", "ai.onnx"):
            raise NodeUnsupported(f"custom domain {node.domain}")
        if any(isinstance(v, _Unknown) for v in ins):
            if node.op_type not in ONNX_OPS and node.op_type not in _FOLD_ONLY:
                raise NodeUnsupported("")
        elif not any(isinstance(v, Var) for v in ins):
            outs = b.evaluate(node, ins)
            b.folded.append(f"folded {node.op_type} {label}")
        else:
            if node.op_type not in ONNX_OPS:
                raise NodeUnsupported("")
            start = len(b.nodes)
            outs = ONNX_OPS[node.op_type](b, node, ins, _attrs(node))
            emitted = ", ".join(n.op for n in b.nodes[start:]) or "constant" * all(
                isinstance(o, np.ndarray) for o in outs) or "alias"
            b.folded.append(f"lowered {node.op_type} {label} -> {emitted}")
    except NodeUnsupported as exc:
        problems.setdefault(node.op_type, []).append((label, exc.args[0] if exc.args else ""))
        outs = []
    except ModelLoadError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as exc:  # malformed shapes / attributes
        problems.setdefault(node.op_type, []).append((label, f"malformed node ({type(exc).__name__}: {str(exc)[:80]})"))
        outs = []
    for k, name in enumerate(node.output):
        values[name] = outs[k] if k < len(outs) and outs[k] is not None else _UNKNOWN


def _format_problems(problems: dict) -> str:
    """``unsupported ONNX ops: Softmax (node a, 2 more), Conv (node c: reason)``."""
    parts = []
    for op, items in problems.items():
        name, reason = items[0]
        text = f"node {name}" + (f": {reason}" if reason else "")
        if len(items) > 1:
            text += f", {len(items) - 1} more"
        parts.append(f"{op} ({text})")
    return "unsupported ONNX ops: " + ", ".join(parts)


def _prune(nodes: list[Node], out: str) -> list[Node]:
    """Drop nodes the output does not depend on."""
    needed, keep = {out}, []
    for n in reversed(nodes):
        if n.name in needed:
            keep.append(n)
            needed.update(n.inputs)
    return keep[::-1]


def _fuse(nodes: list[Node], out: str, folded: list[str]) -> list[Node]:
    """Merge an affine into its producing linear / conv / affine when that has no other reader."""
    readers: dict[str, int] = {}
    for n in nodes:
        for i in n.inputs:
            readers[i] = readers.get(i, 0) + 1
    result: dict[str, Node] = {}
    for n in nodes:
        p = result.get(n.inputs[0]) if n.op == "affine" else None
        merged = _merge_affine(p, n) if p is not None and readers.get(p.name) == 1 and p.name != out else None
        if merged is not None:
            del result[p.name]
            folded.append(f"fused affine {n.name} into {p.op} {p.name}")
            n = merged
        result[n.name] = n
    return list(result.values())


def _merge_affine(p: Node, n: Node) -> Node | None:
    """One node computing ``affine(p(x))``, or None when the scale/bias vary the wrong way."""
    if not n.shape:
        return None
    s = n.params["scale"].expand(n.shape)
    c = n.params["bias"].expand(n.shape)
    if p.op == "affine":
        params = {"scale": p.params["scale"] * n.params["scale"], "bias": p.params["bias"] * n.params["scale"] + n.params["bias"]}
        return Node(n.name, "affine", p.inputs, n.shape, params, p.attrs)
    if p.op == "linear":
        rows_s, rows_c = s.reshape(-1, s.shape[-1]), c.reshape(-1, c.shape[-1])
    elif p.op == "conv":
        rows_s, rows_c = s.reshape(s.shape[0], -1).T, c.reshape(c.shape[0], -1).T
    else:
        return None
    if not (bool((rows_s == rows_s[:1]).all()) and bool((rows_c == rows_c[:1]).all())):
        return None
    sv, cv = rows_s[0], rows_c[0]
    w = p.params["weight"]
    weight = w * sv.reshape((-1,) + (1,) * (w.dim() - 1))
    bias = p.params.get("bias")
    bias = cv.clone() if bias is None else bias * sv + cv
    return Node(n.name, p.op, p.inputs, n.shape, {"weight": weight, "bias": bias}, p.attrs)
