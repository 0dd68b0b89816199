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
from verifier.search.prooftree import split_tree

STARVED = 256.0   # see choose_dims


@dataclass
class SplitLog:
    """The proof: splits (parent id, dim, at, low id, high id) and proved leaves."""

    splits: list[tuple[int, int, float, int, int]] = field(default_factory=list)
    leaves: list[tuple[int, int, float]] = field(default_factory=list)   # (id, row, claimed bound)

    def tree(self, root: int = 0) -> dict:
        """The certificate TREE (see docs/certificate.md) rooted at domain ``root``.

        Leaves carry no explicit box: the checker derives it in float64 from the region box and
        the split points.
        """
        children = {p: ({"kind": "input", "dim": int(d), "at": float(at)}, lo, hi) for p, d, at, lo, hi in self.splits}
        leaves = {i: {"row": int(row), "bound": float(bound), "box": None, "alphas": {}, "betas": None}
                  for i, row, bound in self.leaves}
        return split_tree(root, children, leaves)


@dataclass
class SplitOutcome:
    """Result of one input-split search over one (box, polytope)."""

    status: str                       # holds | violated | unknown | timeout
    counterexample: object = None
    log: SplitLog | None = None
    stats: dict = field(default_factory=dict)


def choose_dims(lower: torch.Tensor, upper: torch.Tensor, root_width: torch.Tensor,
                sensitivities: list[torch.Tensor]) -> torch.Tensor:
    """Split dimension per domain (boxes [N, n]).

    Score: width x sensitivity, each sensitivity (|d bound / d x_i| estimates, [N, n]) scaled to a
    maximum of 1 and summed, plus a quarter share of the relative width (a dim that looks flat
    is not ignored forever); without sensitivities, the relative width alone. A dimension whose
    relative width is STARVED times that of the scored choice is split instead: measured on ACAS
    Xu prop 1-5, this guard turned searches of 150,000+ domains into a few thousand.
    """
    width = upper - lower
    rel = width / root_width.clamp(min=1e-12)
    if sensitivities:
        score = _unit(width * sum(_unit(t.abs()) for t in sensitivities)) + 0.25 * _unit(rel)
    else:
        score = rel
    dims = torch.where(width > 0, score, torch.full_like(score, -1.0)).argmax(dim=1)
    widest = rel.argmax(dim=1)
    starved = rel.gather(1, dims[:, None])[:, 0] * STARVED < rel.gather(1, widest[:, None])[:, 0]
    return torch.where(starved, widest, dims)


def _unit(t: torch.Tensor) -> torch.Tensor:
    """Rows scaled to a maximum of 1."""
    return t / t.max(dim=1, keepdim=True).values.clamp(min=1e-30)


@dataclass
class Pending:
    """Domains waiting to be bounded: boxes [N, n], ids, depths, and their parents' node bounds.

    A child box lies inside its parent's, so the parent's bounds of every node stay valid for it;
    handing them to the engine keeps neurons the parent had already stabilised out of its
    CROWN passes (only unstable neurons get backward rows).
    """

    lo: torch.Tensor
    hi: torch.Tensor
    ids: torch.Tensor
    depth: torch.Tensor
    inter: dict | None = None

    def __len__(self) -> int:
        return self.lo.shape[0]

    def pop(self, n: int) -> "Pending":
        """Remove and return the last ``n`` domains (depth-first: memory stays small)."""
        out = Pending(self.lo[-n:], self.hi[-n:], self.ids[-n:], self.depth[-n:],
                      None if self.inter is None else {k: (l[-n:], u[-n:]) for k, (l, u) in self.inter.items()})
        self.lo, self.hi, self.ids, self.depth = self.lo[:-n], self.hi[:-n], self.ids[:-n], self.depth[:-n]
        if self.inter is not None:
            self.inter = {k: (l[:-n], u[:-n]) for k, (l, u) in self.inter.items()}
        return out

    def select(self, mask: torch.Tensor) -> "Pending":
        """The domains where ``mask`` is true."""
        inter = None if self.inter is None else {k: (l[mask], u[mask]) for k, (l, u) in self.inter.items()}
        return Pending(self.lo[mask], self.hi[mask], self.ids[mask], self.depth[mask], inter)

    def push(self, part: "Pending") -> None:
        """Append domains; node bounds are kept only while every domain has them (else dropped)."""
        empty = len(self) == 0
        if empty:
            self.inter = part.inter
        elif self.inter is not None and part.inter is not None:
            self.inter = {k: (torch.cat([l, part.inter[k][0]]), torch.cat([u, part.inter[k][1]]))
                          for k, (l, u) in self.inter.items()}
        else:
            self.inter = None
        self.lo, self.hi = torch.cat([self.lo, part.lo]), torch.cat([self.hi, part.hi])
        self.ids, self.depth = torch.cat([self.ids, part.ids]), torch.cat([self.depth, part.depth])


