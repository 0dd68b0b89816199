"""IBP tightness per layer (Mao et al., "Understanding Certified Training with Interval Bound Propagation").

At a layer with IBP box widths ``w_ibp`` over an input region, the tightness is the size of the
*optimal* box (each neuron's exact range over the region) relative to the IBP box:
``tau = sum(w_opt) / sum(w_ibp)`` (the ratio of mean widths; 1 = IBP is exact). The optimal box
is out of reach for hidden layers, so it is bracketed from both sides:

* **upper estimate** ``sum(w_outer) / sum(w_ibp)`` >= tau: CROWN (or alpha-CROWN) bounds of the
  bound engine, intersected with IBP, form a sound *outer* box, so ``w_outer >= w_opt`` neuron by neuron;
* **lower estimate** ``sum(w_inner) / sum(w_ibp)`` <= tau: the range of activations actually
  reached by points of the region is an *inner* box, ``w_sampled <= w_opt``. Points: the centre,
  uniform samples, random vertices, and for each neuron (at most ``max_neurons`` per layer) a
  short sign-gradient ascent and descent from the vertex its gradient at the centre points to.

For the first affine layer IBP is exact and both estimates reach 1. Computed in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from verifier.audit.claim import Claim
from verifier.audit.plan import AuditItem, input_box
from verifier.bounds import BoundEngine
from verifier.model.graph import Graph

LAYER_OPS = ("linear", "conv")
DEFINITION = ("Tightness at a layer = total width of the optimal box (each neuron's exact range over the "
              "input region) / total width of the IBP box at that layer (Mao et al.); 1 means IBP loses "
              "nothing there. Averaged over the samples listed.")
ESTIMATES = ("The optimal box is bracketed: 'upper' uses {outer} bounds (a sound outer box, so the ratio is "
             "an upper estimate of the tightness); 'lower' uses the range of activations reached by sampled "
             "and gradient-searched points of the region (an inner box, so a lower estimate). The true "
             "tightness lies between them. Unstable ReLU inputs: neurons whose box contains 0, mean per "
             "sample.")
OUTER_NAMES = {"crown": "CROWN", "alpha": "alpha-CROWN"}


@dataclass(frozen=True)
class SamplingConfig:
    """How the inner box is searched."""

    uniform: int = 256       # uniform random points of the region
    vertices: int = 256      # random vertices of the region
    max_neurons: int = 256   # neurons per layer given their own gradient search (a random subset beyond)
    steps: int = 6           # points per neuron and direction: the gradient's vertex, then sign-gradient steps
    seed: int = 0


def layers_of(graph: Graph) -> list[str]:
    """The affine layers (linear / conv nodes) and the output, in graph order."""
    names = [n.name for n in graph.nodes if n.op in LAYER_OPS]
    if graph.output_name not in names:
        names.append(graph.output_name)
    return names


def truncated(graph: Graph, name: str) -> Graph:
    """The graph up to node ``name`` (its output)."""
    index = [n.name for n in graph.nodes].index(name)
    return Graph(graph.input_name, graph.input_shape, graph.nodes[:index + 1], name)


def ibp_boxes(graph: Graph, lower: torch.Tensor, upper: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """IBP bounds of every node for a batch of boxes [B, *input_shape]."""
    return BoundEngine(graph, dtype=torch.float64).compute(lower, upper, method="ibp", want_upper=True).intermediate


def outer_box(graph: Graph, name: str, lower: torch.Tensor, upper: torch.Tensor, method: str = "crown"):
    """Sound CROWN / alpha-CROWN bounds (intersected with IBP) of every neuron of node ``name``; flat [B, n] each."""
    res = BoundEngine(truncated(graph, name), dtype=torch.float64).compute(lower, upper, method=method)
    return res.lower, res.upper


def _flat(t: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> [B, n]."""
    return t.reshape(t.shape[0], -1)


