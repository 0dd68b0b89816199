"""Branch and bound spread over a pool of workers: chunks of pending domains shipped, their proofs joined.

The search that owns a goal (the *home* search) runs as usual. Once it is still open after
``BabConfig.distribute_after`` seconds and the pool says some of its workers are idle, it cuts
chunks off the front of its pending queue (the shallowest domains: the largest subtrees) and
ships them through an ``Offload``; between two short stretches of its own search it polls for
their results. A chunk is plain data (domain ids, depths, the first id of its new domains, a
wall-clock deadline, and per domain either its box (``kind`` "input": input splitting) or its
ReLU splits from the root (``kind`` "relu")), so any process that has the model can search it
(``run_chunk``) and send back its status, its proof log and, if it found one, a counterexample.
A ReLU-split chunk carries nothing else of its domains: the worker derives their bounds again
from the splits (``relu_split.resume_relu_search``), so no shipped number can make a bound unsound.

* A chunk that holds: its log joins the home log. Its new domains are numbered in a range of
  their own (chunk ``k`` from ``k * ID_STRIDE``), so the joined log is one proof tree, which
  goes through the independent checker like any other.
* A chunk still open after ``CHUNK_BUDGET`` seconds answers ``partial``: its proof so far joins,
  and the domains it has left go to the front of the home queue (to be shipped again), so no
  worker keeps a large subtree while others idle.
* A counterexample: re-validated at home (onnxruntime), then every other chunk is cancelled.
* A chunk that ended ``unknown`` (domain limit) makes the goal unknown; any other failure (a
  timeout before the deadline, an unconfirmed witness) puts the chunk's domains back in the home
  queue, so the home search covers them itself.
* The home search never waits on a chunk no worker has started: once its own queue is empty it
  takes such chunks back (``Offload.reclaim``) and searches them, so a pool whose slots are all
  busy (the home job's own slot included) cannot deadlock. It waits only on chunks running
  elsewhere, polling, until the deadline or a cancel.

This module knows nothing of Celery or Redis; ``workers/distributed.py`` is the service's Offload.
"""
from __future__ import annotations

import base64
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from verifier import clock
from verifier.search.input_split import ID_STRIDE, Pending, Search, SplitOutcome, new_search
from verifier.search.relu_split import (ReluSearch, ReluSplitOptions, _merge_push, lineage_pending, resume_relu_search,
                                        root_signs, shared_roots)

CHUNK_SECONDS = 2.0   # aim for one chunk's search time (the issue asks for 1-3 s)
CHUNK_BUDGET = 2 * CHUNK_SECONDS   # a chunk searched this long sends back its proof so far and what is left
TICK = 0.1            # seconds of home search between two looks at the pool (and its results)
WAIT = 0.05           # seconds between two polls while the home queue is empty
RELU_BATCH_SECONDS = 0.25   # a home ReLU-split batch at most this long, so results are joined (and workers fed) soon


