"""beta-CROWN: bounds of ReLU-split subdomains, split constraints as Lagrangian terms.

A subdomain is the input box plus ReLU split constraints ``s_j z_j >= 0`` (``s = +1``: the
relu's input ``z_j >= 0``, active; ``s = -1``: ``z_j <= 0``, inactive), given as one int8 tensor
per relu node ``[B, *shape]`` (0 = not split). Intermediate bounds are fixed per call: IBP
from the box intersected with ``reference`` bounds (e.g. the root's alpha-CROWN bounds) and
clamped by the splits (``refine=True`` also re-derives them with CROWN under the splits).
The objective ``C y`` is then bounded by one backward pass in which every split adds
``-beta_j s_j z_j`` (<= 0 on the subdomain, so the bound stays sound for any beta >= 0); the
relu lower slopes alpha in [0, 1] and the betas are optimised jointly by projected Adam, keeping
the best bound per (domain, row). With beta = 0 and default alphas this is CROWN on the clamped
bounds.

Parameters are dense per relu node, ``[B, R, *shape]`` (``R`` = objective rows): one alpha per
neuron and row, one beta per neuron and row (used only where the neuron is split).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from verifier import clock
from verifier.bounds.adam import Adam
from verifier.bounds.base import ElementwiseOp, RelaxState
from verifier.bounds.crown import backward_to_input, concretize_lower
from verifier.bounds.problem import Domain, input_box, spec_rows
from verifier.bounds.registry import OPS

EMPTY_TOL = 1e-6  # relative crossing l > u beyond which a clamped domain counts as empty


@dataclass(frozen=True)
class BetaConfig:
    """Joint alpha / beta optimisation of subdomain bounds."""

    iterations: int = 10
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    lr_decay: float = 0.98
    early_stop: bool = True  # stop once every domain has a row with a positive lower bound


@dataclass
class BetaResult:
    """Best lower bounds [B, R] with the parameters that reach them, and what branching needs."""

    lower: torch.Tensor
    alphas: dict[str, torch.Tensor]   # relu-like node -> [B, R, *shape], values in [0, 1]
    betas: dict[str, torch.Tensor]    # relu node -> [B, R, *shape], >= 0 (0 where not split)
    bounds: dict                       # the fixed intermediate bounds used
    empty: torch.Tensor                # [B]: the split constraints contradict the bounds
    coeffs: dict[str, torch.Tensor]   # A on every elementwise node's output at the best parameters
    input_A: torch.Tensor | None      # [B, R, *input_shape] at the best parameters


def split_bounds(engine, box, splits: dict | None, reference: dict | None, refine: bool = False):
    """Intermediate bounds of every value on each subdomain, and the mask [B] of empty subdomains."""
    with torch.no_grad():
        bounds, _ = engine.propagate(box, Domain(None, splits), crown=refine, reference=reference, forward=False)
    empty = torch.zeros(box[0].shape[0], dtype=torch.bool, device=box[0].device)
    for pre in set(engine.split_input.values()):
        lo, hi = bounds[pre]
        tol = EMPTY_TOL * (1 + lo.abs() + hi.abs())
        empty |= (lo > hi + tol).flatten(1).any(1)
        bounds[pre] = (torch.minimum(lo, hi), torch.maximum(lo, hi))
    return bounds, empty


def alpha_nodes(engine) -> list[str]:
    """Relu-like nodes the objective's backward pass crosses (they get alphas)."""
    scope = engine.scope[engine.graph.output_name]
    return [n.name for n in engine.graph.nodes if n.name in scope and OPS[n.op].has_alpha]


def split_nodes(engine) -> list[str]:
    """Relu nodes that can be split (the certificate's relu splits)."""
    scope = engine.scope[engine.graph.output_name]
    return [n.name for n in engine.graph.nodes if n.name in scope and n.op == "relu"]


