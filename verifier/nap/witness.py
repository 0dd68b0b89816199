"""Witnesses for NAP properties: a constrained attack, and confirmation on onnxruntime.

A witness is confirmed by running the ORIGINAL ONNX file on onnxruntime with the outputs of the
pattern's ReLU nodes added as graph outputs (``HiddenRunner``): an "on" neuron must have a
ReLU output > 0, an "off" neuron an output of exactly 0 (ReLU(z) = 0 iff z <= 0), and the logits
must violate the property. The input is first made a value the network receives unchanged
inside the region box (``verifier.counterexample.network_point``). The float64 pass of the
lowered graph is recorded alongside (``float64_agrees``) but does not decide.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import torch
from onnx import helper

from verifier import clock
from verifier.counterexample import network_dtype, network_point
from verifier.model.onnx_file import read_file
from verifier.model.reference import OnnxRunner
from verifier.nap.pattern import NapError, forward

CONFIRMED_BY = "onnxruntime on the original ONNX file, with the ReLU outputs exposed as graph outputs"
TAU = 1e-3     # the attack asks every fixed neuron for s * z >= TAU (and the margin for TAU), so float32 agrees


class HiddenRunner:
    """onnxruntime on the ONNX file with extra graph outputs: the named ReLU nodes' outputs."""

    def __init__(self, path: str, relus: list[str]):
        model = onnx.load_model_from_string(read_file(path))
        produced = {o: n for n in model.graph.node for o in n.output}
        missing = [r for r in relus if r not in produced or produced[r].op_type != "Relu"]
        if missing:
            raise NapError(f"ReLU layer {missing[0]!r} is not the output of an ONNX Relu node: witnesses cannot "
                           "be confirmed on onnxruntime")
        known = {o.name for o in model.graph.output}
        elem = model.graph.input[0].type.tensor_type.elem_type
        for r in relus:
            if r not in known:
                model.graph.output.append(helper.make_tensor_value_info(r, elem, None))
        self.base = OnnxRunner(model.SerializeToString())
        self.names = [self.base.output_name] + list(relus)

    @property
    def dtype(self):
        """The network's input dtype."""
        return self.base.dtype

    def run(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits [B, n_out] and each ReLU node's output [B, size] (float64) for flat inputs [B, n]."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.base.n_inputs).astype(self.base.dtype)
        b = self.base
        if b.batch_axis == "symbolic":
            outs = b.session.run(self.names, {b.input_name: x.reshape((x.shape[0],) + b.sample_shape)})
        else:
            shape = ((1,) if b.batch_axis == "fixed" else ()) + b.sample_shape
            rows = [b.session.run(self.names, {b.input_name: s.reshape(shape)}) for s in x]
            outs = [np.stack([np.asarray(r[k]).reshape(-1) for r in rows]) for k in range(len(self.names))]
        flat = [np.asarray(o, dtype=np.float64).reshape(x.shape[0], -1) for o in outs]
        return flat[0], dict(zip(self.names[1:], flat[1:]))


def confirm(runner: HiddenRunner, graph, x: np.ndarray, lower: np.ndarray, upper: np.ndarray,
            constraints: list[tuple[str, int, int]], unsafe: Callable[[np.ndarray], int | None]) -> dict | None:
    """The witness record when onnxruntime confirms that ``x`` (made a network point in the box) matches
    every constraint and ``unsafe(logits)`` names the violated class (or -1: no class condition); else None."""
    point = network_point(x, lower, upper, network_dtype(runner))
    if point is None:
        return None
    logits, relu = runner.run(point[None])
    for node, index, sign in constraints:
        value = relu[node][0, index]
        if not (value > 0 if sign > 0 else value == 0):
            return None
    violated = unsafe(logits[0])
    if violated is None:
        return None
    f64_logits, pre = forward(graph, point[None], sorted({c[0] for c in constraints}))
    slack = min((s * pre[n][0, k] for n, k, s in constraints), default=np.inf)
    agrees = all(pre[n][0, k] > 0 if s > 0 else pre[n][0, k] <= 0 for n, k, s in constraints)
    agrees = bool(agrees and unsafe(f64_logits[0]) is not None)
    return {"x": [float(v) for v in point], "logits": [float(v) for v in logits[0]],
            "predicted": int(np.argmax(logits[0])), "violates": int(violated),
            "constraints_checked": len(constraints), "confirmed_by": CONFIRMED_BY,
            "float64_logits": [float(v) for v in f64_logits[0]], "float64_agrees": agrees,
            "min_slack_float64": float(slack)}


def misclassified(label: int) -> Callable[[np.ndarray], int | None]:
    """``unsafe`` for "classified as label": the best other class j with y_j >= y_label, else None."""
    def unsafe(y: np.ndarray):
        others = np.delete(np.arange(y.size), label)
        j = int(others[np.argmax(y[others])])
        return j if y[j] >= y[label] else None
    return unsafe


def attack(graph, lower: np.ndarray, upper: np.ndarray, signs: dict[str, np.ndarray], label: int | None,
           deadline: float, starts: np.ndarray | None = None, restarts: int = 64, steps: int = 200,
           seed: int = 0) -> np.ndarray:
    """Candidate witnesses [K, n] (most promising first): Adam on the box minimising the violation of
    ``s * z >= TAU`` for every fixed neuron, plus (with ``label``) of ``max_j y_j >= y_label + TAU``."""
    g = graph.to(dtype=torch.float64)
    lo, hi = (torch.tensor(np.asarray(v, dtype=np.float64)).reshape(1, -1) for v in (lower, upper))
    gen = torch.Generator().manual_seed(seed)
    x0 = [(lo + hi) / 2, lo + (hi - lo) * torch.rand((restarts, lo.shape[1]), generator=gen, dtype=torch.float64)]
    if starts is not None and len(starts):
        x0.insert(0, torch.as_tensor(np.asarray(starts, dtype=np.float64)).reshape(-1, lo.shape[1]))
    x = torch.minimum(torch.maximum(torch.cat(x0), lo), hi).requires_grad_()
    pre_of = {n.name: n.inputs[0] for n in g.nodes if n.op == "relu"}
    sign_t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in signs.items()}
    opt = torch.optim.Adam([x], lr=float(0.05 * (hi - lo).mean().clamp(min=1e-6)))
    found, best, best_loss = [], x.detach().clone(), torch.full((x.shape[0],), np.inf, dtype=torch.float64)
    for _ in range(steps):
        if clock.now() >= deadline:
            break
        values = g.forward(x.reshape((-1,) + tuple(g.input_shape)), keep=True)
        loss = torch.zeros(x.shape[0], dtype=torch.float64)
        for name, s in sign_t.items():
            z = values[pre_of[name]].reshape(x.shape[0], -1)
            loss = loss + (torch.relu(TAU - s * z) * (s != 0)).sum(1)
        if label is not None:
            y = values[g.output_name].reshape(x.shape[0], -1)
            other = torch.cat([y[:, :label], y[:, label + 1:]], 1).max(1).values
            loss = loss + torch.relu(y[:, label] - other + TAU)
        done = loss.detach() <= 0
        if bool(done.any()):
            found.append(x.detach()[done].clone())
            if sum(len(f) for f in found) >= 8:
                break
        better = loss.detach() < best_loss
        best[better], best_loss[better] = x.detach()[better], loss.detach()[better]
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.minimum(torch.maximum(x, lo), hi))
    order = best_loss.argsort()[:4]
    return torch.cat(found + [best[order]]).numpy()