@dataclass
class ChunkSpec:
    """One chunk of pending domains of goal (region, polytope): plain data, JSON-ready.

    ``kind`` "input": each domain is its box (``lo``, ``hi``). ``kind`` "relu": the domains share
    the region's box; each is its splits from the root, ``lineage[i]`` = [[parent id, relu node,
    flat index, sign], ...] root first (sign -1: inactive, +1: active), after the root's fixed
    splits ``root`` ([node, index, sign], ...); ``bounds`` is the search's bounds mode.
    """

    index: int                 # 1, 2, ... within one home search; ids of its new domains start at index * ID_STRIDE
    lo: list[list[float]]
    hi: list[list[float]]
    ids: list[int]
    depth: list[int]
    deadline: float            # wall-clock epoch (time.time()): monotonic clocks differ across machines
    region: int = 0
    polytope: int = 0
    batch: int = 64            # the home search's batch size when it shipped the chunk
    kind: str = "input"        # input | relu
    lineage: list = field(default_factory=list)
    root: list = field(default_factory=list)
    bounds: str = "checker"
    root_polytopes: list = field(default_factory=list)   # the home root's shared polytopes (relu_split.RootBounds)
    budget: float = 0.0        # seconds of search before it returns what is left (``partial``); 0: no limit

    @property
    def id_base(self) -> int:
        return self.index * ID_STRIDE

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ChunkSpec":
        return cls(**data)

    def pending(self, dtype=torch.float32, device=None) -> Pending:
        """An input chunk's domains as a pending queue (without node bounds)."""
        as_long = lambda v: torch.tensor(v, dtype=torch.long, device=device)
        return Pending(torch.tensor(self.lo, dtype=dtype, device=device), torch.tensor(self.hi, dtype=dtype, device=device),
                       as_long(self.ids), as_long(self.depth))

    def domains(self) -> list[tuple[int, int, list]]:
        """A ReLU chunk's domains: (id, depth, lineage)."""
        return [(int(i), int(d), [tuple(step) for step in path]) for i, d, path in zip(self.ids, self.depth, self.lineage)]


@dataclass
class ChunkResult:
    """What searching one chunk gave: status, the proof log of its subtrees, stats, a witness.

    Input leaves are (id, row, claimed bound); ReLU leaves add the leaf's alphas (relu node ->
    array) and betas (array in path order, or None), which JSON carries as float64 bytes.
    """

    index: int
    status: str                                  # holds | violated | unknown | timeout | partial
    splits: list = field(default_factory=list)   # (parent id, dim | relu node, at | index, low id, high id)
    leaves: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    counterexample: list[float] | None = None    # the input x the chunk's validator confirmed
    worker: str = ""                             # who searched it
    region: int = 0
    polytope: int = 0
    kind: str = "input"
    pending: dict | None = None                  # partial: the domains left, as a ChunkSpec has them (ids, depth, ...)

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["splits"] = [list(s) for s in self.splits]
        if self.kind == "relu":
            out["leaves"] = [[i, row, bound, {k: _pack(a) for k, a in alphas.items()}, _pack(betas)]
                             for i, row, bound, alphas, betas in self.leaves]
        else:
            out["leaves"] = [list(leaf) for leaf in self.leaves]
        return out

    @classmethod
    def from_json(cls, data: dict) -> "ChunkResult":
        out = cls(**data)
        out.splits = [tuple(s) for s in out.splits]
        if out.kind == "relu":
            out.leaves = [(i, row, bound, {k: _unpack(a) for k, a in alphas.items()}, _unpack(betas))
                          for i, row, bound, alphas, betas in out.leaves]
        else:
            out.leaves = [tuple(leaf) for leaf in out.leaves]
        return out


def _pack(a) -> dict | None:
    """An array as JSON: its shape and its float64 bytes (exact), base64."""
    if a is None:
        return None
    a = np.asarray(a, dtype="<f8")
    return {"shape": list(a.shape), "f64": base64.b64encode(a.tobytes()).decode("ascii")}


def _unpack(d: dict | None):
    """The array ``_pack`` wrote."""
    if d is None:
        return None
    return np.frombuffer(base64.b64decode(d["f64"]), dtype="<f8").reshape(d["shape"]).astype(np.float64)


class Offload(Protocol):
    """A pool of workers that searches chunks beside the home search (never blocks)."""

    def want_chunks(self) -> int:
        """How many chunks the pool could start now (0: no idle worker)."""

    def ship(self, chunks: list[ChunkSpec]) -> None:
        """Send the chunks to the pool."""

    def poll(self) -> list[ChunkResult]:
        """Results that arrived since the last call (each chunk's at most once)."""

    def reclaim(self) -> list[ChunkSpec]:
        """Take back the shipped chunks no worker runs now (never started, or their worker died);
        the pool will not run them or report them afterwards."""

    def cancel_all(self) -> None:
        """Stop every chunk still queued or running; their results no longer matter."""