def sampled_box(graph: Graph, lower: torch.Tensor, upper: torch.Tensor, names: list[str],
                config: SamplingConfig = SamplingConfig()) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the min / max of activations reached by points of ONE box (``lower``/``upper``: [*input_shape])."""
    gen = torch.Generator().manual_seed(config.seed)
    lo, hi = lower.reshape(1, -1), upper.reshape(1, -1)
    width = hi - lo
    shape = (-1,) + tuple(graph.input_shape)
    found: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def record(values: dict) -> None:
        """Keep the per-layer min / max of a batch of evaluated points."""
        for n in names:
            v = _flat(values[n]).detach()
            found[n].append(torch.stack([v.min(0).values, v.max(0).values]))

    u = torch.rand((config.uniform, lo.shape[1]), generator=gen, dtype=torch.float64)
    corners = torch.randint(0, 2, (config.vertices, lo.shape[1]), generator=gen).to(torch.float64)
    with torch.no_grad():
        record(graph.forward(torch.cat([(lo + hi) / 2, lo + u * width, lo + corners * width]).reshape(shape), keep=True))
    for n in names:
        _neuron_search(graph, n, lo, hi, config, gen, record)
    return {n: (torch.stack(found[n])[:, 0].min(0).values, torch.stack(found[n])[:, 1].max(0).values) for n in names}


def _neuron_search(graph: Graph, name: str, lo, hi, config: SamplingConfig, gen, record) -> None:
    """Sign-gradient ascent (and descent) of each neuron of ``name`` inside the box; every point recorded."""
    n = int(np.prod(graph.shape_of(name), dtype=np.int64))
    neurons = torch.arange(n) if n <= config.max_neurons else torch.randperm(n, generator=gen)[:config.max_neurons]
    sign = torch.cat([torch.ones(len(neurons)), -torch.ones(len(neurons))]).to(torch.float64)
    rows = torch.cat([neurons, neurons])
    shape = (-1,) + tuple(graph.input_shape)
    width = hi - lo
    x = ((lo + hi) / 2).repeat(len(rows), 1)
    for step in range(config.steps + 1):
        x = x.detach().requires_grad_(True)
        values = graph.forward(x.reshape(shape), keep=True)
        if step > 0:
            record(values)
        if step == config.steps:
            break
        objective = (_flat(values[name])[torch.arange(len(rows)), rows] * sign).sum()
        (grad,) = torch.autograd.grad(objective, x)
        with torch.no_grad():
            if step == 0:   # jump to the vertex the gradient at the centre points to
                x = torch.where(grad >= 0, hi, lo).expand_as(x).clone()
            else:
                x = torch.minimum(torch.maximum(x + torch.sign(grad) * width * 0.5 / (step + 1), lo), hi)


def _ratio(est: torch.Tensor, ibp: torch.Tensor) -> torch.Tensor:
    """Per sample sum(est) / sum(ibp) over neurons; 1 where the IBP box has no width."""
    num, den = est.sum(1), ibp.sum(1)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), torch.ones_like(den))


def _unstable(graph: Graph, name: str, lo: torch.Tensor, hi: torch.Tensor) -> float | None:
    """Mean per sample of neurons of ``name`` feeding a ReLU whose box contains 0 (None: no ReLU reads it)."""
    if not any(n.op in ("relu", "leaky_relu") and name in n.inputs for n in graph.nodes):
        return None
    return float(((lo < 0) & (hi > 0)).sum(1).double().mean())


def layer_tightness(graph: Graph, boxes: list[tuple[np.ndarray, np.ndarray]],
                    config: SamplingConfig = SamplingConfig(), outer: str = "crown") -> list[dict]:
    """Per layer: mean IBP / outer / inner widths, tightness estimates and unstable counts over ``boxes``."""
    g = graph.to(dtype=torch.float64)
    lower = torch.tensor(np.stack([b[0] for b in boxes])).reshape((-1,) + tuple(g.input_shape))
    upper = torch.tensor(np.stack([b[1] for b in boxes])).reshape((-1,) + tuple(g.input_shape))
    names = layers_of(g)
    ibp = ibp_boxes(g, lower, upper)
    sampled = [sampled_box(g, lower[i], upper[i], names, config) for i in range(len(boxes))]
    rows = []
    for name in names:
        i_lo, i_hi = _flat(ibp[name][0]), _flat(ibp[name][1])
        c_lo, c_hi = outer_box(g, name, lower, upper, outer)
        c_lo, c_hi = torch.maximum(c_lo, i_lo), torch.minimum(c_hi, i_hi)
        s_lo = torch.stack([s[name][0] for s in sampled])
        s_hi = torch.stack([s[name][1] for s in sampled])
        w_ibp, w_outer, w_s = i_hi - i_lo, c_hi - c_lo, s_hi - s_lo
        node = g.node_map[name]
        rows.append({"layer": name, "op": node.op, "neurons": node.size,
                     "ibp_width": float(w_ibp.mean()), "outer_width": float(w_outer.mean()),
                     "inner_width": float(w_s.mean()),
                     "tightness_lower": float(_ratio(w_s, w_ibp).mean()),
                     "tightness_upper": float(_ratio(w_outer, w_ibp).mean()),
                     "unstable_ibp": _unstable(g, name, i_lo, i_hi), "unstable_outer": _unstable(g, name, c_lo, c_hi)})
    return rows


def ibp_tightness(claim: Claim, items: list[AuditItem], max_samples: int = 8,
                  config: SamplingConfig = SamplingConfig(), outer: str = "crown") -> dict:
    """The tightness table of every eps, over the first ``max_samples`` correctly classified samples.

    ``outer``: the bound method of the upper estimate, "crown" or "alpha" (alpha-CROWN: a tighter
    upper estimate, 10-50 times the time).
    """
    from verifier.model import load_onnx

    graph = load_onnx(str(claim.model)).graph
    per_eps = []
    for k, eps in enumerate(claim.eps):
        chosen = [it for it in items if it.eps_index == k and not it.misclassified][:max_samples]
        if not chosen:
            continue
        boxes = [input_box(claim.x[it.sample], eps, claim.clip, claim.mean, claim.std, claim.input_shape)
                 for it in chosen]
        per_eps.append({"eps": eps, "samples": len(chosen), "sample_indices": [it.sample for it in chosen],
                        "layers": layer_tightness(graph, boxes, config, outer)})
    return {"definition": DEFINITION, "estimates": ESTIMATES.format(outer=OUTER_NAMES[outer]),
            "outer_method": OUTER_NAMES[outer], "per_eps": per_eps}
