"""The product graph of a query: one input vector, every network side by side, one observed vector.

    z --head(linear: u_i = M_i z + c_i, reshape)--> network i (its nodes, renamed "i/...")
      --> flat outputs and hidden values of every network, passthrough z entries, products
      --> concat = the observed vector the spec's rows read

Every bound method, branch and bound and the checker see an ordinary single-input graph made of
canonical ops; nothing downstream knows there were several networks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from verifier.model.graph import Graph, Node


@dataclass(frozen=True)
class Part:
    """One network copy in the product: its graph and the affine map from z to its flat input."""

    prefix: str
    graph: Graph
    M: np.ndarray        # [n_in, n_z]
    c: np.ndarray        # [n_in]


@dataclass(frozen=True)
class Factor:
    """A scalar the observed vector may hold: a part's input element or observed element, or z."""

    kind: str            # "input" | "output" | "z"
    part: int
    index: int


def product_graph(n_z: int, parts: list[Part], passthrough: list[int], monomials: list[tuple[Factor, ...]]) -> Graph:
    """The product graph; its output is [each part's flat output..., z[passthrough]..., monomials...]."""
    nodes: list[Node] = []
    flat_in, flat_out, pieces = [], [], []
    for k, part in enumerate(parts):
        g = part.graph
        head = f"{part.prefix}/in"
        nodes.append(Node(head, "linear", ("z",), (g.n_inputs,), {"weight": _f32(part.M), "bias": _f32(part.c)}))
        source = head
        if tuple(g.input_shape) != (g.n_inputs,):
            source = f"{part.prefix}/in_shaped"
            nodes.append(Node(source, "reshape", (head,), tuple(g.input_shape)))
        rename = {g.input_name: source}
        for n in g.nodes:
            rename[n.name] = f"{part.prefix}/{n.name}"
            nodes.append(Node(rename[n.name], n.op, tuple(rename[i] for i in n.inputs), n.shape, n.params, n.attrs))
        out = rename[g.output_name]
        if tuple(g.output_shape) != (g.n_outputs,):
            nodes.append(Node(f"{part.prefix}/out_flat", "reshape", (out,), (g.n_outputs,)))
            out = f"{part.prefix}/out_flat"
        flat_in.append(head)
        flat_out.append(out)
        pieces.append(out)
    if passthrough:
        select = np.zeros((len(passthrough), n_z))
        select[np.arange(len(passthrough)), passthrough] = 1.0
        nodes.append(Node("z_rows", "linear", ("z",), (len(passthrough),), {"weight": _f32(select), "bias": None}))
        pieces.append("z_rows")
    for m, mono in enumerate(monomials):
        names = [_factor(nodes, f, flat_in, flat_out, f"mono{m}_{j}") for j, f in enumerate(mono)]
        acc = names[0]
        for j, name in enumerate(names[1:], 1):
            nodes.append(Node(f"mono{m}_prod{j}", "mul", (acc, name), (1,)))
            acc = f"mono{m}_prod{j}"
        pieces.append(acc)
    out = pieces[0]
    if len(pieces) > 1:
        total = sum(_size(nodes, p) for p in pieces)
        nodes.append(Node("observed", "concat", tuple(pieces), (total,), attrs={"axis": 0}))
        out = "observed"
    return Graph("z", (n_z,), tuple(nodes), out)


def _factor(nodes: list[Node], f: Factor, flat_in: list[str], flat_out: list[str], name: str) -> str:
    """A (1,)-shaped node holding one factor's value."""
    source = {"input": lambda: flat_in[f.part], "output": lambda: flat_out[f.part], "z": lambda: "z"}[f.kind]()
    nodes.append(Node(name, "gather", (source,), (1,), {"index": torch.tensor([f.index], dtype=torch.int64)}))
    return name


def _size(nodes: list[Node], name: str) -> int:
    node = next(n for n in nodes if n.name == name)
    return node.size


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32).copy())