def run_chunk(model, spec, config, chunk: ChunkSpec, engine=None, cancel: clock.CancelEvent | None = None,
              worker: str = "", runner=None) -> ChunkResult:
    """Search ``chunk`` of a goal of ``spec`` on ``model`` (a loaded ``Model``) with ``config`` (a
    ``VerifyConfig``), as a remote worker does; ``engine`` (a bound engine for the model) and
    ``runner`` (onnxruntime on its file) may be passed in to be reused across chunks.

    A counterexample is validated here on onnxruntime, and again at home.
    """
    from verifier.bounds import BoundEngine
    from verifier.counterexample import validate
    from verifier.threads import pick_device

    device, dtype = pick_device(config.bounds.device), getattr(torch, config.bounds.dtype)
    region = spec.regions[chunk.region]
    runner = runner or model.reference_runner()
    check = lambda x: validate(runner, spec, x, "bab", exact_inputs=config.exact_inputs)
    deadline = time.monotonic() + (chunk.deadline - time.time())
    engine = engine or BoundEngine(model.graph, device=device, dtype=dtype)
    engine.deadline = deadline
    search = chunk_search(engine, model.graph, region, chunk, check, deadline, config.bab, device, dtype)
    with clock.cancel_scope(cancel):
        return run_chunk_search(search, chunk, deadline, worker)


def run_chunk_search(search, chunk: ChunkSpec, deadline: float, worker: str = "") -> ChunkResult:
    """Run a chunk's search until it settles, the deadline, or ``chunk.budget`` seconds: then its
    status is ``partial``, and its result carries the proof so far and the domains left."""
    from verifier.bounds import DeadlineReached

    stop = time.monotonic() + chunk.budget if chunk.budget > 0 else float("inf")
    try:
        out = search.run(deadline, lambda: time.monotonic() >= stop)
    except DeadlineReached:
        out = search.outcome("timeout")
    res = chunk_result(chunk, out, worker)
    if out.status == "timeout" and len(search.queue) and time.monotonic() >= stop and clock.now() < deadline:
        res.status, res.pending = "partial", _kind_of(search).encode(search.queue)
    return res


def chunk_search(engine, graph, region, chunk: ChunkSpec, validate, deadline: float, bab, device=None,
                 dtype=torch.float32):
    """The search of ``chunk``'s domains (region: a spec ``Region``; bab: the job's ``BabConfig``).

    Input chunks leave local search (the evolution strategy over the whole box) to the home
    search and probe their own boxes as any search does; ReLU chunks derive their domains'
    bounds again from the splits.
    """
    poly = region.unsafe[chunk.polytope]
    if chunk.kind == "relu":
        options, root = ReluSplitOptions(bounds=chunk.bounds), None
        if chunk.root_polytopes:    # the home search's root bounded these polytopes together: derive it the same way
            roots = shared_roots(engine, region.lower, region.upper, [region.unsafe[p].A for p in chunk.root_polytopes],
                                 chunk.root_polytopes, options, root_signs(engine, chunk.root))
            root = roots[chunk.root_polytopes.index(chunk.polytope)]
        search = resume_relu_search(engine, region.lower, region.upper, poly.A, poly.b, validate, deadline, bab,
                                    chunk.root, chunk.domains(), chunk.id_base, options, root)
        search.size = max(1, chunk.batch, len(chunk.ids))   # its cold domains go in one batch
        return search
    search = new_search(engine, graph, region.lower, region.upper, poly.A, poly.b, validate, deadline,
                        dataclasses.replace(bab, local_share=0.0), device, dtype, [(p.A, p.b) for p in region.unsafe],
                        chunk.pending(dtype, device), chunk.id_base, aux=poly.aux)
    search.size = chunk.batch
    search.hunt.gen.manual_seed(chunk.index)   # its own probes, not a copy of the home search's
    return search


