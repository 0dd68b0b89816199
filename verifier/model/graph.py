"""The canonical network graph: an immutable DAG over a small op set.

The ONNX loader lowers every supported ONNX op to the canonical ops below, so each abstract
domain (forward value, IBP, CROWN) handles only these. Tensors are per sample: a node's
``shape`` excludes the batch dimension; every value at run time carries a leading batch dim.

Canonical ops (``Node.op``), with their inputs, params (constant tensors) and attrs:

==================  ==========  ======================================  ==============================
op                  inputs      params / attrs                          value
==================  ==========  ======================================  ==============================
linear              x           weight [out, in], bias [out] | None     x @ weight.T + bias (last axis)
conv                x           weight, bias | None; stride, padding,   torch conv{1,2}d, symmetric
                                dilation, groups                        zero padding
affine              x           scale, bias (broadcastable to shape)    x * scale + bias
add                 x1, x2      -                                       x1 + x2 (same shape)
relu                x           -                                       max(x, 0)
leaky_relu          x           attrs: alpha                            x if x >= 0 else alpha * x
sigmoid, tanh       x           -                                       elementwise
sign                x           -                                       ONNX Sign: +1, 0 or -1 (0 at 0)
maxpool             x           attrs: kernel, stride, padding,         torch max_pool{1,2}d
                                dilation, ceil_mode
reshape             x           -                                       same C-order values, new shape
gather              x           index (int64, output-shaped; values     out.flat[k] = x.flat[index[k]],
                                index x flattened; -1 means 0)          0 where index[k] == -1
concat              x1..xn      attrs: axis (per-sample axis, >= 0)     torch.cat along axis
mul                 x1, x2      -                                       x1 * x2 (same shape, bilinear)
matmul              x1, x2      - (x1 [*b, M, K], x2 [*b, K, N])        x1 @ x2 (bilinear, equal *b)
pow                 x           attrs: exponent (int >= 2)              x ** exponent
sin, cos, exp       x           -                                       elementwise
reciprocal          x           -                                       1 / x (bounds refuse 0 in range)
sqrt                x           -                                       sqrt(x) (bounds refuse x < 0)
erf                 x           -                                       elementwise (Gelu's erf)
floor, ceil         x           -                                       elementwise steps
round               x           -                                       nearest integer, half to even
==================  ==========  ======================================  ==============================

``gather`` carries every pure re-indexing op (Transpose, Slice, Pad, Squeeze, Unsqueeze, Gather
with constant indices, Split, Expand, Flatten-with-reorder); Sub, Neg, Div/Mul by constants,
BatchNormalization and constant Add lower to ``affine``; Clip lowers to relus; AveragePool to a
grouped ``conv``; MatMul of two variables to ``matmul`` (rank >= 3 with batch 1)
or gathers + ``mul`` + a summing ``linear``; Div by a
variable to ``reciprocal`` + ``mul``; Softmax to pairwise differences (``linear``), ``exp``, a
summing ``linear`` and ``reciprocal`` (softmax_i = 1 / sum_j exp(x_j - x_i)); Abs, Max and Min
(variadic, of variables and constants) and ReduceMax (a pairwise tournament) to relus
(max(a, b) = a + relu(b - a)); LayerNormalization to a centring ``linear``, ``pow`` 2, a mean
``linear`` + epsilon, ``sqrt``, ``reciprocal``, ``mul`` and ``affine``; ReduceL2 to ``pow`` 2, a
summing ``linear`` and ``sqrt``; Gelu to ``erf`` (or ``tanh``) and ``mul``.
The graph is never mutated after loading: bound propagation returns values.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from verifier.model.node import Node
from verifier.model.ops import evaluate


@dataclass(frozen=True, eq=False)
class Graph:
    """A single-input, single-output DAG of canonical nodes in topological order."""

    input_name: str
    input_shape: tuple[int, ...]
    nodes: tuple[Node, ...]
    output_name: str

    def __post_init__(self):
        seen = {self.input_name}
        for node in self.nodes:
            missing = [i for i in node.inputs if i not in seen]
            if missing:
                raise ValueError(f"node {node.name} ({node.op}) uses {missing} before definition")
            if node.name in seen:
                raise ValueError(f"duplicate node name {node.name}")
            seen.add(node.name)
        if self.output_name not in seen:
            raise ValueError(f"graph output {self.output_name} is not defined")

    @property
    def node_map(self) -> dict[str, Node]:
        """Nodes by name."""
        return {n.name: n for n in self.nodes}

    def shape_of(self, name: str) -> tuple[int, ...]:
        """Per-sample shape of a value (the input or a node output)."""
        if name == self.input_name:
            return self.input_shape
        return self.node_map[name].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shape_of(self.output_name)

    @property
    def n_inputs(self) -> int:
        n = 1
        for d in self.input_shape:
            n *= d
        return n

    @property
    def n_outputs(self) -> int:
        n = 1
        for d in self.output_shape:
            n *= d
        return n

    def consumers(self) -> dict[str, list[str]]:
        """For every value, the names of the nodes that read it."""
        out: dict[str, list[str]] = {self.input_name: []}
        for node in self.nodes:
            out.setdefault(node.name, [])
            for i in node.inputs:
                out[i].append(node.name)
        return out

    def to(self, device=None, dtype=None) -> "Graph":
        """A copy with every floating-point param moved to ``device`` / cast to ``dtype``."""

        def move(t):
            if t is None:
                return None
            if t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        nodes = tuple(Node(n.name, n.op, n.inputs, n.shape, {k: move(v) for k, v in n.params.items()}, n.attrs)
                      for n in self.nodes)
        return Graph(self.input_name, self.input_shape, nodes, self.output_name)

    def forward(self, x: torch.Tensor, keep: bool = False):
        """Evaluate the graph on a batch ``x`` of shape [B, *input_shape].

        Returns the output [B, *output_shape], or with ``keep`` the dict of every value.
        """
        values = {self.input_name: x}
        for node in self.nodes:
            values[node.name] = evaluate(node, [values[i] for i in node.inputs])
        return values if keep else values[self.output_name]