def initial_params(engine, bounds, n_rows: int, alphas: dict | None = None, betas: dict | None = None):
    """Dense alphas and betas [B, R, *shape]: given values where the shapes fit, else defaults / 0."""
    out_a, out_b = {}, {}
    for name in alpha_nodes(engine):
        node = engine.nodes[name]
        lo, hi = bounds[node.inputs[0]]
        shape = (lo.shape[0], n_rows) + tuple(node.shape)
        given = (alphas or {}).get(name)
        if given is not None and given.dim() == len(shape):
            out_a[name] = given.to(lo).expand(shape).clone().clamp(0, 1)
        else:
            out_a[name] = OPS[node.op].default_alpha(node, lo, hi).unsqueeze(1).expand(shape).clone()
    for name in split_nodes(engine):
        lo = bounds[engine.nodes[name].inputs[0]][0]
        shape = (lo.shape[0], n_rows) + tuple(engine.nodes[name].shape)
        given = (betas or {}).get(name)
        if given is not None and given.dim() == len(shape):
            out_b[name] = given.to(lo).expand(shape).clone().clamp(min=0)
        else:
            out_b[name] = torch.zeros(shape, dtype=lo.dtype, device=lo.device)
    return out_a, out_b


def signs_of(engine, splits: dict | None, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split signs per relu node as float [B, 1, *shape] (0 = not split)."""
    out = {}
    for name, s in (splits or {}).items():
        node = engine.nodes[name]
        out[name] = s.to(device=like.device, dtype=like.dtype).reshape((s.shape[0], 1) + tuple(node.shape))
    return out


def objective_lower(engine, bounds, A_spec, alphas, betas, signs, record: dict | None = None,
                    fixed: dict | None = None):
    """Lower bounds [B, R] of the rows of ``A_spec`` with the beta terms; and the input coefficients.

    ``fixed``: a dict kept across calls with the same ``bounds`` (alpha-free relaxation parts).
    """
    graph = engine.graph
    out = graph.output_name
    if out == graph.input_name:
        return concretize_lower(A_spec, 0.0, bounds[out], A_spec.shape[1]), A_spec

    def relax(node) -> RelaxState:
        op: ElementwiseOp = OPS[node.op]
        lo, hi = bounds[node.inputs[0]]
        if node.name in alphas and fixed is not None:
            lines = op.relax_fixed(node, lo, hi, alphas[node.name], fixed.setdefault(node.name, {}))
        elif node.name in alphas:
            lines = op.relax(node, lo, hi, alphas[node.name])
        else:
            lines = tuple(t.unsqueeze(1) for t in op.relax(node, lo, hi))
        extra = None
        if node.name in signs and node.name in betas:
            extra = -betas[node.name] * signs[node.name]
        return RelaxState(*lines, extra_A=extra)

    A_x, bias = backward_to_input(graph, out, A_spec, bounds, relax, engine.scope[out], record)
    return concretize_lower(A_x, bias, bounds[graph.input_name], A_spec.shape[1]), A_x


def _keep(best: dict, cur: dict, improved: torch.Tensor) -> None:
    """Overwrite best parameters at the (domain, row) pairs that improved ([B, R] mask)."""
    for name, t in cur.items():
        mask = improved.reshape(improved.shape + (1,) * (t.dim() - 2))
        best[name] = torch.where(mask, t.detach(), best[name])


def optimise_beta(engine, bounds, A_spec, splits, alphas, betas, cfg: BetaConfig, empty=None,
                  deadline: float | None = None) -> BetaResult:
    """Projected Adam on alphas and betas maximising the summed lower bounds; best per (domain, row).

    Stops early at ``deadline`` (a ``time.monotonic()`` value), keeping the best so far.
    """
    signs = signs_of(engine, splits, A_spec)
    betas = {k: v for k, v in betas.items() if k in signs}
    a_params = [t.requires_grad_() for t in alphas.values()]
    b_params = [t.requires_grad_() for t in betas.values()]
    groups = [(ps, lr) for ps, lr in ((a_params, cfg.lr_alpha), (b_params, cfg.lr_beta)) if ps]
    opt = Adam(groups, cfg.lr_decay) if groups else None
    best_a = {k: v.detach().clone() for k, v in alphas.items()}
    best_b = {k: v.detach().clone() for k, v in betas.items()}
    best_low = None
    n_eval = max(1, cfg.iterations) if opt else 1
    fixed: dict = {}   # the bounds stay fixed: alpha-free relaxation parts are computed once
    for it in range(n_eval):
        with torch.enable_grad():
            low, _ = objective_lower(engine, bounds, A_spec, alphas, betas, signs, fixed=fixed)
        cur = low.detach()
        improved = torch.ones_like(cur, dtype=torch.bool) if best_low is None else cur > best_low
        best_low = cur.clone() if best_low is None else torch.maximum(best_low, cur)
        _keep(best_a, alphas, improved)
        _keep(best_b, betas, improved)
        done = best_low.max(1).values > 0
        if empty is not None:
            done |= empty
        late = deadline is not None and clock.now() >= deadline
        if (cfg.early_stop and bool(done.all())) or late or it == n_eval - 1 or not low.requires_grad:
            break
        opt.zero_grad()
        (-low.sum()).backward()
        opt.step()
        with torch.no_grad():
            for t in a_params:
                t.clamp_(0, 1)
            for t in b_params:
                t.clamp_(min=0)
    return _final(engine, bounds, A_spec, best_a, best_b, signs, best_low, empty)


def _final(engine, bounds, A_spec, alphas, betas, signs, best_low, empty) -> BetaResult:
    """Re-evaluate at the best parameters to record the backward coefficients (for branching / attack)."""
    record: dict = {}
    with torch.no_grad():
        low, A_x = objective_lower(engine, bounds, A_spec, alphas, betas, signs, record)
    # a (domain, row) whose best came from different iterations per row is evaluated jointly here:
    # per row the parameters are independent, so ``low`` equals ``best_low`` up to rounding.
    lower = torch.minimum(low, best_low)
    if empty is None:
        empty = torch.zeros(lower.shape[0], dtype=torch.bool, device=lower.device)
    return BetaResult(lower, alphas, betas, bounds, empty, record, A_x)


def _domains(engine, lower, upper, C, splits, reference, alphas, betas, refine):
    """What bounding subdomains starts from: (fixed intermediate bounds, empty mask, spec rows
    [B, R, *out], splits on the device, initial alphas, initial betas)."""
    box = input_box(engine.graph, lower, upper, engine.device, engine.dtype)
    A_spec, _ = spec_rows(engine.graph, C, box[0], False, engine.dtype)
    A_spec = A_spec.expand((box[0].shape[0],) + tuple(A_spec.shape[1:]))
    splits = {k: v.to(box[0].device) for k, v in (splits or {}).items()}
    bounds, empty = split_bounds(engine, box, splits, reference, refine)
    a0, b0 = initial_params(engine, bounds, A_spec.shape[1], alphas, betas)
    return bounds, empty, A_spec, splits, a0, b0


def quick_domains(engine, lower, upper, C, splits: dict | None = None, *, reference: dict | None = None,
                  alphas: dict | None = None, betas: dict | None = None, refine: bool = False):
    """One beta-CROWN evaluation at the given parameters, no optimisation: (lower [B, R], empty [B]).

    The cheap estimate branching heuristics compare candidate splits with (see ``compute_domains``).
    """
    bounds, empty, A_spec, splits, a0, b0 = _domains(engine, lower, upper, C, splits, reference, alphas, betas, refine)
    with torch.no_grad():
        low, _ = objective_lower(engine, bounds, A_spec, a0, b0, signs_of(engine, splits, A_spec))
    return low, empty


def compute_domains(engine, lower, upper, C, splits: dict | None = None, *, reference: dict | None = None,
                    alphas: dict | None = None, betas: dict | None = None, cfg: BetaConfig = BetaConfig(),
                    refine: bool = False, deadline: float | None = None) -> BetaResult:
    """beta-CROWN lower bounds of ``C @ y`` ([B|1, R, n_out]) on subdomains (box [B, *in] + splits).

    ``reference``: known valid bounds to intersect with (any batch broadcastable to B);
    ``alphas`` / ``betas``: warm starts ``[B, R, *shape]`` per node (e.g. the parent's);
    ``refine``: re-derive intermediate bounds by CROWN under the splits (costly) instead of IBP;
    ``deadline``: ``time.monotonic()`` value after which the optimisation stops early.
    """
    bounds, empty, A_spec, splits, a0, b0 = _domains(engine, lower, upper, C, splits, reference, alphas, betas, refine)
    return optimise_beta(engine, bounds, A_spec, splits, a0, b0, cfg, empty, deadline)
