"""Falsification: random search, then sign-gradient PGD inside every input box of a spec.

The search runs in float32 torch on the canonical graph; it only proposes candidates. Every
candidate is confirmed by ``verifier.counterexample.validate_batch`` (onnxruntime on the original
file, exact box membership, zero tolerance) and only confirmed witnesses are returned.

Per region, a polytope's margin is ``max_i (A_i y - b_i)`` (<= 0 means unsafe). The search:

1. random search: uniform samples and random corners of each box; any sample with margin <= 0
   is validated at once, and the samples with the smallest margin seed PGD (margin-aware starts);
2. PGD, all restarts of many targets in one batch: a target is either one polytope of a region
   (loss: its margin) or a whole region with several polytopes (loss: the smallest polytope
   margin, i.e. whichever disjunct is currently closest). Starts: box center, the best random
   samples, random corners, uniform points. Steps are ``alpha_t * width * sign(grad)`` with a
   cosine-decayed ``alpha_t`` and clamping into the box (width-0 dims never move).

The deadline (``time.monotonic()`` value) is checked before every step and every validation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from verifier import clock
from verifier.config import AttackConfig
from verifier.counterexample import Counterexample, Runner, network_dtype, network_point, validate_batch
from verifier.model.graph import Graph
from verifier.spec.spec import Spec

_PAD = 1e30  # margin padding: padded rows never bind, padded polytopes never win
_ELEMENT_BUDGET = 1 << 24  # gathered constraint coefficients per batch
_MAX_BATCH = 1024  # samples per forward pass
_VALIDATE_TOP = 4  # candidates confirmed per reference run
_ALPHA_FLOOR = 0.02  # final step size, as a fraction of the initial one


@dataclass(frozen=True, eq=False)
class SpecTensors:
    """A spec's boxes and polytopes as padded float32 tensors on one device."""

    lower: torch.Tensor  # [R, n]
    upper: torch.Tensor  # [R, n]
    A: torch.Tensor  # [P + 1, m, n_outputs]; the last polytope is a never-satisfied sentinel
    b: torch.Tensor  # [P + 1, m]
    region_polys: torch.Tensor  # [R, K] polytope ids per region, padded with the sentinel
    n_polys: tuple[int, ...]  # real polytopes per region

    @property
    def max_polys(self) -> int:
        """K: polytope slots per region."""
        return self.region_polys.shape[1]


def spec_tensors(spec: Spec, device) -> SpecTensors:
    """Pack a spec into padded tensors (float32) on ``device``."""
    polys = [p for r in spec.regions for p in r.unsafe]
    m = max([p.A.shape[0] for p in polys] + [1])
    A = np.zeros((len(polys) + 1, m, spec.n_outputs), dtype=np.float64)
    b = np.full((len(polys) + 1, m), _PAD)
    b[-1] = -_PAD
    for i, p in enumerate(polys):
        A[i, :p.A.shape[0]] = p.A
        b[i, :p.A.shape[0]] = p.b
    k = max([len(r.unsafe) for r in spec.regions] + [1])
    ids = np.full((len(spec.regions), k), len(polys), dtype=np.int64)
    start = 0
    for ri, r in enumerate(spec.regions):
        ids[ri, :len(r.unsafe)] = np.arange(start, start + len(r.unsafe))
        start += len(r.unsafe)

    def f32(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)

    return SpecTensors(f32([r.lower for r in spec.regions]), f32([r.upper for r in spec.regions]),
                       f32(A), f32(b), torch.as_tensor(ids, device=device),
                       tuple(len(r.unsafe) for r in spec.regions))


