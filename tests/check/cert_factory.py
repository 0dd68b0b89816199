"""Small graphs, specs and a tiny proof generator for the checker tests (fixed seeds)."""
from __future__ import annotations

import numpy as np
import torch

from verifier.certificate import CertificateBuilder, input_split_tree, leaf
from verifier.check import leaf_bounds
from verifier.check.crown import Domains, Pass, intermediate_bounds, objective_lower
from verifier.check.tree import Leaf, Split
from verifier.model.graph import Graph, Node
from verifier.spec.spec import Polytope, Region, Spec


def _lin(name, src, n_out, n_in, g, scale=1.0):
    w = torch.randn(n_out, n_in, generator=g) * scale / n_in ** 0.5
    return Node(name, "linear", (src,), (n_out,), {"weight": w, "bias": torch.randn(n_out, generator=g) * 0.2})


def mlp(seed: int, n_in: int, hidden: tuple[int, ...], n_out: int, act: str = "relu") -> Graph:
    """linear -> act for every hidden width, then a linear output."""
    g = torch.Generator().manual_seed(seed)
    nodes, prev, width = [], "x", n_in
    for i, h in enumerate(hidden):
        nodes.append(_lin(f"fc{i}", prev, h, width, g, 1.5))
        nodes.append(Node(f"act{i}", act, (f"fc{i}",), (h,), attrs={"alpha": 0.1} if act == "leaky_relu" else {}))
        prev, width = f"act{i}", h
    nodes.append(_lin("out", prev, n_out, width, g))
    return Graph("x", (n_in,), tuple(nodes), "out")


def cnn(seed: int) -> Graph:
    """conv -> relu -> maxpool -> conv1d-free flatten -> linear -> relu -> linear on a 1x6x6 input."""
    g = torch.Generator().manual_seed(seed)
    conv = Node("conv", "conv", ("x",), (3, 6, 6), {"weight": torch.randn(3, 1, 3, 3, generator=g) / 3,
                                                    "bias": torch.randn(3, generator=g) * 0.1},
                {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1})
    pool = Node("pool", "maxpool", ("r0",), (3, 3, 3), attrs={"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0),
                                                             "dilation": (1, 1), "ceil_mode": False})
    conv2 = Node("conv2", "conv", ("pool",), (2, 2, 2), {"weight": torch.randn(2, 3, 2, 2, generator=g) / 3,
                                                        "bias": None},
                 {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1})
    nodes = (conv, Node("r0", "relu", ("conv",), (3, 6, 6)), pool, conv2,
             Node("flat", "reshape", ("conv2",), (8,)), _lin("fc", "flat", 6, 8, g, 1.5),
             Node("r1", "relu", ("fc",), (6,)), _lin("out", "r1", 3, 6, g))
    return Graph("x", (1, 6, 6), nodes, "out")


def _pool(name, src, shape, kernel, stride, padding, ceil_mode):
    attrs = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": (1,) * len(kernel),
             "ceil_mode": ceil_mode}
    return Node(name, "maxpool", (src,), shape, attrs=attrs)


def pools(seed: int) -> Graph:
    """A ceil-mode 2-D maxpool, then an overlapping padded 1-D maxpool, on a 2x5x5 input."""
    g = torch.Generator().manual_seed(seed)
    nodes = (_pool("p1", "x", (2, 3, 3), (2, 2), (2, 2), (0, 0), True),
             Node("flat", "reshape", ("p1",), (2, 9)),
             _pool("p2", "flat", (2, 5), (3,), (2,), (1,), False),
             Node("f2", "reshape", ("p2",), (10,)), _lin("out", "f2", 3, 10, g))
    return Graph("x", (2, 5, 5), nodes, "out")


def residual(seed: int) -> Graph:
    """fc -> relu -> fc, plus a skip (add), then relu, affine, and a linear head."""
    g = torch.Generator().manual_seed(seed)
    nodes = (_lin("fc0", "x", 6, 4, g, 1.5), Node("r0", "relu", ("fc0",), (6,)), _lin("fc1", "r0", 6, 6, g, 1.5),
             Node("sum", "add", ("fc1", "fc0"), (6,)), Node("r1", "relu", ("sum",), (6,)),
             Node("aff", "affine", ("r1",), (6,), {"scale": torch.linspace(-1, 1, 6), "bias": torch.full((6,), 0.1)}),
             _lin("out", "aff", 2, 6, g))
    return Graph("x", (4,), nodes, "out")


