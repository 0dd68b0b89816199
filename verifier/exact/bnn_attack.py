"""Falsifying binarized networks before (and beside) the SAT encoding.

* ``falsify``: a straight-through-estimator attack. Sign has zero gradient almost everywhere, so
  the backward pass replaces sign' by a clipped identity (hardtanh': 1 on |v| <= scale, else 0,
  ``scale`` the spread of that layer's pre-activations); PGD with random restarts moves on that
  gradient while every iterate is scored by the real forward margin. A local search follows
  from the best point: per round, single-coordinate moves to box corners (and the zero crossing
  of the first sign, where there is one) ranked by the STE gradient, scored by the real margin,
  the best taken (or all improving moves together when that is better).
* ``sample_patterns``: random first-layer sign patterns plus greedy moves (the SAT pre-pass).

Every candidate they return is only a candidate: callers confirm it (``confirms`` here in the
network dtype and float64, and onnxruntime on the original file before anything is reported).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import time
import weakref

import numpy as np
import torch

from verifier import clock
from verifier.exact.bnn_structure import BnnStructure
from verifier.model.graph import Graph
from verifier.model.ops import evaluate
from verifier.spec.spec import Polytope, Region

MOVES_PER_ROUND = 128   # candidate single-coordinate moves scored per local-search round
BATCH = 64              # rows per forward pass when scoring candidates


def inside_f32(x: float, lo: float, hi: float) -> float:
    """A float32-representable value near x inside [lo, hi] when one exists, else x."""
    c = np.float32(x)
    for cand in (c, np.nextafter(c, np.float32(np.inf)), np.nextafter(c, np.float32(-np.inf))):
        if lo <= float(cand) <= hi and np.sign(float(cand)) == np.sign(x):
            return float(cand)
    return x


def _torch_dtype(dtype):
    """The torch type of a numpy float type."""
    return {np.float64: torch.float64, np.float16: torch.float16}.get(dtype, torch.float32)


_COPIES: "weakref.WeakKeyDictionary[Graph, dict]" = weakref.WeakKeyDictionary()


def as_dtype(graph: Graph, t: torch.dtype) -> Graph:
    """``graph.to(dtype=t)``, made once per graph and dtype (the attack scores thousands of batches)."""
    per = _COPIES.setdefault(graph, {})
    if t not in per:
        per[t] = graph.to(dtype=t)
    return per[t]


def margins(graph: Graph, xs: np.ndarray, polys: tuple[Polytope, ...], dtype, both: bool = True,
            deadline: float | None = None) -> np.ndarray:
    """Per sample, min over polytopes of max_r (A y - b)_r: the worst of the network dtype and float64
    (``both``), or the network dtype alone. Rows left unscored at the deadline get +inf."""
    worst = np.full(len(xs), -np.inf)
    for t in (_torch_dtype(dtype), torch.float64) if both else (_torch_dtype(dtype),):
        g = as_dtype(graph, t)
        y = np.full((len(xs), graph.n_outputs), np.nan)
        for i in range(0, len(xs), BATCH):
            if deadline is not None and i and clock.now() > deadline:
                break
            chunk = torch.as_tensor(xs[i:i + BATCH], dtype=t).reshape((-1,) + tuple(graph.input_shape))
            with torch.no_grad():
                y[i:i + len(chunk)] = g.forward(chunk).reshape(len(chunk), -1).double().numpy()
        m = np.min([np.max(y @ p.A.T - p.b, axis=1) if len(p.b) else np.full(len(y), -np.inf) for p in polys], axis=0)
        worst = np.maximum(worst, np.nan_to_num(m, nan=np.inf))
    return worst


def confirms(graph: Graph, x: np.ndarray, region: Region, polys: tuple[Polytope, ...], dtype) -> int | None:
    """Index of a polytope that x (inside the box) reaches in the network dtype and in float64."""
    if not region.contains(x):
        return None
    ys = []
    for t in (_torch_dtype(dtype), torch.float64):
        xt = torch.as_tensor(x, dtype=t).reshape((1,) + tuple(graph.input_shape))
        with torch.no_grad():
            ys.append(as_dtype(graph, t).forward(xt).reshape(-1).double().numpy())
    for i, poly in enumerate(polys):
        if all(np.all(np.isfinite(y)) and poly.satisfied_by(y) for y in ys):
            return i
    return None


def sign_points(s: BnnStructure, region: Region) -> list[np.ndarray]:
    """Per input, the points worth trying: both box ends and the sign change (each sign it can take)."""
    chain, points = s.layers[0].chain, [np.array([(lo + hi) / 2]) for lo, hi in zip(region.lower, region.upper)]
    for p, i in enumerate(chain.src.tolist()):
        if i < 0:
            continue
        lo, hi = float(region.lower[i]), float(region.upper[i])
        a, c = chain.exact(p)
        zero = [min(max(float(-c / a), lo), hi)] if a != 0 else []
        points[i] = np.unique([inside_f32(v, lo, hi) for v in [lo, hi] + zero])
    return points


def sample_patterns(graph: Graph, s: BnnStructure, region: Region, polys, samples: int, seed: int,
                    deadline: float) -> np.ndarray | None:
    """Random sign patterns, then greedy one-input moves on the margin; a violating x or None."""
    points = sign_points(s, region)
    free = [i for i, pts in enumerate(points) if len(pts) > 1]
    rng = np.random.default_rng(seed)
    xs = np.array([[pts[rng.integers(len(pts))] for pts in points] for _ in range(max(samples, 1))])
    m_all = margins(graph, xs, polys, s.dtype, both=False, deadline=deadline)
    best, m = xs[int(np.argmin(m_all))], float(m_all.min())
    last = 0.0
    for _ in range(8 if free else 0):
        if m <= 0 or clock.now() + last > deadline:
            break
        t0 = time.monotonic()
        moves = [(i, v) for i in rng.permutation(free).tolist() for v in points[i] if v != best[i]][:MOVES_PER_ROUND]
        cand = np.repeat(best[None], len(moves), axis=0)
        for row, (i, v) in enumerate(moves):
            cand[row, i] = v
        cm = margins(graph, cand, polys, s.dtype, both=False, deadline=deadline)
        last = time.monotonic() - t0
        if cm.min() >= m:
            break
        best, m = cand[int(np.argmin(cm))], float(cm.min())
    return best if m <= 0 and confirms(graph, best, region, polys, s.dtype) is not None else None


def _random_corner(values: list[np.ndarray], free: list[int], x: np.ndarray, rng) -> np.ndarray:
    """x with every free coordinate set to one of its candidate values at random."""
    y = x.copy()
    for i in free:
        y[i] = values[i][rng.integers(len(values[i]))]
    return y


# ----------------------------------------------------------------------------- STE attack


@dataclass
class FalsifyStats:
    """What the falsifier did: PGD steps, local-search rounds, best real margin, seconds."""

    pgd_steps: int = 0
    local_rounds: int = 0
    climbs: int = 1
    best_margin: float = float("inf")
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)


def ste_forward(graph: Graph, x: torch.Tensor) -> torch.Tensor:
    """The graph's output with sign' replaced by a clipped identity scaled to each layer's spread."""
    values = {graph.input_name: x}
    for node in graph.nodes:
        ins = [values[i] for i in node.inputs]
        if node.op == "sign":
            v = ins[0]
            scale = v.detach().abs().mean().clamp(min=1e-3)
            h = torch.clamp(v / scale, -1.0, 1.0)
            values[node.name] = torch.sign(v).detach() + h - h.detach()
        else:
            values[node.name] = evaluate(node, ins)
    return values[graph.output_name]


