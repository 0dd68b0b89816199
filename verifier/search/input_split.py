"""Branch and bound over the input box, for low-dimensional inputs (ACAS Xu has 5).

Pending domains live in flat tensors and are bounded in batches. A domain is proved when the
lower bound of some row of the polytope's margin ``A y - b`` is positive; otherwise its box
centre is tried as a counterexample and the box is split in two along the dimension whose
width contributes most to the lower bound's slack. Every split and proved leaf is recorded so
the proof can be written as a certificate tree.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from verifier.bounds.box import outward_box
from verifier.config import BabConfig


@dataclass
class SplitLog:
    """The proof: splits (parent id, dim, at, low id, high id) and proved leaves."""

    splits: list[tuple[int, int, float, int, int]] = field(default_factory=list)
    leaves: list[tuple[int, int, float, np.ndarray, np.ndarray]] = field(default_factory=list)

    def tree(self, root: int = 0) -> dict:
        """The certificate TREE (see docs/certificate.md) rooted at domain ``root``."""
        children = {p: (d, at, lo, hi) for p, d, at, lo, hi in self.splits}
        leaves = {i: (row, bound, lo, hi) for i, row, bound, lo, hi in self.leaves}
        return _subtree(root, children, leaves)


def _subtree(node: int, children: dict, leaves: dict) -> dict:
    """Iteratively build the nested tree dict (proofs can be deep)."""
    root: dict = {}
    stack = [(node, root)]
    while stack:
        ident, slot = stack.pop()
        if ident in children:
            dim, at, low, high = children[ident]
            kids = [{}, {}]
            slot["split"] = {"kind": "input", "dim": int(dim), "at": float(at)}
            slot["children"] = kids
            stack.extend([(low, kids[0]), (high, kids[1])])
        else:
            row, bound, lo, hi = leaves[ident]
            # no explicit box: the checker derives it in float64 from the region box and the split points
            slot["leaf"] = {"row": int(row), "bound": float(bound), "box": None, "alphas": {}, "betas": None}
    return root


@dataclass
class SplitOutcome:
    """Result of one input-split search over one (box, polytope)."""

    status: str                       # holds | violated | unknown | timeout
    counterexample: object = None
    log: SplitLog | None = None
    stats: dict = field(default_factory=dict)


def choose_dims(lower: torch.Tensor, upper: torch.Tensor, root_width: torch.Tensor,
                grad: torch.Tensor | None) -> torch.Tensor:
    """Split dimension per domain: largest |d bound / d x| * width, else largest relative width."""
    width = upper - lower
    score = width * grad.abs() if grad is not None else width / root_width.clamp(min=1e-12)
    score = torch.where(width > 0, score, torch.full_like(score, -1.0))
    return score.argmax(dim=1)


def input_split(engine, graph, lower: np.ndarray, upper: np.ndarray, A: np.ndarray, b: np.ndarray,
                validate: Callable[[np.ndarray], object], deadline: float, config: BabConfig,
                device=None, dtype=torch.float32) -> SplitOutcome:
    """Prove ``A f(x) <= b`` unreachable over the box, or find a validated counterexample."""
    t0 = time.monotonic()
    tensor = lambda a: torch.tensor(np.asarray(a), dtype=dtype, device=device)
    lo, hi = outward_box(lower, upper, dtype, device, (1, -1))
    root_width = (hi - lo)[0]
    C, bt = tensor(A).unsqueeze(0), tensor(b)
    ids = torch.zeros(1, dtype=torch.long, device=device)
    log, next_id, visited, max_depth = SplitLog(), 1, 0, 0
    depth = torch.zeros(1, dtype=torch.long, device=device)
    while lo.shape[0]:
        if time.monotonic() >= deadline:
            return SplitOutcome("timeout", log=log, stats=_stats(visited, lo.shape[0], max_depth, t0))
        if lo.shape[0] > config.max_domains:
            return SplitOutcome("unknown", log=log, stats=_stats(visited, lo.shape[0], max_depth, t0, "domain limit"))
        n = min(config.batch, lo.shape[0])
        blo, bhi, bid, bdep = lo[-n:], hi[-n:], ids[-n:], depth[-n:]
        lo, hi, ids, depth = lo[:-n], hi[:-n], ids[:-n], depth[:-n]
        visited += n
        margin, grad = _bound(engine, graph, blo, bhi, C.expand(n, -1, -1), bt, config.method)
        best, row = margin.max(dim=1)
        proved = best > 0
        for i in torch.nonzero(proved).flatten().tolist():
            log.leaves.append((int(bid[i]), int(row[i]), float(best[i]), blo[i].double().cpu().numpy(),
                               bhi[i].double().cpu().numpy()))
        open_ = ~proved
        if not open_.any():
            continue
        blo, bhi, bid, bdep = blo[open_], bhi[open_], bid[open_], bdep[open_]
        cex = _try_centres(graph, blo, bhi, C, bt, validate)
        if cex is not None:
            return SplitOutcome("violated", cex, log, _stats(visited, lo.shape[0], max_depth, t0))
        rows = C[0][row[open_]]
        dims = choose_dims(blo, bhi, root_width, sensitivity(graph, blo, bhi, rows))
        if bool(((bhi - blo).gather(1, dims[:, None]) <= 0).any()):
            return SplitOutcome("unknown", log=log, stats=_stats(visited, lo.shape[0], max_depth, t0, "point box not proved"))
        mid = (blo.gather(1, dims[:, None]) + bhi.gather(1, dims[:, None])) / 2
        k = blo.shape[0]
        low_hi = bhi.scatter(1, dims[:, None], mid)
        high_lo = blo.scatter(1, dims[:, None], mid)
        new_ids = torch.arange(next_id, next_id + 2 * k, device=device).reshape(2, k)
        next_id += 2 * k
        for p, d, m, a, c in zip(bid.tolist(), dims.tolist(), mid.flatten().tolist(), new_ids[0].tolist(), new_ids[1].tolist()):
            log.splits.append((p, d, m, a, c))
        lo = torch.cat([lo, blo, high_lo])
        hi = torch.cat([hi, low_hi, bhi])
        ids = torch.cat([ids, new_ids[0], new_ids[1]])
        depth = torch.cat([depth, bdep + 1, bdep + 1])
        max_depth = max(max_depth, int(bdep.max()) + 1)
    return SplitOutcome("holds", log=log, stats=_stats(visited, 0, max_depth, t0))


def _bound(engine, graph, lo, hi, C, b, method):
    """Lower bounds of the margin rows [N, m] (no gradient: ``sensitivity`` supplies the split score)."""
    shape = (lo.shape[0],) + tuple(graph.input_shape)
    res = engine.compute(lo.reshape(shape), hi.reshape(shape), C, method=method, want_upper=False)
    return res.lower - b, None


def sensitivity(graph, lo: torch.Tensor, hi: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """|d (row . f(x)) / dx| at each box centre [N, n]: how much each input moves the row to prove."""
    x = ((lo + hi) / 2).detach().requires_grad_(True)
    with torch.enable_grad():
        y = graph.forward(x.reshape((x.shape[0],) + tuple(graph.input_shape))).reshape(x.shape[0], -1)
        (y * rows).sum().backward()
    return x.grad.abs()


def _try_centres(graph, lo, hi, C, b, validate):
    """Evaluate box centres; validate (onnxruntime) the first that lands in the unsafe polytope."""
    centres = (lo + hi) / 2
    with torch.no_grad():
        y = graph.forward(centres.reshape((lo.shape[0],) + tuple(graph.input_shape))).reshape(lo.shape[0], -1)
    worst = (y @ C[0].T - b).max(dim=1).values
    for i in torch.nonzero(worst <= 0).flatten()[:8].tolist():
        cex = validate(centres[i].double().cpu().numpy())
        if cex is not None:
            return cex
    return None


def _stats(visited, pending, depth, t0, note=""):
    return {"domains": visited, "pending": pending, "max_depth": depth,
            "time": round(time.monotonic() - t0, 4), **({"note": note} if note else {})}