def input_split(engine, graph, lower: np.ndarray, upper: np.ndarray, A: np.ndarray, b: np.ndarray,
                validate: Callable[[np.ndarray], object], deadline: float, config: BabConfig,
                device=None, dtype=torch.float32) -> SplitOutcome:
    """Prove ``A f(x) <= b`` unreachable over the box, or find a validated counterexample."""
    t0 = time.monotonic()
    lo, hi = outward_box(lower, upper, dtype, device, (1, -1))
    root_width = (hi - lo)[0]
    C, bt = torch.tensor(A, dtype=dtype, device=device).unsqueeze(0), torch.tensor(b, dtype=dtype, device=device)
    zero = torch.zeros(1, dtype=torch.long, device=device)
    queue = Pending(lo, hi, zero, zero.clone())
    log, next_id, visited, max_depth = SplitLog(), 1, 0, 0
    size = min(64, config.batch)   # batch size: grows while one call stays short, so deadlines hold
    while len(queue):
        if time.monotonic() >= deadline:
            return SplitOutcome("timeout", log=log, stats=_stats(visited, len(queue), max_depth, t0))
        if len(queue) > config.max_domains:
            return SplitOutcome("unknown", log=log, stats=_stats(visited, len(queue), max_depth, t0, "domain limit"))
        batch = queue.pop(min(size, len(queue)))
        visited += len(batch)
        t_call = time.monotonic()
        margin, inter, coeffs = _bound(engine, graph, batch, C.expand(len(batch), -1, -1), bt, config.method,
                                       config.input_branching in ("coeff", "both"))
        size = _next_size(size, len(batch), time.monotonic() - t_call, config.batch)
        best, row = margin.max(dim=1)
        proved = best > 0
        for i in torch.nonzero(proved).flatten().tolist():
            log.leaves.append((int(batch.ids[i]), int(row[i]), float(best[i])))
        open_ = ~proved
        if not open_.any():
            continue
        batch.inter = inter
        batch = batch.select(open_)
        centres, y, grad = centre_outputs(engine.graph, batch.lo, batch.hi, C[0][row[open_]])   # on its device
        cex = _try_centres(centres, y, C, bt, validate)
        if cex is not None:
            return SplitOutcome("violated", cex, log, _stats(visited, len(queue), max_depth, t0))
        sens = [] if config.input_branching == "coeff" else [grad]
        if coeffs is not None:   # the bound's own input coefficients for the row closest to proved
            sens.append(coeffs[open_].gather(1, row[open_].view(-1, 1, 1).expand(-1, 1, coeffs.shape[2]))[:, 0])
        dims = choose_dims(batch.lo, batch.hi, root_width, sens)
        if bool(((batch.hi - batch.lo).gather(1, dims[:, None]) <= 0).any()):
            return SplitOutcome("unknown", log=log, stats=_stats(visited, len(queue), max_depth, t0, "point box not proved"))
        low, high, next_id = _halves(batch, dims, next_id, log)
        queue.push(low)
        queue.push(high)
        max_depth = max(max_depth, int(batch.depth.max()) + 1)
    return SplitOutcome("holds", log=log, stats=_stats(visited, 0, max_depth, t0))


def _next_size(size: int, used: int, seconds: float, cap: int, target: float = 0.05) -> int:
    """Batch size for the next call: aim at ``target`` seconds per call, at most ``cap``."""
    if used < size:
        return size
    per_domain = seconds / max(used, 1)
    return int(max(16, min(cap, 2 * size, target / max(per_domain, 1e-9))))


def _halves(batch: Pending, dims: torch.Tensor, next_id: int, log: SplitLog):
    """Split every box of ``batch`` in two at the midpoint of its chosen dim; record the splits."""
    mid = (batch.lo.gather(1, dims[:, None]) + batch.hi.gather(1, dims[:, None])) / 2
    k = len(batch)
    new_ids = torch.arange(next_id, next_id + 2 * k, device=batch.lo.device).reshape(2, k)
    for p, d, m, a, c in zip(batch.ids.tolist(), dims.tolist(), mid.flatten().tolist(), new_ids[0].tolist(),
                             new_ids[1].tolist()):
        log.splits.append((p, d, m, a, c))
    low = Pending(batch.lo, batch.hi.scatter(1, dims[:, None], mid), new_ids[0], batch.depth + 1, batch.inter)
    high = Pending(batch.lo.scatter(1, dims[:, None], mid), batch.hi, new_ids[1], batch.depth + 1, batch.inter)
    return low, high, next_id + 2 * k


def _bound(engine, graph, batch: Pending, C, b, method, want_coeffs=False):
    """Lower bounds of the margin rows [N, m], the bounds of the nodes CROWN refines, and (when
    asked and available) the rows' input coefficients [N, m, n]."""
    shape = (len(batch),) + tuple(graph.input_shape)
    res = engine.compute(batch.lo.reshape(shape), batch.hi.reshape(shape), C, method=method, want_upper=False,
                         intermediate=batch.inter, want_coeffs=want_coeffs)
    keep = {k: v for k, v in res.intermediate.items() if k in engine.refined}
    coeffs = None if res.coeffs is None else res.coeffs.flatten(2).expand(len(batch), -1, -1)
    return res.lower - b, keep, coeffs


def centre_outputs(graph, lo: torch.Tensor, hi: torch.Tensor, rows: torch.Tensor):
    """One forward/backward pass at the box centres: (centres [N, n], f(centres) [N, m], sensitivity).

    The sensitivity |d (row . f(x)) / dx| [N, n] says how much each input moves the row to prove.
    """
    x = ((lo + hi) / 2).detach().requires_grad_(True)
    with torch.enable_grad():
        y = graph.forward(x.reshape((x.shape[0],) + tuple(graph.input_shape))).reshape(x.shape[0], -1)
        (y * rows).sum().backward()
    return x.detach(), y.detach(), x.grad.abs()


def _try_centres(centres, y, C, b, validate):
    """Validate (onnxruntime) the first few box centres whose outputs land in the unsafe polytope."""
    worst = (y @ C[0].T - b).max(dim=1).values
    for i in torch.nonzero(worst <= 0).flatten()[:8].tolist():
        cex = validate(centres[i].double().cpu().numpy())
        if cex is not None:
            return cex
    return None


def _stats(visited, pending, depth, t0, note=""):
    return {"domains": visited, "pending": pending, "max_depth": depth,
            "time": round(time.monotonic() - t0, 4), **({"note": note} if note else {})}
