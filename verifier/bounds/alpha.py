"""alpha-CROWN: optimise the free relaxation line of every unstable relu with Adam.

Alphas live per backward *start*: each refined intermediate node (whose bounded neurons are its
``rows``; its objectives are the 2k rows "+e_i" then "-e_i") and the final spec (key ``SPEC``,
rows = the spec rows, C then -C). For a start with R objectives, every relu-like node it reaches
gets alpha of shape [B, R, *node.shape] -- one slope per (batch, objective, neuron) -- unless
that is more than ``FULL_ALPHA_LIMIT`` elements, when it is shared over objectives:
[B, 1, *node.shape]. Any alpha in [0, 1] gives sound bounds, so intermediate bounds are
re-derived every iteration (jointly optimised with the final ones) and intersected with the
plain CROWN bounds; the tightest bound seen per neuron / per objective is returned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from verifier import clock
from verifier.bounds.adam import Adam
from verifier.bounds.problem import DeadlineReached
from verifier.bounds.registry import OPS

SPEC = "_spec"
FULL_ALPHA_LIMIT = 1 << 24


@dataclass(frozen=True)
class AlphaSet:
    """alpha values of one backward start: its rows (None for the spec) and one tensor per node."""

    rows: torch.Tensor | None
    slopes: dict[str, torch.Tensor]

    def detached(self) -> "AlphaSet":
        """A copy with detached, cloned tensors."""
        return AlphaSet(self.rows, {k: v.detach().clone() for k, v in self.slopes.items()})


def _start_slopes(engine, start, n_rows, bounds, given: AlphaSet | None) -> dict[str, torch.Tensor]:
    """Initial alphas of one start: the given ones where shapes fit, else CROWN's default."""
    slopes = {}
    for name in sorted(engine.scope[start]):
        node = engine.nodes[name]
        op = OPS[node.op]
        if not op.has_alpha:
            continue
        lo, hi = bounds[node.inputs[0]]
        if not bool(op.unstable(node, lo, hi).any()):
            continue
        batch = lo.shape[0]
        width = n_rows if batch * n_rows * node.size <= FULL_ALPHA_LIMIT else 1
        shape = (batch, width) + tuple(node.shape)
        if given is not None and name in given.slopes and tuple(given.slopes[name].shape) in (shape, (batch, 1) + shape[2:]):
            init = given.slopes[name].to(lo).expand(shape)
        else:
            init = op.default_alpha(node, lo, hi).unsqueeze(1).expand(shape)
        slopes[name] = init.clone().clamp(0, 1)
    return slopes


def initial_alphas(engine, bounds, plan, n_spec_rows, given=None) -> dict[str, AlphaSet]:
    """One AlphaSet per refined start (and the spec); ``plan`` rows are replaced by given rows."""
    given = given or {}
    for name, aset in given.items():
        if name != SPEC and name in plan and aset.rows is not None:
            plan[name] = aset.rows.to(plan[name].device)
    out = {}
    for name, rows in plan.items():
        if rows.numel():
            out[name] = AlphaSet(rows, _start_slopes(engine, name, 2 * rows.numel(), bounds, given.get(name)))
    out[SPEC] = AlphaSet(None, _start_slopes(engine, engine.graph.output_name, n_spec_rows, bounds, given.get(SPEC)))
    return out


def _keep_best(best: dict, alphas: dict, improved: torch.Tensor) -> None:
    """Overwrite the best alphas of the batch entries that improved."""
    for name, aset in alphas.items():
        for node, t in aset.slopes.items():
            mask = improved.view((-1,) + (1,) * (t.dim() - 1))
            best[name].slopes[node] = torch.where(mask, t.detach(), best[name].slopes[node])


def _tightest(best_bounds: dict, bounds: dict) -> dict:
    """Per-neuron intersection of two sound bound dicts."""
    return {k: (torch.maximum(lo, bounds[k][0].detach()), torch.minimum(hi, bounds[k][1].detach()))
            for k, (lo, hi) in best_bounds.items()}


def optimise_alphas(engine, box, dom, A_spec, m, cfg, reference, plan, alphas, crown_low, deadline=None):
    """Adam on the sum of spec lower bounds; returns (best lower [B, R], tightest bounds, best alphas).

    Stops after the iteration during which ``deadline`` (a ``time.monotonic()`` value) passes.

    The returned alphas are, per batch entry, those of the iteration with the best summed objective
    (evaluating them reproduces that iteration's bound, which may be below the per-row best).
    """
    params = [t.requires_grad_() for a in alphas.values() for t in a.slopes.values()]
    best_low = crown_low.detach().clone()
    best_bounds = {k: (v[0].detach(), v[1].detach()) for k, v in reference.items()}
    best = {k: a.detached() for k, a in alphas.items()}
    best_obj = torch.full((box[0].shape[0],), float("-inf"), dtype=box[0].dtype, device=box[0].device)
    opt = Adam([(params, cfg.lr)], cfg.lr_decay) if params else None
    n_eval = max(1, cfg.iterations) if params else 1
    for it in range(n_eval):
        try:
            with torch.enable_grad():
                bounds, _ = engine.propagate(box, dom, crown=True, plan=plan, alphas=alphas, reference=reference)
                low = engine.spec_lower(A_spec, bounds, alphas[SPEC], {})
        except DeadlineReached:
            break   # the engine's own deadline: keep the best iteration so far (CROWN's at worst)
        best_low = torch.maximum(best_low, low.detach())
        best_bounds = _tightest(best_bounds, bounds)
        obj = low.detach().sum(1)
        improved = obj > best_obj
        best_obj = torch.where(improved, obj, best_obj)
        _keep_best(best, alphas, improved)
        done = cfg.early_stop and bool((best_low[:, :m] > 0).all())
        late = deadline is not None and clock.now() >= deadline
        if done or late or it == n_eval - 1 or opt is None or not low.requires_grad:
            break
        opt.zero_grad()
        (-low.sum()).backward()
        opt.step()
        with torch.no_grad():
            for t in params:
                t.clamp_(0, 1)
    return best_low, best_bounds, best