def chunk_result(chunk: ChunkSpec, out: SplitOutcome, worker: str = "") -> ChunkResult:
    """A chunk's outcome as plain data."""
    cex = None
    if out.counterexample is not None:
        cex = np.asarray(getattr(out.counterexample, "x", out.counterexample), dtype=np.float64).reshape(-1).tolist()
    log = out.log
    return ChunkResult(chunk.index, out.status, [tuple(s) for s in log.splits], [tuple(leaf) for leaf in log.leaves],
                       dict(out.stats), cex, worker, chunk.region, chunk.polytope, chunk.kind)


class _InputKind:
    """What the home search does with input-split domains (boxes)."""

    name, cap = "input", None

    def __init__(self, search: Search):
        self.search = search

    def validate(self, x):
        return self.search.hunt.validate(x)

    def fields(self, part: Pending) -> dict:
        return {"lo": part.lo.tolist(), "hi": part.hi.tolist()}

    def encode(self, part: Pending) -> dict:
        return {"ids": part.ids.tolist(), "depth": part.depth.tolist(), **self.fields(part)}

    def decode(self, data: dict) -> Pending:
        q = self.search.queue
        as_long = lambda v: torch.tensor(v, dtype=torch.long, device=q.lo.device)
        return Pending(torch.tensor(data["lo"], dtype=q.lo.dtype, device=q.lo.device),
                       torch.tensor(data["hi"], dtype=q.lo.dtype, device=q.lo.device), as_long(data["ids"]),
                       as_long(data["depth"]))

    def push(self, part: Pending) -> None:
        self.search.queue.push(part)

    def push_front(self, part: Pending) -> None:
        part.push(self.search.queue)
        self.search.queue.__dict__.update(part.__dict__)

    def on_ship(self) -> None:
        """Chunks are out (input batches are short already)."""

    def join(self, res: ChunkResult) -> None:
        self.search.log.splits.extend(res.splits)
        self.search.log.leaves.extend(res.leaves)


class _ReluKind:
    """What the home search does with ReLU-split domains (split sets); a chunk is at most one batch."""

    name = "relu"

    def __init__(self, search: ReluSearch):
        self.search = search
        self.cap = search.size

    def on_ship(self) -> None:
        """Chunks are out: keep batches short, so that results join (and idle workers get work) soon;
        a batch would otherwise take the whole frontier."""
        self.search.batch_seconds = RELU_BATCH_SECONDS

    def validate(self, x):
        return self.search.s.validate(x)

    def fields(self, part) -> dict:
        log, splits = self.search.log, part.tensors["splits"]
        lineage = [[[p, node, k, int(splits[node][i, k])] for p, node, k in log.lineage(ident)]
                   for i, ident in enumerate(part.ids.tolist())]
        return {"lo": [], "hi": [], "lineage": lineage, "root": [list(r) for r in log.root],
                "bounds": self.search.s.options.bounds, "root_polytopes": list(self.search.s.root_polytopes)}

    def encode(self, part) -> dict:
        return {"ids": part.ids.tolist(), "depth": part.depth.tolist(), **self.fields(part)}

    def decode(self, data: dict):
        """Domains sent back by a chunk: cold (splits only), so their first batch starts afresh."""
        domains = [(int(i), int(d), [tuple(step) for step in path])
                   for i, d, path in zip(data["ids"], data["depth"], data["lineage"])]
        part = lineage_pending(self.search.s.engine, self.search.log, domains)
        self.search.cold.update(int(i) for i in data["ids"])
        return part

    def push(self, part) -> None:
        _merge_push(self.search.queue, part)

    def push_front(self, part) -> None:
        _merge_push(part, self.search.queue)
        self.search.queue.__dict__.update(part.__dict__)

    def join(self, res: ChunkResult) -> None:
        log = self.search.log
        for split in res.splits:
            log.add_split(*split)
        log.leaves.extend(res.leaves)


def _kind_of(search):
    """The kind adapter of a search."""
    return _ReluKind(search) if isinstance(search, ReluSearch) else _InputKind(search)