def _soft_margin(y: torch.Tensor, polys: tuple[Polytope, ...]) -> torch.Tensor:
    """Per sample min over polytopes of max_r (A y - b)_r (the quantity to drive <= 0)."""
    per = []
    for p in polys:
        if len(p.b) == 0:
            per.append(torch.full((y.shape[0],), -1.0, dtype=y.dtype))
            continue
        A = torch.tensor(np.array(p.A), dtype=y.dtype)
        b = torch.tensor(np.array(p.b), dtype=y.dtype)
        per.append((y @ A.T - b).max(dim=1).values)
    return torch.stack(per, 1).min(dim=1).values


def _gradient(graph: Graph, x: np.ndarray, polys, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(STE gradient of the margin, STE margin) for a batch of flat inputs."""
    xt = torch.as_tensor(x, dtype=dtype).reshape((-1,) + tuple(graph.input_shape)).requires_grad_(True)
    loss = _soft_margin(ste_forward(graph, xt).reshape(len(x), -1), polys)
    loss.sum().backward()
    return xt.grad.reshape(len(x), -1).double().numpy(), loss.detach().double().numpy()


def _corner_values(region: Region, s: BnnStructure | None) -> list[np.ndarray]:
    """Per input, the candidate values of a local move (box ends, and the first sign's zero crossing)."""
    if s is not None:
        return sign_points(s, region)
    return [np.unique([lo, hi]) for lo, hi in zip(region.lower, region.upper)]


def _pgd(graph: Graph, region: Region, polys, dtype, rng, restarts: int, steps: int, deadline: float,
         stats: FalsifyStats) -> tuple[np.ndarray, float]:
    """Sign-gradient PGD on the STE margin; the best iterate by the real margin."""
    lo, hi = region.lower, region.upper
    width = hi - lo
    x = lo + rng.random((restarts, len(lo))) * width
    x[0] = (lo + hi) / 2
    g32 = as_dtype(graph, _torch_dtype(dtype))
    best_x, best_m, last = x[0].copy(), np.inf, 0.0
    for k in range(steps):
        if clock.now() + last > deadline:
            break
        t0 = time.monotonic()
        grad, _ = _gradient(g32, x, polys, _torch_dtype(dtype))
        real = margins(graph, x, polys, dtype, both=False)
        last = time.monotonic() - t0
        i = int(np.argmin(real))
        if real[i] < best_m:
            best_x, best_m = x[i].copy(), float(real[i])
        if best_m <= 0:
            break
        step = width * (0.5 * (1 - k / steps) + 0.02)
        x = np.clip(x - step * np.sign(grad), lo, hi)
        stats.pgd_steps += 1
    return best_x, best_m


def _climb(g32: Graph, graph: Graph, polys, dtype, x: np.ndarray, m: float, values: list[np.ndarray],
           free: np.ndarray, deadline: float, stats: FalsifyStats) -> tuple[np.ndarray, float]:
    """One greedy descent: coordinate moves ranked by the STE gradient, scored by the real margin."""
    last = 0.0
    while m > 0 and clock.now() + last < deadline:
        t0 = time.monotonic()
        grad, _ = _gradient(g32, x[None], polys, _torch_dtype(dtype))
        moves = [(i, v) for i in free for v in values[i] if v != x[i]]
        if not moves:
            break
        gain = np.array([grad[0, i] * (v - x[i]) for i, v in moves])  # linearised change of the margin
        order = np.argsort(gain)[:MOVES_PER_ROUND]
        cand = np.repeat(x[None], len(order), axis=0)
        for row, j in enumerate(order):
            i, v = moves[j]
            cand[row, i] = v
        cm = margins(graph, cand, polys, dtype, both=False, deadline=deadline)
        stats.local_rounds += 1
        improving = np.flatnonzero(cm < m)
        if len(improving) == 0:
            break
        best = cand[int(np.argmin(cm))]
        together = x.copy()
        for r in improving:
            i, v = moves[order[r]]
            together[i] = v
        tm = float(margins(graph, together[None], polys, dtype, both=False)[0])
        x, m = (together, tm) if tm < float(cm.min()) else (best, float(cm.min()))
        last = time.monotonic() - t0
    return x, m


def _local_search(graph: Graph, polys, dtype, x: np.ndarray, m: float, values: list[np.ndarray], rng,
                  deadline: float, stats: FalsifyStats, climbs: int = 32) -> tuple[np.ndarray, float]:
    """Iterated greedy descent: from x, then from kicked copies of the best point and random corners."""
    free = np.array([i for i, v in enumerate(values) if len(v) > 1])
    if len(free) == 0:
        return x, m
    g32 = as_dtype(graph, _torch_dtype(dtype))
    best_x, best_m = _climb(g32, graph, polys, dtype, x, m, values, free, deadline, stats)
    for k in range(1, climbs):
        if best_m <= 0 or clock.now() >= deadline:
            break
        kick = free[rng.random(len(free)) < 0.1] if k % 2 else free
        start = _random_corner(values, kick.tolist(), best_x, rng)
        m0 = float(margins(graph, start[None], polys, dtype, both=False)[0])
        x, m = _climb(g32, graph, polys, dtype, start, m0, values, free, deadline, stats)
        stats.climbs = k + 1
        if m < best_m:
            best_x, best_m = x, m
    return best_x, best_m


def falsify(graph: Graph, region: Region, polys: tuple[Polytope, ...], deadline: float, *,
            structure: BnnStructure | None = None, dtype=np.float32, restarts: int = 8, steps: int = 40,
            seed: int = 0) -> tuple[np.ndarray | None, FalsifyStats]:
    """STE-PGD then local search inside the region's box; a candidate confirmed by ``confirms``, or None."""
    t0 = time.monotonic()
    stats = FalsifyStats()
    rng = np.random.default_rng(seed)
    polys = tuple(p for p in polys)
    if not polys:
        return None, stats
    half = t0 + 0.5 * max(deadline - clock.now(), 0.0)  # PGD gets half, the local search the rest
    x, m = _pgd(graph, region, polys, dtype, rng, restarts, steps, min(half, deadline), stats)
    stats.log.append(f"ste-pgd: {stats.pgd_steps} steps x {restarts} restarts, best real margin {m:.4g}")
    x = np.array([inside_f32(v, lo, hi) for v, lo, hi in zip(x, region.lower, region.upper)])
    m = float(margins(graph, x[None], polys, dtype, both=False)[0])
    if m > 0:
        values = _corner_values(region, structure)
        x, m = _local_search(graph, polys, dtype, x, m, values, rng, deadline, stats)
        stats.log.append(f"local search: {stats.climbs} climbs, {stats.local_rounds} rounds, best real margin {m:.4g}")
    stats.best_margin, stats.seconds = m, time.monotonic() - t0
    if m <= 0 and confirms(graph, x, region, polys, dtype) is not None:
        return x, stats
    return None, stats
