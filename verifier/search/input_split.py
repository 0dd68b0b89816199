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

from verifier import clock
from verifier.bounds import DeadlineReached
from verifier.bounds.box import outward_box
from verifier.config import BabConfig
from verifier.search.local import evolve
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
        out = self.select(slice(len(self) - n, None))
        self.__dict__.update(self.select(slice(0, len(self) - n)).__dict__)
        return out

    def select(self, index) -> "Pending":
        """The domains at ``index`` (a mask or a slice)."""
        inter = None if self.inter is None else {k: (l[index], u[index]) for k, (l, u) in self.inter.items()}
        return Pending(self.lo[index], self.hi[index], self.ids[index], self.depth[index], inter)

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


class CounterexampleHunt:
    """Where the search looks for counterexamples: probes of the open boxes, then local search.

    ``worst(y)``: the smallest margin over the target polytopes (<= 0: f(x) = y is unsafe).
    The lowest-margin points probed so far are kept; a share of the search time goes to an
    evolution strategy (``verifier.search.local``) started from them and from fresh samples.
    """

    KEEP = 64

    def __init__(self, graph, lo, hi, targets, validate, config: BabConfig, deadline: float):
        self.graph, self.lo, self.hi = graph, lo, hi
        self.targets = [(torch.tensor(A, dtype=lo.dtype, device=lo.device),
                         torch.tensor(b, dtype=lo.dtype, device=lo.device)) for A, b in targets]
        self.validate, self.config, self.deadline = validate, config, deadline
        self.gen = torch.Generator().manual_seed(0)   # the same run gives the same answer
        self.pool_x, self.pool_m = lo[:0], lo.new_zeros(0)
        self.spent, self.rounds, self.t0 = 0.0, 0, time.monotonic()

    def worst(self, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([(y @ A.T - b).max(dim=1).values for A, b in self.targets], 1).min(dim=1).values

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = self.graph.forward(x.reshape((x.shape[0],) + tuple(self.graph.input_shape)))
        return self.worst(y.reshape(x.shape[0], -1))

    def offer(self, x: torch.Tensor, worst: torch.Tensor):
        """Validate the deepest unsafe points (a counterexample, or None); keep the best points."""
        cex = _try_points(x, worst, self.validate)
        if cex is None:
            pool_x, pool_m = torch.cat([self.pool_x, x]), torch.cat([self.pool_m, worst])
            keep = torch.topk(pool_m, min(self.KEEP, len(pool_m)), largest=False).indices
            self.pool_x, self.pool_m = pool_x[keep], pool_m[keep]
        return cex

    def due(self) -> bool:
        """Whether local search has had less than its share of the time since the search began
        (the first quarter second excepted: most searches end within it)."""
        searched = time.monotonic() - self.t0 - 0.25
        return self.config.local_share > 0 and self.spent < self.config.local_share * searched

    def local_search(self):
        """One round of the evolution strategy from the kept points and the best of 64 times as
        many fresh samples of the whole box (the kept points cluster where the search is)."""
        t0 = time.monotonic()
        fresh = self.lo + torch.rand((self.KEEP * 64, self.lo.shape[1]), generator=self.gen,
                                     dtype=self.lo.dtype).to(self.lo.device) * (self.hi - self.lo)
        fresh = fresh[torch.topk(self.margin(fresh), self.KEEP, largest=False).indices]
        starts = torch.cat([self.pool_x, fresh])
        cex = evolve(self.margin, starts, self.lo[0], self.hi[0], self.config.local_steps, 16, self.gen,
                     lambda x, m: _try_points(x, m, self.validate), deadline=self.deadline)
        self.spent += time.monotonic() - t0
        self.rounds += 1
        return cex


def input_split(engine, graph, lower: np.ndarray, upper: np.ndarray, A: np.ndarray, b: np.ndarray,
                validate: Callable[[np.ndarray], object], deadline: float, config: BabConfig,
                device=None, dtype=torch.float32, falsify=None, workers: int = 1,
                progress: Callable[[dict], object] | None = None, offload=None,
                goal: tuple[int, int] = (0, 0), aux=None) -> SplitOutcome:
    """Prove ``A f(x) <= b`` unreachable over the box, or find a validated counterexample.

    ``aux`` ([m] bools, optional): rows that only restrict the inputs (a 2.0 query's linear input
    constraints). They count for proofs like any row but never choose the split dimension: the
    row closest to proved would otherwise be such a row, and its gradient ignores the network.
    ``falsify``: the polytopes [(A, b), ...] whose counterexamples the search looks for (default:
    this one; the portfolio passes every polytope of the region, since any of them settles it).
    ``workers`` > 1 (CPU): a search still open after ``config.parallel_after`` seconds (with at
    least two pending domains per worker) hands them to that many processes (this one and forked
    ones); see ``_parallel``. ``progress``, when given, is called before every batch with the
    counts ``{"domains": bounded so far, "pending": queued}`` (this process's share once forked).
    ``offload`` (a ``verifier.search.distribute.Offload``, e.g. the service's worker pool) takes
    precedence over ``workers``: after ``config.distribute_after`` seconds, chunks of the pending
    domains of goal ``goal`` (region, polytope) ship to it while this process searches the rest.
    """
    search = new_search(engine, graph, lower, upper, A, b, validate, deadline, config, device, dtype, falsify,
                        aux=aux)
    search.progress = progress
    if offload is not None:
        from verifier.search.distribute import search_with

        return search_with(search, deadline, offload, goal)
    if workers <= 1:
        return search.run(deadline)
    switch = time.monotonic() + config.parallel_after
    out = search.run(deadline, lambda: time.monotonic() >= switch and len(search.queue) >= 2 * workers)
    if out.status != "timeout" or clock.now() >= deadline:
        return out
    return _parallel(search, deadline, workers, progress)


def new_search(engine, graph, lower: np.ndarray, upper: np.ndarray, A: np.ndarray, b: np.ndarray, validate,
               deadline: float, config: BabConfig, device=None, dtype=torch.float32, falsify=None,
               queue: "Pending | None" = None, next_id: int = 1, aux=None) -> "Search":
    """A search of ``queue`` (default: the whole box, domain 0) for the polytope ``A y <= b``
    over the region box ``[lower, upper]``, numbering new domains from ``next_id``."""
    lo, hi = outward_box(lower, upper, dtype, device, (1, -1))
    C, bt = torch.tensor(A, dtype=dtype, device=device).unsqueeze(0), torch.tensor(b, dtype=dtype, device=device)
    if queue is None:
        zero = torch.zeros(1, dtype=torch.long, device=device)
        queue = Pending(lo, hi, zero, zero.clone())
    hunt = CounterexampleHunt(engine.graph, lo, hi, falsify or [(A, b)], validate, config, deadline)
    search = Search(engine, graph, (hi - lo)[0], C, bt, hunt, config, queue, next_id)
    if aux is not None and not np.all(aux):
        search.aux = torch.as_tensor(np.array(aux, dtype=bool), device=C.device)
    return search


class Search:
    """One depth-first input-split search: its pending domains, its log, and the loop that runs it."""

    def __init__(self, engine, graph, root_width, C, bt, hunt: CounterexampleHunt, config: BabConfig, queue: Pending,
                 next_id: int):
        self.engine, self.graph, self.root_width, self.C, self.bt = engine, graph, root_width, C, bt
        self.hunt, self.config, self.queue, self.next_id = hunt, config, queue, next_id
        self.log, self.visited, self.max_depth = SplitLog(), 0, 0
        self.progress: Callable[[dict], object] | None = None   # told the counts before every batch
        self.t0 = time.monotonic()
        self.size = min(64, config.batch)   # batch size: grows while one call stays short, so deadlines hold
        self.aux: torch.Tensor | None = None   # rows that never choose the split dimension (see input_split)

    def resume(self, queue: Pending, next_id: int) -> "Search":
        """A search of ``queue``'s domains with this one's settings (batch size included), numbering
        new domains from ``next_id``."""
        sub = Search(self.engine, self.graph, self.root_width, self.C, self.bt, self.hunt, self.config, queue, next_id)
        sub.size, sub.aux = self.size, self.aux
        return sub

    def outcome(self, status: str, cex=None, note: str = "") -> SplitOutcome:
        stats = _stats(self.visited, len(self.queue), self.max_depth, self.t0, note, self.hunt)
        return SplitOutcome(status, cex, self.log, stats)

    def run(self, deadline: float, stopped: Callable[[], bool] | None = None) -> SplitOutcome:
        """Bound and split until every domain is proved, a counterexample is confirmed, the
        deadline passes (timeout) or ``stopped()`` turns true (timeout too)."""
        engine, config, queue, hunt, C = self.engine, self.config, self.queue, self.hunt, self.C
        while len(queue):
            if self.progress is not None:
                self.progress({"domains": self.visited, "pending": len(queue)})
            if clock.now() >= deadline or (stopped is not None and stopped()):
                return self.outcome("timeout")
            if len(queue) > config.max_domains:
                return self.outcome("unknown", note="domain limit")
            if hunt.due():
                cex = hunt.local_search()
                if cex is not None:
                    return self.outcome("violated", cex)
                continue
            batch = queue.pop(min(self.size, len(queue)))
            self.visited += len(batch)
            t_call = time.monotonic()
            margin, inter, coeffs = _bound(engine, self.graph, batch, C.expand(len(batch), -1, -1), self.bt,
                                           config.method, config.input_branching in ("coeff", "both"))
            self.size = _next_size(self.size, len(batch), time.monotonic() - t_call, config.batch)
            best, row = margin.max(dim=1)
            proved = best > 0
            for i in torch.nonzero(proved).flatten().tolist():
                self.log.leaves.append((int(batch.ids[i]), int(row[i]), float(best[i])))
            open_ = ~proved
            if not open_.any():
                continue
            batch.inter = inter
            batch = batch.select(open_)
            if self.aux is not None:      # guide the split by the network's rows only
                row = margin.masked_fill(self.aux, -torch.inf).max(dim=1).indices
            centres, y, grad = centre_outputs(engine.graph, batch.lo, batch.hi, C[0][row[open_]])   # on its device
            slopes = None   # the bound's input coefficients for the row closest to proved
            if coeffs is not None:
                slopes = coeffs[open_].gather(1, row[open_].view(-1, 1, 1).expand(-1, 1, coeffs.shape[2]))[:, 0]
            cex = hunt.offer(*_probe(hunt, batch, centres, y, grad, slopes, config.samples))
            if cex is not None:
                return self.outcome("violated", cex)
            sens = [] if config.input_branching == "coeff" else [grad.abs()]
            if slopes is not None:
                sens.append(slopes)
            dims = choose_dims(batch.lo, batch.hi, self.root_width, sens)
            if bool(((batch.hi - batch.lo).gather(1, dims[:, None]) <= 0).any()):
                return self.outcome("unknown", note="point box not proved")
            low, high, self.next_id = _halves(batch, dims, self.next_id, self.log)
            queue.push(low)
            queue.push(high)
            self.max_depth = max(self.max_depth, int(batch.depth.max()) + 1)
        return self.outcome("holds")


CHUNKS_PER_WORKER = 4    # pending domains are dealt out in this many chunks per process, on demand
ID_STRIDE = 1 << 40      # domain ids of chunk k start at k * ID_STRIDE past the first search's


def _parallel(search: Search, deadline: float, workers: int, progress=None) -> SplitOutcome:
    """Continue an open search in ``workers`` processes: this one and forked ones (one torch thread
    each; fork needs a CPU-only run).

    The pending domains are cut into chunks; each process takes the next chunk from a shared
    counter and searches it, numbering its domains in a range of its own, so the chunks' logs
    join the first search's log into one tree. A counterexample, an unknown or a timeout in any
    chunk stops every process. Only this process reports ``progress`` (its own chunks).
    """
    import multiprocessing

    from verifier.forked import run_beside

    ctx = multiprocessing.get_context("fork")
    queue = search.queue
    n = min(len(queue), CHUNKS_PER_WORKER * workers)
    cuts = np.linspace(0, len(queue), n + 1).astype(int)
    chunks = [queue.select(slice(int(cuts[k]), int(cuts[k + 1]))) for k in range(n)]
    counter, stop = ctx.Value("i", 0), ctx.Event()

    def take(index: int) -> list[tuple]:
        if index:   # a forked worker draws its own random probes, not a copy of this process's
            search.hunt.gen.manual_seed(index)
        return _take_chunks(search, chunks, counter, stop, deadline, None if index else progress)

    mine, theirs = run_beside(lambda: take(0), [lambda k=k: take(k) for k in range(1, workers)], deadline)
    results = mine + [r for got in theirs for r in got or []]
    return _merge(search, results, n, workers)


def _take_chunks(search, chunks, counter, stop, deadline, progress=None) -> list[tuple]:
    """Search chunks taken from the shared counter: [(chunk, status, counterexample, log, stats)]."""
    done = []
    while not stop.is_set():
        with counter.get_lock():
            k = counter.value
            counter.value += 1
        if k >= len(chunks):
            break
        sub = search.resume(chunks[k], search.next_id + k * ID_STRIDE)
        sub.progress = _counted_from(search.visited + sum(r[4]["domains"] for r in done), progress)
        try:
            out = sub.run(deadline, stop.is_set)
        except DeadlineReached:   # the engine stopped inside a batch
            out = sub.outcome("timeout")
        done.append((k, out.status, out.counterexample, out.log, out.stats))
        if out.status != "holds":
            stop.set()
    return done


def _counted_from(base: int, progress):
    """``progress`` with ``base`` domains added to the count (None stays None)."""
    if progress is None:
        return None
    return lambda counts: progress(dict(counts, domains=counts["domains"] + base))


def _merge(search: Search, results: list[tuple], n_chunks: int, workers: int) -> SplitOutcome:
    """One outcome from the first search and its chunks' results."""
    log = search.log
    stats = dict(search.outcome("timeout").stats, workers=workers, chunks=n_chunks)
    stats["domains"] += sum(r[4]["domains"] for r in results)
    stats["pending"] = sum(r[4]["pending"] for r in results if r[1] != "holds")
    stats["max_depth"] = max([stats["max_depth"]] + [r[4]["max_depth"] for r in results])
    for _, _, _, sub, _ in results:
        log.splits.extend(sub.splits)
        log.leaves.extend(sub.leaves)
    by_status = {r[1]: r for r in results}
    if "violated" in by_status:
        return SplitOutcome("violated", by_status["violated"][2], log, stats)
    if "unknown" in by_status:
        return SplitOutcome("unknown", log=log, stats=dict(stats, note=by_status["unknown"][4].get("note", "")))
    if len(results) == n_chunks and set(by_status) == {"holds"}:
        return SplitOutcome("holds", log=log, stats=stats)
    return SplitOutcome("timeout", log=log, stats=stats)


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
    """One forward/backward pass at the box centres: (centres [N, n], f(centres) [N, m], gradient).

    The gradient d (row . f(x)) / dx [N, n] says how much each input moves the row to prove.
    """
    x = ((lo + hi) / 2).detach().requires_grad_(True)
    with torch.enable_grad():
        y = graph.forward(x.reshape((x.shape[0],) + tuple(graph.input_shape))).reshape(x.shape[0], -1)
        (y * rows).sum().backward()
    return x.detach(), y.detach(), x.grad


def _probe(hunt: CounterexampleHunt, batch: Pending, centres, y, grad: torch.Tensor, slopes: torch.Tensor | None,
           samples: int):
    """Candidate counterexamples in the open boxes: (points [K, n], their ``hunt.worst`` margins [K]).

    Per box, its centre (already evaluated: outputs ``y``), the vertex the centre's gradient
    descends to and, when the bound's input coefficients are known, the vertex minimising the
    bound's linear lower bound (in a box where every neuron is stable that bound is exact, so this
    vertex is where the row is smallest); then ``samples`` uniform points spread over the boxes.
    Violating regions can be tiny (1 input in a million on ACAS Xu 1_9 prop 7), and the open boxes
    are where the search has not ruled them out.
    """
    lo, hi = batch.lo, batch.hi
    points = [torch.where(grad > 0, lo, hi)]
    if slopes is not None:
        points.append(torch.where(slopes > 0, lo, hi))
    if samples > 0:
        pick = torch.randint(len(batch), (samples,), generator=hunt.gen).to(lo.device)
        u = torch.rand((samples, lo.shape[1]), generator=hunt.gen, dtype=lo.dtype).to(lo.device)
        points.append(lo[pick] + u * (hi[pick] - lo[pick]))
    x = torch.cat(points)
    return torch.cat([centres, x]), torch.cat([hunt.worst(y), hunt.margin(x)])


def _try_points(x, worst, validate):
    """Validate (onnxruntime) the few points whose outputs lie deepest in the unsafe polytope."""
    hits = torch.nonzero(worst <= 0).flatten()
    for i in hits[worst[hits].argsort()][:8].tolist():
        cex = validate(x[i].double().cpu().numpy())
        if cex is not None:
            return cex
    return None


def _stats(visited, pending, depth, t0, note="", hunt=None):
    extra = {} if hunt is None or not hunt.rounds else {"local_rounds": hunt.rounds, "local_time": round(hunt.spent, 3)}
    return {"domains": visited, "pending": pending, "max_depth": depth,
            "time": round(time.monotonic() - t0, 4), **extra, **({"note": note} if note else {})}