def mixed(seed: int) -> Graph:
    """Every other op: gather (reorder), concat, sigmoid, tanh, leaky_relu, conv1d, reshape."""
    g = torch.Generator().manual_seed(seed)
    conv = Node("c1", "conv", ("x",), (2, 5), {"weight": torch.randn(2, 1, 2, generator=g), "bias": torch.zeros(2)},
                {"stride": (1,), "padding": (0,), "dilation": (1,), "groups": 1})
    index = torch.tensor([[4, 3, 2, 1, 0], [0, -1, 2, -1, 4]])
    nodes = (conv, Node("flat", "reshape", ("c1",), (10,)), _lin("fc", "flat", 6, 10, g, 1.5),
             Node("sg", "sigmoid", ("fc",), (6,)), Node("th", "tanh", ("fc",), (6,)),
             Node("lk", "leaky_relu", ("fc",), (6,), attrs={"alpha": 0.2}),
             Node("cat", "concat", ("sg", "th", "lk"), (18,), attrs={"axis": 0}),
             Node("perm", "gather", ("c1",), (2, 5), {"index": index}),
             Node("pf", "reshape", ("perm",), (10,)), _lin("h", "cat", 4, 18, g), _lin("h2", "pf", 4, 10, g),
             Node("s", "add", ("h", "h2"), (4,)), Node("r", "relu", ("s",), (4,)), _lin("out", "r", 2, 4, g))
    return Graph("x", (1, 6), nodes, "out")


def sample_outputs(graph: Graph, lower: np.ndarray, upper: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, dict]:
    """Outputs (float64) and every value of the graph at ``n`` uniform samples of the box (corners included)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(lower, upper, size=(n, lower.size))
    x[: n // 10] = np.where(rng.random((n // 10, lower.size)) < 0.5, lower, upper)
    g64 = graph.to(dtype=torch.float64)
    values = g64.forward(torch.as_tensor(x).reshape((n,) + graph.input_shape), keep=True)
    return values[graph.output_name].reshape(n, -1).numpy(), values


def tight_spec(graph: Graph, lower: np.ndarray, upper: np.ndarray, margin: float, rows=(0,), seed: int = 0) -> Spec:
    """Unsafe set ``y_r <= min_sampled(y_r) - margin`` for each r in ``rows`` (one polytope, holds if sound)."""
    y, _ = sample_outputs(graph, lower, upper, 4000, seed)
    A = np.zeros((len(rows), graph.n_outputs))
    A[np.arange(len(rows)), list(rows)] = 1.0
    b = np.array([y[:, r].min() - margin for r in rows])
    return Spec(graph.n_inputs, graph.n_outputs, (Region(lower, upper, (Polytope(A, b),)),))


def _best(graph, poly, lo, hi, splits=(), betas=None, alphas=None):
    """(row, derived bound) of the best row of ``poly`` on one domain."""
    leaves = [Leaf("gen", lo, hi, tuple(splits), r, 1.0, alphas or {}, betas) for r in range(len(poly.b))]
    values = leaf_bounds(graph.to(dtype=torch.float64), poly.A, poly.b, leaves).numpy()
    return int(values.argmax()), float(values.max())


def prove_input_split(graph: Graph, spec: Spec, depth: int, builder: CertificateBuilder) -> bool:
    """Bisect each region's widest dim until CROWN proves a row; add the proofs; False if depth runs out."""
    for ri, region in enumerate(spec.regions):
        for pi, poly in enumerate(region.unsafe):
            leaves, todo = [], [([], region.lower.copy(), region.upper.copy())]
            while todo:
                path, lo, hi = todo.pop()
                row, value = _best(graph, poly, lo, hi)
                if value > 0:
                    leaves.append((path, leaf(row, value)))
                    continue
                if len(path) >= depth:
                    return False
                d = int(np.argmax(hi - lo))
                at = float((lo[d] + hi[d]) / 2)
                todo.append((path + [(d, at, 0)], lo, np.where(np.arange(lo.size) == d, at, hi)))
                todo.append((path + [(d, at, 1)], np.where(np.arange(lo.size) == d, at, lo), hi))
            builder.add_proof(ri, pi, input_split_tree(leaves, (region.lower, region.upper), builder))
    return True


def _unstable_neuron(graph: Graph, lo, hi, splits) -> tuple[str, int] | None:
    """The unstable relu neuron with the widest min(-l, u) on a domain, or None."""
    dom = _domains(graph, lo, hi, splits)
    bounds, _ = intermediate_bounds(graph.to(dtype=torch.float64), dom)
    best, score = None, 0.0
    for n in graph.nodes:
        if n.op == "relu":
            l, u = (t.reshape(-1) for t in bounds[n.inputs[0]])
            s = torch.minimum(-l, u)
            if s.max() > score:
                best, score = (n.name, int(s.argmax())), float(s.max())
    return best