def region_rows(st: SpecTensors, y: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Row values A_i y - b_i of every polytope slot of each sample's region: [B, K, m].

    Padded rows are hugely negative (never bind); sentinel slots are hugely positive.
    """
    ids = st.region_polys[region]
    return torch.einsum("bkmo,bo->bkm", st.A[ids], y) - st.b[ids]


def region_margins(st: SpecTensors, y: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Margin of each polytope slot of each sample's region: [B, K] (sentinel slots: huge)."""
    return region_rows(st, y, region).amax(dim=2)


def target_loss(rows: torch.Tensor, focus: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """Per-sample loss [B] from rows [B, K, m]: the focused polytope's, or the smallest over K.

    A polytope's loss is its margin ``max_i r_i``, or for ``smooth`` samples
    ``sum_i relu(r_i) + min(max_i r_i, 0)`` (every unmet row pulls; once all hold, go deeper).
    """
    margin = rows.amax(dim=2)
    soft = torch.relu(rows).sum(dim=2) + margin.clamp(max=0.0)
    per_poly = torch.where(smooth[:, None], soft, margin)
    own = per_poly.gather(1, focus.clamp(min=0)[:, None]).squeeze(1)
    return torch.where(focus >= 0, own, per_poly.min(dim=1).values)


def cosine_alpha(step_size: float, t: int, steps: int) -> float:
    """Step fraction at step ``t``: cosine decay from ``step_size`` to a small floor."""
    frac = 0.5 * (1.0 + math.cos(math.pi * t / max(steps - 1, 1)))
    return step_size * (_ALPHA_FLOOR + (1.0 - _ALPHA_FLOOR) * frac)


def _graph_device(graph: Graph, device) -> torch.device:
    """The requested device, else the device of the graph's parameters, else CPU."""
    if device is not None:
        return torch.device(device)
    for node in graph.nodes:
        for t in node.params.values():
            if t is not None:
                return t.device
    return torch.device("cpu")


def _uniform(gen: torch.Generator, lo: torch.Tensor, hi: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` uniform points in the box [lo, hi] (lo, hi: [n])."""
    u = torch.rand((count, lo.shape[0]), generator=gen).to(lo.device)
    return lo + u * (hi - lo)


def _corners(gen: torch.Generator, lo: torch.Tensor, hi: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` random vertices of the box [lo, hi]."""
    pick = (torch.rand((count, lo.shape[0]), generator=gen) < 0.5).to(lo.device)
    return torch.where(pick, hi, lo)


class Falsifier:
    """One attack run: the graph, packed spec, runner, RNG and deadline it shares across phases."""

    def __init__(self, graph: Graph, spec: Spec, runner: Runner, config: AttackConfig,
                 deadline: float | None, device, exact_inputs: bool = True):
        """Move the graph to ``device`` in float32 and pack the spec."""
        self.exact_inputs = exact_inputs
        self.device = _graph_device(graph, device)
        self.graph = graph.to(self.device, torch.float32)
        self.spec, self.runner, self.config, self.deadline = spec, runner, config, deadline
        self.st = spec_tensors(spec, self.device)
        self.gen = torch.Generator().manual_seed(config.seed)
        # per (region, polytope slot): smallest torch margin already refuted by the runner
        self.rejected = torch.full((len(spec.regions), self.st.max_polys), math.inf, device=self.device)
        k = self.st.max_polys * self.st.A.shape[1] * self.st.A.shape[2]
        self.max_batch = max(1, min(_MAX_BATCH, _ELEMENT_BUDGET // max(k, 1)))
        dtype = network_dtype(runner)
        self.live = [ri for ri, r in enumerate(spec.regions)  # regions that can hold a witness
                     if r.unsafe and network_point(r.lower, r.lower, r.upper, dtype, exact_inputs) is not None]

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.deadline is not None and clock.now() >= self.deadline

    def rows(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """Constraint rows [B, K, m] of flat inputs x [B, n] in their regions."""
        y = self.graph.forward(x.reshape((x.shape[0],) + tuple(self.graph.input_shape)))
        return region_rows(self.st, y.reshape(x.shape[0], -1).to(torch.float32), region)

    def margins(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """Polytope margins [B, K] of flat inputs x [B, n] in their regions."""
        return self.rows(x, region).amax(dim=2)

    def check(self, x: torch.Tensor, region: torch.Tensor, margins: torch.Tensor) -> Counterexample | None:
        """Confirm the best torch candidates (some margin <= 0, below what was refuted) on the runner."""
        margins = margins.detach()
        eligible = (margins <= 0.0) & (margins < self.rejected[region])
        if not bool(eligible.any()) or self.expired():
            return None
        score = torch.where(eligible, margins, torch.full_like(margins, math.inf)).min(dim=1).values
        order = torch.argsort(score)[:_VALIDATE_TOP]
        order = order[torch.isfinite(score[order])]
        xs = x.detach()[order].to(device="cpu", dtype=torch.float64).numpy()
        regions = [int(r) for r in region[order].tolist()]
        cex = validate_batch(self.runner, self.spec, xs, "attack", regions, self.exact_inputs)
        if cex is None:
            for i, ri in zip(order.tolist(), regions):
                self.rejected[ri] = torch.where(eligible[i], torch.minimum(self.rejected[ri], margins[i]),
                                                self.rejected[ri])
        return cex

    def random_search(self, count: int) -> tuple[Counterexample | None, dict]:
        """Uniform + corner samples in every box; a witness, or the best samples per target."""
        seeds: dict[tuple[int, int], torch.Tensor] = {}
        keep = max(self.config.restarts // 2, 1)
        per_chunk = max(1, self.max_batch // count)
        live = self.live
        for start in range(0, len(live), per_chunk):
            if self.expired():
                return None, seeds
            chunk = live[start:start + per_chunk]
            xs = torch.cat([self._samples(ri, count) for ri in chunk])
            region = torch.tensor(chunk, device=self.device).repeat_interleave(count)
            with torch.no_grad():
                m = self.margins(xs, region)
            cex = self.check(xs, region, m)
            if cex is not None:
                return cex, seeds
            for j, ri in enumerate(chunk):
                mr = m[j * count:(j + 1) * count, :self.st.n_polys[ri]]
                for k in self._focuses(ri):
                    score = mr.min(dim=1).values if k < 0 else mr[:, k]
                    seeds[(ri, k)] = xs[j * count:(j + 1) * count][torch.argsort(score)[:keep]]
        return None, seeds

    def _samples(self, ri: int, count: int) -> torch.Tensor:
        """Random-search samples of region ``ri``: a quarter corners, the rest uniform."""
        lo, hi = self.st.lower[ri], self.st.upper[ri]
        n_corner = count // 4
        return torch.cat([_corners(self.gen, lo, hi, n_corner), _uniform(self.gen, lo, hi, count - n_corner)])

    def _focuses(self, ri: int) -> list[int]:
        """PGD targets of a region: each polytope, plus 'closest polytope' (-1) when several."""
        n = self.st.n_polys[ri]
        return ([-1] if n > 1 else []) + list(range(n))

    def starts(self, ri: int, k: int, seeds: dict) -> torch.Tensor:
        """PGD starting points of one target: center, best random samples, corners, uniform."""
        count = min(self.config.restarts, self.max_batch)
        lo, hi = self.st.lower[ri], self.st.upper[ri]
        parts = [((lo + hi) / 2)[None]]
        if (ri, k) in seeds:
            parts.append(seeds[(ri, k)][:max(count // 2, 0)])
        parts.append(_corners(self.gen, lo, hi, count // 8))
        have = sum(p.shape[0] for p in parts)
        parts.append(_uniform(self.gen, lo, hi, max(count - have, 0)))
        return torch.cat(parts)[:count]

    def pgd(self, x: torch.Tensor, region: torch.Tensor, focus: torch.Tensor) -> Counterexample | None:
        """Sign-gradient descent of each sample's target loss, projected into its box.

        Samples alternate between the hard margin loss and the smooth one (``target_loss``).
        """
        lo, hi = self.st.lower[region], self.st.upper[region]
        width = hi - lo
        smooth = torch.arange(x.shape[0], device=x.device) % 2 == 1
        steps = self.config.steps
        for t in range(steps + 1):
            if self.expired():
                return None
            x = x.detach().requires_grad_(t < steps)
            with torch.set_grad_enabled(t < steps):
                rows = self.rows(x, region)
            cex = self.check(x, region, rows.detach().amax(dim=2))
            if cex is not None or t == steps:
                return cex
            loss = target_loss(rows, focus, smooth)
            (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
            if grad is None or not bool(torch.any(grad != 0)):
                return None  # flat everywhere (e.g. sign activations): nothing to follow
            step = cosine_alpha(self.config.step_size, t, steps) * width * grad.sign()
            x = torch.maximum(torch.minimum(x.detach() - step, hi), lo)
        return None

    def run_pgd(self, seeds: dict) -> Counterexample | None:
        """PGD over every target, the restarts of as many targets as fit in one batch."""
        targets = [(ri, k) for ri in self.live for k in self._focuses(ri)]
        per_chunk = max(1, self.max_batch // max(self.config.restarts, 1))
        for start in range(0, len(targets), per_chunk):
            if self.expired():
                return None
            chunk = targets[start:start + per_chunk]
            xs = [self.starts(ri, k, seeds) for ri, k in chunk]
            sizes = torch.tensor([x.shape[0] for x in xs], device=self.device)
            region = torch.tensor([ri for ri, _ in chunk], device=self.device).repeat_interleave(sizes)
            focus = torch.tensor([k for _, k in chunk], device=self.device).repeat_interleave(sizes)
            cex = self.pgd(torch.cat(xs), region, focus)
            if cex is not None:
                return cex
        return None


def attack(graph: Graph, spec: Spec, runner: Runner, config: AttackConfig,
           deadline: float | None = None, device=None, *, exact_inputs: bool = True) -> Counterexample | None:
    """Search for a runner-confirmed counterexample: random search, then PGD with restarts.

    ``deadline`` is a ``time.monotonic()`` value; ``device`` defaults to the graph's device;
    ``exact_inputs`` is passed to ``validate_batch`` (False admits input-rounded witnesses).
    Returns None when nothing is confirmed (which proves nothing about the property).
    """
    if spec.n_inputs != graph.n_inputs or spec.n_outputs != graph.n_outputs:
        raise ValueError(f"spec has {spec.n_inputs} inputs / {spec.n_outputs} outputs, graph has "
                         f"{graph.n_inputs} / {graph.n_outputs}")
    if not any(r.unsafe for r in spec.regions):
        return None
    with torch.enable_grad():
        search = Falsifier(graph, spec, runner, config, deadline, device, exact_inputs)
        cex, seeds = search.random_search(min(max(8 * config.restarts, 64), search.max_batch))
        if cex is not None or config.restarts <= 0:
            return cex
        return search.run_pgd(seeds)
