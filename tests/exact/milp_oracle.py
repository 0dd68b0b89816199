"""Independent exact oracle for tiny nets: enumerate activation patterns, one LP each (scipy).

Every value is carried as an affine map of the input, ``v = x @ W + c`` (W: [n_in, size]),
computed with the reference forward semantics (``ops.evaluate``) rather than with the MILP
encoder. A ReLU node branches over every on/off pattern, a maxpool node over every choice of
maximal element per window; infeasible partial patterns are pruned by an LP feasibility check.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.optimize import linprog

from verifier.model.graph import Graph, Node
from verifier.model.ops import evaluate


def _apply_linear(node: Node, args: list[tuple[np.ndarray, np.ndarray]], in_shapes: list[tuple[int, ...]]):
    """Push affine maps through a linear-type op: f(c) and f(W_i + c) - f(c) per input direction."""
    shapes = [(1,) + tuple(s) for s in in_shapes]
    consts = [torch.as_tensor(c).reshape(s) for (_, c), s in zip(args, shapes)]
    out_c = evaluate(node, consts).reshape(-1)
    dirs = [torch.as_tensor(W).reshape((W.shape[0],) + s[1:]) + ct for (W, _), s, ct in zip(args, shapes, consts)]
    out_w = evaluate(node, dirs).reshape(dirs[0].shape[0], -1) - out_c
    return out_w.numpy(), out_c.numpy()


def _feasible(A_ub: list, b_ub: list, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether the input constraints collected so far admit a point in the box."""
    if not A_ub:
        return True
    res = linprog(np.zeros(lo.size), A_ub=np.vstack(A_ub), b_ub=np.array(b_ub), bounds=list(zip(lo, hi)),
                  method="highs")
    return res.status == 0


def _pool_windows(shape: tuple[int, ...], kernel: int) -> list[np.ndarray]:
    """Flat indices of each non-overlapping kernel x kernel window of a [C, H, W] value."""
    C, H, W = shape
    ids = np.arange(C * H * W).reshape(C, H, W)
    return [ids[ch, i:i + kernel, j:j + kernel].reshape(-1)
            for ch in range(C) for i in range(0, H - kernel + 1, kernel) for j in range(0, W - kernel + 1, kernel)]


def _feasible_patterns(W, c, A_ub, b_ub, lo, hi, prefix=()):
    """On/off patterns of the pre-activations x @ W + c, grown neuron by neuron, pruned by LP."""
    k = len(prefix)
    if k == c.size:
        yield prefix
        return
    for on in (0, 1):
        row, rhs = (-W[:, k], c[k]) if on else (W[:, k], -c[k])
        if _feasible(A_ub + [row], b_ub + [rhs], lo, hi):
            yield from _feasible_patterns(W, c, A_ub + [row], b_ub + [rhs], lo, hi, prefix + (on,))


def _branches(node: Node, W: np.ndarray, c: np.ndarray, shape, A_ub, b_ub, lo, hi):
    """Yield (constraint rows, rhs, output W, output c) for every case of a piecewise op."""
    if node.op in ("relu", "leaky_relu"):
        alpha = float(node.attrs.get("alpha", 0.0))
        for bits in _feasible_patterns(W, c, A_ub, b_ub, lo, hi):
            on = np.array(bits, dtype=bool)
            sign = np.where(on, -1.0, 1.0)  # on: -a <= 0, off: a <= 0
            scale = np.where(on, 1.0, alpha)
            yield list((W * sign).T), list(c * -sign), W * scale, c * scale
    elif node.op == "maxpool":
        windows = _pool_windows(shape, int(node.attrs["kernel"][0]))
        for choice in itertools.product(*[range(len(w)) for w in windows]):
            rows, rhs = [], []
            pick = np.array([w[k] for w, k in zip(windows, choice)])
            for w, j in zip(windows, pick):
                for i in w:
                    if i != j:  # x_i - x_j <= 0
                        rows.append(W[:, i] - W[:, j])
                        rhs.append(c[j] - c[i])
            yield rows, rhs, W[:, pick], c[pick]
    else:
        raise ValueError(f"oracle has no rule for {node.op}")


def brute_force_min(graph: Graph, lo: np.ndarray, hi: np.ndarray, A: np.ndarray, b: np.ndarray) -> float:
    """Exact min over the box of max_i (A_i f(x) - b_i), by pattern enumeration."""
    graph = graph.to(dtype=torch.float64)
    n = lo.size
    start = {graph.input_name: (np.eye(n), np.zeros(n))}
    best = [np.inf]

    def walk(k: int, values: dict, A_ub: list, b_ub: list):
        """Process node k onward under the constraints collected so far."""
        if k == len(graph.nodes):
            W, c = values[graph.output_name]
            rows = np.hstack([(W @ A.T).T, -np.ones((A.shape[0], 1))])
            A_all = np.vstack([np.hstack([np.vstack(A_ub), np.zeros((len(A_ub), 1))]), rows]) if A_ub else rows
            b_all = np.concatenate([np.array(b_ub), b - A @ c]) if A_ub else b - A @ c
            cost = np.zeros(n + 1)
            cost[-1] = 1.0
            res = linprog(cost, A_ub=A_all, b_ub=b_all, bounds=list(zip(lo, hi)) + [(None, None)], method="highs")
            if res.status == 0:
                best[0] = min(best[0], res.fun)
            return
        node = graph.nodes[k]
        args = [values[i] for i in node.inputs]
        if node.op in ("relu", "leaky_relu", "maxpool"):
            W, c = args[0]
            for rows, rhs, W2, c2 in _branches(node, W, c, graph.shape_of(node.inputs[0]), A_ub, b_ub, lo, hi):
                if _feasible(A_ub + rows, b_ub + rhs, lo, hi):
                    walk(k + 1, {**values, node.name: (W2, c2)}, A_ub + rows, b_ub + rhs)
        else:
            walk(k + 1, {**values, node.name: _apply_linear(node, args, [graph.shape_of(i) for i in node.inputs])}, A_ub, b_ub)

    walk(0, start, [], [])
    return best[0]
