"""Which ReLU to split: a BaBSR-style score from the relaxation intercepts and backward coefficients.

For an unstable relu (``l < 0 < u``) the triangle relaxation's upper line ``u (z - l) / (u - l)``
has intercept ``-u l / (u - l)`` at ``z = 0``; where the objective's backward coefficient ``lam``
on the relu output is negative, the bound pays ``-lam * intercept`` for it, and splitting the
neuron removes that loss (Bunel et al. 2020 estimate the improvement this way). Neurons with a
positive coefficient lose up to ``lam * min(u, -l)`` to the lower line; that term enters with a
small weight so that they still rank above neurons the objective does not see.
"""
from __future__ import annotations

import torch

POSITIVE_WEIGHT = 0.1   # weight of the lower-line gap term
TIEBREAK = 1e-6         # weight of the plain intercept (neurons with zero coefficient)


def relu_scores(engine, result, rows: torch.Tensor, splits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Score [N, size] per relu node for the chosen objective row of each domain (-inf: not splittable)."""
    from verifier.bounds.beta import split_nodes

    scores = {}
    ar = torch.arange(rows.shape[0], device=rows.device)
    for name in split_nodes(engine):
        lo, hi = (t.flatten(1) for t in result.bounds[engine.nodes[name].inputs[0]])
        eligible = (lo < 0) & (hi > 0)
        if name in splits:
            eligible &= splits[name].flatten(1).to(lo.device) == 0
        width = (hi - lo).clamp(min=torch.finfo(lo.dtype).tiny)
        intercept = torch.where(eligible, hi * (-lo) / width, torch.zeros_like(lo))
        coeff = result.coeffs.get(name)
        if coeff is None:
            lam = torch.zeros_like(lo)
        else:
            lam = coeff[ar, rows].flatten(1)
        gap = torch.minimum(hi, -lo).clamp(min=0)
        score = (-lam).clamp(min=0) * intercept + POSITIVE_WEIGHT * lam.clamp(min=0) * gap + TIEBREAK * intercept
        scores[name] = torch.where(eligible, score, torch.full_like(score, float("-inf")))
    return scores


def choose_neurons(scores: dict[str, torch.Tensor]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Per domain, the best-scoring neuron: (node names, node position [N], flat index [N]).

    A domain with no splittable neuron gets position -1.
    """
    names = list(scores)
    if not names:
        raise ValueError("the network has no relu node to split")
    best = torch.stack([s.max(1).values for s in scores.values()], 1)   # [N, n_nodes]
    where = torch.stack([s.argmax(1) for s in scores.values()], 1)
    value, pos = best.max(1)
    index = where.gather(1, pos[:, None]).squeeze(1)
    pos = torch.where(torch.isfinite(value), pos, torch.full_like(pos, -1))
    return names, pos, index