def search_with(search: Search | ReluSearch, deadline: float, offload: Offload,
                goal: tuple[int, int] = (0, 0)) -> SplitOutcome:
    """Run the home ``search`` until the goal is settled, shipping chunks to ``offload`` (see the module)."""
    home = _Home(search, deadline, offload, goal)
    try:
        return home.run()
    except BaseException:
        offload.cancel_all()
        raise


class _Home:
    """The home search's side of a distributed search: what is out, what came back."""

    def __init__(self, search: Search | ReluSearch, deadline: float, offload: Offload, goal: tuple[int, int]):
        self.search, self.deadline, self.offload, self.goal = search, deadline, offload, goal
        self.kind = _kind_of(search)
        self.out: dict[int, ChunkSpec] = {}      # shipped, no result yet
        self.parts: dict = {}                    # the shipped domains as they were here (back home on failure)
        self.joined: list[ChunkResult] = []      # chunks whose proofs joined the home log
        self.shipped = self.reclaimed = self.partial = 0
        self.next_index = 1
        self.per_root: float | None = None       # measured seconds of search per shipped domain
        self.sent_at: dict[int, float] = {}
        self.overhead = 0.0                      # seconds between ship and result not spent searching
        self.pool_time = 0.0                     # seconds the home search spent shipping, polling, joining
        self.wait_time = 0.0                     # seconds it waited on chunks with nothing of its own to search

    def run(self) -> SplitOutcome:
        search = self.search
        look = time.monotonic() + search.config.distribute_after
        while True:
            out = search.run(self.deadline, lambda: time.monotonic() >= look and len(search.queue) >= 2)
            if out.status in ("violated", "unknown"):
                return self.finish(out.status, out.counterexample, out.stats.get("note", ""))
            t0 = time.monotonic()
            settled = self.collect()
            self.pool_time += time.monotonic() - t0
            if settled is not None:
                return settled
            if len(search.queue) == 0 and not self.out:
                return self.finish("holds")
            if clock.now() >= self.deadline:
                return self.finish("timeout")
            t0 = time.monotonic()
            if len(search.queue) == 0:   # the home queue is empty: take back what nobody runs, or wait
                if not self.take_back():
                    time.sleep(WAIT)
                    self.wait_time += WAIT
                look = time.monotonic()
                self.pool_time += look - t0
                continue
            self.ship()
            now = time.monotonic()
            self.pool_time += now - t0
            look = now + TICK

    def collect(self) -> SplitOutcome | None:
        """Join the results that arrived; an outcome when one of them settles the goal."""
        for res in self.offload.poll():
            spec = self.out.pop(res.index, None)
            if spec is None:   # a duplicate, or a chunk taken back: its domains are searched here
                continue
            if res.status == "holds":
                self.join(spec, res)
            elif res.status == "partial" and res.pending is not None:   # its proof so far, and what is left
                self.join(spec, res)
                self.kind.push_front(self.kind.decode(res.pending))
                self.partial += 1
            elif res.status == "violated" and res.counterexample is not None:
                cex = self.kind.validate(np.asarray(res.counterexample, dtype=np.float64))
                if cex is not None:
                    self.joined.append(res)   # counted among the chunks searched, its log aside
                    return self.finish("violated", cex)
                self.requeue(spec)
            elif res.status == "unknown":
                return self.finish("unknown", note=f"chunk {res.index}: {res.stats.get('note', 'unknown')}")
            else:   # timeout or cancelled elsewhere: search its domains here while time is left
                self.requeue(spec)
        return None

    def join(self, spec: ChunkSpec, res: ChunkResult) -> None:
        """Add a chunk's proof to the home log; learn its cost per domain."""
        self.kind.join(res)
        self.parts.pop(spec.index, None)
        self.joined.append(res)
        seconds = float(res.stats.get("time", 0.0))
        cost = seconds / max(len(spec.ids), 1)
        if res.status == "partial":   # a lower bound on the cost of its domains
            self.per_root = max(self.per_root or 0.0, cost)
        else:
            self.per_root = cost if self.per_root is None else 0.5 * (self.per_root + cost)
        self.overhead += max(0.0, time.monotonic() - self.sent_at.pop(res.index, time.monotonic()) - seconds)

    def requeue(self, spec: ChunkSpec) -> None:
        """Search a chunk's domains here after all."""
        self.kind.push(self.parts.pop(spec.index))
        self.reclaimed += 1

    def take_back(self) -> bool:
        """Put the chunks nobody runs back in the home queue; whether there were any."""
        back = self.offload.reclaim()
        for spec in back:
            if self.out.pop(spec.index, None) is not None:
                self.requeue(spec)
        return bool(back)

    def ship(self) -> None:
        """Cut chunks off the front of the queue for the idle workers, keeping a share at home."""
        queue = self.search.queue
        want = self.offload.want_chunks()
        if want <= 0 or len(queue) < 2:
            return
        # The front of the queue holds the shallowest domains, the largest subtrees: until a chunk's
        # cost is measured, a chunk is one of them; then as many as fill CHUNK_SECONDS, never more
        # than the share per worker of what stays home.
        share = len(queue) // (want + 1)
        size = 1 if self.per_root is None else int(min(max(1, share), max(1, CHUNK_SECONDS / max(self.per_root, 1e-9))))
        if self.kind.cap is not None:
            size = min(size, self.kind.cap)
        n = min(want, (len(queue) - 1) // size)
        if n <= 0:
            return
        part = queue.select(slice(0, n * size))
        queue.__dict__.update(queue.select(slice(n * size, None)).__dict__)
        parts = [part.select(slice(k * size, (k + 1) * size)) for k in range(n)]
        chunks = [self.spec(p) for p in parts]
        self.offload.ship(chunks)
        now = time.monotonic()
        for c, p in zip(chunks, parts):
            self.out[c.index] = c
            self.parts[c.index] = p
            self.sent_at[c.index] = now
        self.shipped += n
        self.kind.on_ship()

    def spec(self, part: Pending) -> ChunkSpec:
        index, self.next_index = self.next_index, self.next_index + 1
        left = clock.left(self.deadline)
        wall = time.time() + (min(left, 1e7) if left > 0 else 0.0)
        return ChunkSpec(index=index, ids=part.ids.tolist(), depth=part.depth.tolist(), deadline=wall,
                         region=self.goal[0], polytope=self.goal[1], batch=self.search.size, kind=self.kind.name,
                         budget=CHUNK_BUDGET, **self.kind.fields(part))

    def finish(self, status: str, cex=None, note: str = "") -> SplitOutcome:
        """The goal's outcome: the home log with every joined chunk, stats over all of them."""
        if self.out or status != "holds":
            self.offload.cancel_all()
        assert status != "holds" or not self.out, "holds with chunks outstanding"
        search = self.search
        stats = dict(search.outcome(status).stats)
        stats["domains"] += sum(int(r.stats.get("domains", 0)) for r in self.joined)
        stats["max_depth"] = max([stats["max_depth"]] + [int(r.stats.get("max_depth", 0)) for r in self.joined])
        if note:
            stats["note"] = note
        stats["distributed"] = {"shipped": self.shipped, "chunks": len(self.joined),
                                "taken_back": self.reclaimed, "partial": self.partial,
                                "workers": 1 + len({r.worker for r in self.joined if r.worker}),
                                "chunk_seconds": round(sum(float(r.stats.get("time", 0.0)) for r in self.joined), 3),
                                "overhead_seconds": round(self.overhead, 3),
                                "home_pool_seconds": round(self.pool_time - self.wait_time, 3),
                                "home_wait_seconds": round(self.wait_time, 3)}
        return SplitOutcome(status, cex, search.log, stats)
