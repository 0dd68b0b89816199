"""Branch and bound over sigmoid / tanh neurons: split a pre-activation interval (GenBaB-style).

A network whose activations are all smooth has no ReLU to split, and input splitting is hopeless
with hundreds of inputs. Following Shi et al. (2024, "GenBaB"), a domain here is the input box
plus interval constraints on some pre-activations ``z``: splitting neuron k of an activation at
point p gives the two domains ``z_k <= p`` and ``z_k >= p``, which together cover the box
whatever p is. On each piece the relaxation is re-derived from the narrower interval (CROWN
intersects the given bounds), so a piece that no longer straddles the S-curve's inflection point
gets the tight convex / concave bounds.

* Split point: 0 (the inflection point of sigmoid and tanh) when the interval straddles it, so
  both pieces are convex or concave; else the midpoint.
* Neuron choice: the largest estimated bound gain, |coefficient of the activation's output in the
  objective's backward pass| x (the gap between its relaxation lines), BaBSR-style -- see ``_scores``.
* Split constraints enter the objective as Lagrangian terms, as beta-CROWN does for ReLU splits:
  ``z_k <= p`` adds ``-beta (p - z_k)`` and ``z_k >= p`` adds ``-beta (z_k - p)`` (both <= 0 on the
  domain, so any beta >= 0 keeps the bound sound); the betas are optimised by projected Adam for
  a few steps per batch. Without them the linear bound is minimised over the whole box, where
  the narrowed relaxation no longer holds, and splitting stops paying off.
* The proof is a tree of ``interval`` splits (docs/certificate.md) whose leaves carry one beta per
  split on their path; the independent checker re-derives every leaf with its own relaxations.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from verifier import clock
from verifier.bounds.adam import Adam
from verifier.bounds.base import RelaxState
from verifier.bounds.crown import backward_to_input, concretize_lower
from verifier.bounds.registry import OPS
from verifier.config import BabConfig
from verifier.search.input_split import SplitOutcome
from verifier.search.prooftree import split_tree

SMOOTH_OPS = ("sigmoid", "tanh")
BATCH = 64           # domains bounded per CROWN call
BETA_STEPS = 12      # projected Adam steps on the split multipliers per batch
BETA_LR = 0.1
EMPTY_MARGIN = 1e-4  # relative crossing of a pre-activation interval that marks a domain empty


def smooth_neurons(graph) -> list[tuple[str, str]]:
    """(activation node, its pre-activation value) for every sigmoid / tanh node."""
    return [(n.name, n.inputs[0]) for n in graph.nodes if n.op in SMOOTH_OPS]


@dataclass
class SmoothSplitLog:
    """The proof: interval splits (parent, node, index, at, low id, high id) and proved leaves (id, row, bound)."""

    splits: list[tuple[int, str, int, float, int, int]] = field(default_factory=list)
    leaves: list[tuple[int, int, float, np.ndarray | None]] = field(default_factory=list)
    parent: dict[int, tuple[int, str, int, float, int]] = field(default_factory=dict)   # id -> (parent, node, index, at, sign)

    def add_split(self, parent: int, node: str, index: int, at: float, low: int, high: int) -> None:
        self.splits.append((parent, node, index, at, low, high))
        self.parent[low], self.parent[high] = (parent, node, index, at, -1), (parent, node, index, at, 1)

    def path(self, ident: int) -> list[tuple[str, int, float, int]]:
        """(node, index, at, sign) of every split from the root to ``ident``."""
        out = []
        while ident in self.parent:
            ident, node, index, at, sign = self.parent[ident]
            out.append((node, index, at, sign))
        return out[::-1]

    def tree(self, root: int = 0) -> dict:
        """The certificate TREE (docs/certificate.md)."""
        children = {p: ({"kind": "interval", "node": node, "index": int(k), "at": float(at)}, lo, hi)
                    for p, node, k, at, lo, hi in self.splits}
        leaves = {}
        for i, row, bound, betas in self.leaves:
            leaves[i] = {"row": int(row), "bound": float(bound)}
            if betas is not None and np.any(betas > 0):
                leaves[i]["betas"] = betas
        return split_tree(root, children, leaves)


@dataclass
class _Domains:
    """Pending domains: per pre-activation value, the split constraints as floors / caps [N, n]
    (+-inf: none), and the parent's bounds of that value (``known_lo`` / ``known_hi``: valid on the
    child, which lies inside the parent), intersected in when the domain is bounded."""

    floors: dict[str, torch.Tensor]
    caps: dict[str, torch.Tensor]
    ids: list[int]
    depth: list[int]
    known_lo: dict[str, torch.Tensor] = field(default_factory=dict)
    known_hi: dict[str, torch.Tensor] = field(default_factory=dict)

    TABLES = ("floors", "caps", "known_lo", "known_hi")

    def take(self, n: int) -> "_Domains":
        """Remove and return the last ``n`` domains (depth first)."""
        k = len(self.ids) - n
        out = _Domains(ids=self.ids[k:], depth=self.depth[k:],
                       **{name: {v: t[k:] for v, t in getattr(self, name).items()} for name in self.TABLES})
        for name in self.TABLES:
            setattr(self, name, {v: t[:k] for v, t in getattr(self, name).items()})
        self.ids, self.depth = self.ids[:k], self.depth[:k]
        return out

    def add(self, other: "_Domains") -> None:
        for name in self.TABLES:
            theirs = getattr(other, name)
            setattr(self, name, {v: torch.cat([t, theirs[v]]) for v, t in getattr(self, name).items()})
        self.ids, self.depth = self.ids + other.ids, self.depth + other.depth


def smooth_split(engine, graph, lower: np.ndarray, upper: np.ndarray, A: np.ndarray, b: np.ndarray,
                 deadline: float, config: BabConfig, progress: Callable[[dict], object] | None = None) -> SplitOutcome:
    """Prove ``A f(x) <= b`` unreachable over the box by splitting sigmoid / tanh pre-activations.

    Statuses: holds (log complete), timeout, unknown (domain limit, or no smooth neuron).
    Counterexamples are the portfolio's attacks' job: every domain covers the same input box.
    """
    t0 = time.monotonic()
    values = smooth_neurons(engine.graph)
    log = SmoothSplitLog()
    if not values:
        return SplitOutcome("unknown", log=log, stats={"note": "the network has no sigmoid / tanh to split"})
    dev, dtype = engine.device, engine.dtype
    lo = torch.as_tensor(np.asarray(lower), dtype=dtype, device=dev).reshape(1, -1)
    hi = torch.as_tensor(np.asarray(upper), dtype=dtype, device=dev).reshape(1, -1)
    C = torch.as_tensor(np.asarray(A), dtype=dtype, device=dev).unsqueeze(0)
    rhs = torch.as_tensor(np.asarray(b), dtype=dtype, device=dev)
    node_of = {v: node for node, v in values}
    value_of = {node: v for node, v in values}
    sizes = {v: engine.graph.node_map[node].size for node, v in values}
    neg = {v: torch.full((1, n), -math.inf, dtype=dtype, device=dev) for v, n in sizes.items()}
    pos = {v: torch.full((1, n), math.inf, dtype=dtype, device=dev) for v, n in sizes.items()}
    pending = _Domains(dict(neg), dict(pos), [0], [0], dict(neg), dict(pos))
    next_id, visited, max_depth = 1, 0, 0
    while pending.ids:
        if progress is not None:
            progress({"domains": visited, "pending": len(pending.ids)})
        if clock.now() >= deadline:
            return _outcome("timeout", log, visited, pending, max_depth, t0)
        if len(pending.ids) > config.max_domains:
            return _outcome("unknown", log, visited, pending, max_depth, t0, "domain limit")
        batch = pending.take(min(BATCH, len(pending.ids)))
        n = len(batch.ids)
        visited += n
        known = {v: (torch.maximum(batch.floors[v], batch.known_lo[v]).reshape((n,) + tuple(engine.graph.shape_of(v))),
                     torch.minimum(batch.caps[v], batch.known_hi[v]).reshape((n,) + tuple(engine.graph.shape_of(v))))
                 for v in sizes}
        res = engine.compute(lo.expand(n, -1), hi.expand(n, -1), C.expand(n, -1, -1), method="crown",
                             intermediate=known, want_upper=False)
        bounds = {v: (res.intermediate[v][0].reshape(n, -1), res.intermediate[v][1].reshape(n, -1)) for v in sizes}
        empty = _empty(bounds)
        margin, betas = res.lower - rhs, None
        if batch.depth and max(batch.depth) > 0 and not bool(((margin.max(1).values > 0) | empty).all()):
            margin, betas = _with_betas(engine, res.intermediate, batch, lo, hi, C, rhs, margin, node_of)
        best, row = margin.max(dim=1)
        proved = (best > 0) | empty
        for i in torch.nonzero(proved).flatten().tolist():   # an empty domain claims 1: the checker finds it empty
            bound = 1.0 if bool(empty[i]) else float(best[i])
            leaf_betas = None if betas is None or bool(empty[i]) else _path_betas(log, batch, i, int(row[i]), betas, value_of)
            log.leaves.append((batch.ids[i], int(row[i]), bound, leaf_betas))
        open_ = [i for i in range(n) if not bool(proved[i])]
        if not open_:
            continue
        children = _split(engine, batch, open_, bounds, node_of, next_id, log, res.intermediate, C[0][row[open_]])
        if children is None:
            return _outcome("unknown", log, visited, pending, max_depth, t0, "a domain has no neuron left to split")
        next_id += 2 * len(open_)
        max_depth = max(max_depth, max(batch.depth[i] for i in open_) + 1)
        pending.add(children)
    return _outcome("holds", log, visited, pending, max_depth, t0)


def _with_betas(engine, intermediate: dict, batch: _Domains, lo, hi, C, rhs, crown_margin, node_of):
    """Margins [n, R] with optimised split multipliers (the better of them and CROWN's per row), and
    the multipliers {value: (beta_cap, beta_floor) [n, R, size]} at the best margins."""
    graph, n = engine.graph, len(batch.ids)
    R = C.shape[1]
    A_spec = C.expand(n, -1, -1).reshape((n, R) + tuple(graph.output_shape))
    box = (lo.expand(n, -1).reshape((n,) + tuple(graph.input_shape)), hi.expand(n, -1).reshape((n,) + tuple(graph.input_shape)))
    bounds = dict(intermediate)
    bounds[graph.input_name] = box
    masks = {v: (torch.isfinite(batch.caps[v]).unsqueeze(1), torch.isfinite(batch.floors[v]).unsqueeze(1)) for v in batch.caps}
    caps = {v: torch.nan_to_num(batch.caps[v], posinf=0.0).unsqueeze(1) for v in batch.caps}
    floors = {v: torch.nan_to_num(batch.floors[v], neginf=0.0).unsqueeze(1) for v in batch.floors}
    params = {v: (torch.zeros((n, R, t.shape[1]), dtype=t.dtype, device=t.device).requires_grad_(),
                  torch.zeros((n, R, t.shape[1]), dtype=t.dtype, device=t.device).requires_grad_()) for v, t in batch.caps.items()}
    value_of = {node: v for v, node in node_of.items()}
    opt = Adam([([p for pair in params.values() for p in pair], BETA_LR)], 0.98)
    best, best_params = crown_margin.detach().clone(), {v: (torch.zeros_like(c), torch.zeros_like(f)) for v, (c, f) in params.items()}

    def relax(node) -> RelaxState:
        l, u = bounds[node.inputs[0]]
        lines = tuple(t.unsqueeze(1) for t in OPS[node.op].relax(node, l, u))
        v = value_of.get(node.name)
        if v is None:
            return RelaxState(*lines)
        bc, bf = params[v]
        extra = bc * masks[v][0] - bf * masks[v][1]              # cap: +beta z; floor: -beta z
        return RelaxState(*lines, extra_A=extra.reshape((n, R) + tuple(node.shape)))

    for _ in range(BETA_STEPS):
        with torch.enable_grad():
            A_x, bias = backward_to_input(graph, graph.output_name, A_spec, bounds, relax, engine.scope[graph.output_name])
            const = sum(((bf * masks[v][1] * floors[v]) - (bc * masks[v][0] * caps[v])).sum(-1) for v, (bc, bf) in params.items())
            low = concretize_lower(A_x, bias + const, box, R) - rhs
        cur = low.detach()
        improved = cur > best
        best = torch.where(improved, cur, best)
        for v, (bc, bf) in params.items():
            keep = improved.unsqueeze(-1)
            best_params[v] = (torch.where(keep, bc.detach(), best_params[v][0]), torch.where(keep, bf.detach(), best_params[v][1]))
        if bool((best.max(1).values > 0).all()):
            break
        opt.zero_grad()
        (-low.sum()).backward()
        opt.step()
        with torch.no_grad():
            for pair in params.values():
                for t in pair:
                    t.clamp_(min=0)
    return best, best_params


def _path_betas(log: SmoothSplitLog, batch: _Domains, i: int, row: int, betas: dict, value_of: dict) -> np.ndarray:
    """One beta per split on domain i's path (root first): its neuron's multiplier where the split is
    the tightest cap / floor of that neuron (the one the domain holds), 0 for a looser repeat."""
    path = log.path(batch.ids[i])
    out = np.zeros(len(path))
    used = set()
    for j in reversed(range(len(path))):
        node, k, at, sign = path[j]
        v = value_of[node]
        held = float(batch.caps[v][i, k]) if sign < 0 else float(batch.floors[v][i, k])
        if (node, k, sign) in used or at != held:
            continue
        used.add((node, k, sign))
        out[j] = float(betas[v][0 if sign < 0 else 1][i, row, k])
    return out


def _empty(bounds: dict) -> torch.Tensor:
    """Domains whose split constraints leave some pre-activation interval empty (l > u by a clear margin).

    The margin is well above the checker's own emptiness tolerance, so a domain called empty here
    is empty there too (its float64 bounds are at least as tight on these intervals).
    """
    out = None
    for l, u in bounds.values():
        crossed = (l > u + EMPTY_MARGIN * (1 + l.abs() + u.abs())).any(dim=1)
        out = crossed if out is None else out | crossed
    return out


def _split(engine, batch: _Domains, open_: list[int], bounds: dict, node_of: dict, next_id: int,
           log: SmoothSplitLog, intermediate: dict, rows) -> _Domains | None:
    """Both children of every open domain: the best-scored neuron split at 0 or its midpoint."""
    scores = _scores(engine, intermediate, open_, node_of, rows)
    names = list(bounds)
    floors = {v: batch.floors[v][open_].repeat_interleave(2, 0) for v in names}
    caps = {v: batch.caps[v][open_].repeat_interleave(2, 0) for v in names}
    ids, depth = [], []
    for j, i in enumerate(open_):
        flat = torch.cat([scores[v][j] for v in names])
        k = int(flat.argmax())
        if not float(flat[k]) > 0:
            return None
        for v in names:
            if k < scores[v].shape[1]:
                break
            k -= scores[v].shape[1]
        l, u = float(bounds[v][0][i, k]), float(bounds[v][1][i, k])
        at = 0.0 if l < 0.0 < u else float(torch.tensor((l + u) / 2, dtype=floors[v].dtype))  # exact in the domain's dtype
        if not l < at < u:
            return None
        low, high = next_id + 2 * j, next_id + 2 * j + 1
        caps[v][2 * j, k] = min(float(caps[v][2 * j, k]), at)
        floors[v][2 * j + 1, k] = max(float(floors[v][2 * j + 1, k]), at)
        log.add_split(batch.ids[i], node_of[v], k, at, low, high)
        ids += [low, high]
        depth += [batch.depth[i] + 1] * 2
    known_lo = {v: bounds[v][0][open_].repeat_interleave(2, 0) for v in names}
    known_hi = {v: bounds[v][1][open_].repeat_interleave(2, 0) for v in names}
    return _Domains(floors, caps, ids, depth, known_lo, known_hi)


def _scores(engine, intermediate: dict, open_: list[int], node_of: dict, rows) -> dict[str, torch.Tensor]:
    """Per open domain and neuron: the estimated bound gain of splitting it (BaBSR-style).

    One backward CROWN pass of the row closest to proved records the coefficient ``a_k`` of the
    objective on each activation's output; the neuron's relaxation gap is the largest distance
    between its upper and lower lines over its interval. ``|a_k| x gap_k`` is what the neuron's
    relaxation costs the bound, and a split at the inflection point or midpoint removes most of it.
    """
    graph = engine.graph
    sub = {name: (lo[open_], hi[open_]) for name, (lo, hi) in intermediate.items()}
    A = rows.reshape((len(open_), 1) + tuple(graph.output_shape))
    lines = {}

    def relax(node) -> RelaxState:
        l, u = sub[node.inputs[0]]
        state = tuple(t.unsqueeze(1) for t in OPS[node.op].relax(node, l, u))
        lines[node.name] = state
        return RelaxState(*state)

    record: dict = {}
    with torch.no_grad():
        backward_to_input(graph, graph.output_name, A, sub, relax, engine.scope[graph.output_name], record)
    out = {}
    for v, node in node_of.items():
        l, u = (t.reshape(len(open_), -1) for t in sub[v])
        if node not in record:
            out[v] = torch.zeros_like(l)
            continue
        lw, lb, uw, ub = (t.reshape(len(open_), -1) for t in lines[node])
        gap = torch.maximum((uw - lw) * l + (ub - lb), (uw - lw) * u + (ub - lb)).clamp(min=0)
        a = record[node].reshape(len(open_), -1).abs()
        out[v] = torch.where(torch.isfinite(gap) & (u > l), a * gap, torch.zeros_like(gap))
    return out


def _outcome(status: str, log: SmoothSplitLog, visited: int, pending: _Domains, depth: int, t0: float,
             note: str = "") -> SplitOutcome:
    stats = {"domains": visited, "pending": len(pending.ids), "max_depth": depth, "time": round(time.monotonic() - t0, 4)}
    if note:
        stats["note"] = note
    return SplitOutcome(status, log=log, stats=stats)