def _domains(graph, lo, hi, splits) -> Domains:
    """A one-leaf Domains with the split masks."""
    shape = (1,) + graph.input_shape
    ina, act = {}, {}
    for s in splits:
        v = graph.node_map[s.node].inputs[0]
        table = ina if s.sign < 0 else act
        table.setdefault(v, torch.zeros((1,) + graph.shape_of(v), dtype=torch.bool)).reshape(-1)[s.index] = True
    return Domains(torch.tensor(lo).reshape(shape), torch.tensor(hi).reshape(shape), ina, act)


def _beta_terms(graph: Graph, splits, beta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Differentiable -beta*s coefficient tensors per relu node for one leaf."""
    out = {}
    for j, s in enumerate(splits):
        node = graph.node_map[s.node]
        onehot = torch.zeros(node.size, dtype=torch.float64)
        onehot[s.index] = 1.0
        term = (-s.sign * beta[j] * onehot).reshape((1,) + node.shape)
        out[s.node] = out[s.node] + term if s.node in out else term
    return out


def optimise_betas(graph: Graph, poly: Polytope, lo, hi, splits, steps: int = 30) -> np.ndarray:
    """Betas (float32-representable, >= 0) that maximise the best row's bound, by projected Adam."""
    g64 = graph.to(dtype=torch.float64)
    bounds, _ = intermediate_bounds(g64, _domains(graph, lo, hi, splits))
    rows = torch.tensor(np.array(poly.A), dtype=torch.float64)
    rhs = torch.tensor(np.array(poly.b), dtype=torch.float64)
    m = rows.shape[0]
    bounds = {k: (l.expand((m,) + l.shape[1:]), u.expand((m,) + u.shape[1:])) for k, (l, u) in bounds.items()}
    beta = torch.zeros(len(splits), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([beta], lr=0.1)
    best, best_beta = -np.inf, beta.detach().clone()
    for _ in range(steps):
        terms = {k: v.expand((m,) + v.shape[1:]) for k, v in _beta_terms(graph, splits, beta).items()}
        value = objective_lower(g64, Pass(bounds, {}, terms), rows, rhs).max()
        if value.item() > best:
            best, best_beta = value.item(), beta.detach().clone()
        opt.zero_grad()
        (-value).backward()
        opt.step()
        with torch.no_grad():
            beta.clamp_(min=0)
    return best_beta.numpy().astype(np.float32).astype(np.float64)


def prove_relu_split(graph: Graph, spec: Spec, depth: int, builder: CertificateBuilder, alphas: bool = True) -> bool:
    """ReLU-split BaB with optimised betas; leaves store float16 alphas 0.5 when those prove better."""
    region, poly = spec.regions[0], spec.regions[0].unsafe[0]
    half = {n.name: np.full(n.shape, 0.5) for n in graph.nodes if n.op == "relu"}
    leaves, todo = [], [[]]
    while todo:
        splits = todo.pop()
        betas = np.zeros(len(splits)) if splits else None
        if splits and _best(graph, poly, region.lower, region.upper, splits, betas)[1] <= 0:
            betas = optimise_betas(graph, poly, region.lower, region.upper, splits)
        tries = [({}, _best(graph, poly, region.lower, region.upper, splits, betas))]
        if alphas:
            tries.append((half, _best(graph, poly, region.lower, region.upper, splits, betas, half)))
        al, (row, value) = max(tries, key=lambda t: t[1][1])
        if value > 0:
            keys = {k: builder.add_array(v, "float16") for k, v in al.items()}
            bkey = builder.add_array(betas, "float32") if splits else None
            path = [("relu", s.node, s.index, 0 if s.sign < 0 else 1) for s in splits]
            leaves.append((path, leaf(row, value, alphas=keys, betas=bkey)))
            continue
        neuron = _unstable_neuron(graph, region.lower, region.upper, splits)
        if neuron is None or len(splits) >= depth:
            return False
        todo += [splits + [Split(neuron[0], neuron[1], -1)], splits + [Split(neuron[0], neuron[1], +1)]]
    builder.add_proof(0, 0, input_split_tree(leaves, (region.lower, region.upper), builder))
    return True


def write_chain_onnx(graph: Graph, path) -> str:
    """A chain of linear and elementwise activation nodes (``cf.mlp``-style) as an ONNX file of Gemm
    and activation nodes (Relu, Sigmoid, Tanh, ...); returns the path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "x"
    for n in graph.nodes:
        if n.op == "linear":
            inits += [numpy_helper.from_array(n.params["weight"].numpy(), f"{n.name}_W"),
                      numpy_helper.from_array(n.params["bias"].numpy(), f"{n.name}_b")]
            nodes.append(helper.make_node("Gemm", [prev, f"{n.name}_W", f"{n.name}_b"], [n.name], transB=1))
        else:
            nodes.append(helper.make_node(n.op.capitalize(), [prev], [n.name]))
        prev = n.name
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, graph.n_inputs])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, graph.n_outputs])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)
