"""Input splitting spread over a pool of workers: chunks of pending domains shipped, their proofs joined.

The search that owns a goal (the *home* search) runs as usual. Once it is still open after
``BabConfig.distribute_after`` seconds and the pool says some of its workers are idle, it cuts
chunks off the front of its pending queue (the shallowest domains: the largest subtrees) and
ships them through an ``Offload``; between two short stretches of its own search it polls for
their results. A chunk is plain data (boxes, domain ids, depths, the first id of its new
domains, a wall-clock deadline), so any process that has the model can search it
(``run_chunk``) and send back its status, its proof log and, if it found one, a counterexample.

* A chunk that holds: its log joins the home log. Its new domains are numbered in a range of
  their own (chunk ``k`` from ``k * ID_STRIDE``), so the joined log is one proof tree, which
  goes through the independent checker like any other.
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

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from verifier import clock
from verifier.search.input_split import ID_STRIDE, Pending, Search, SplitOutcome, new_search

CHUNK_SECONDS = 2.0   # aim for one chunk's search time (the issue asks for 1-3 s)
TICK = 0.1            # seconds of home search between two looks at the pool (and its results)
WAIT = 0.05           # seconds between two polls while the home queue is empty


@dataclass
class ChunkSpec:
    """One chunk of pending domains of goal (region, polytope): plain data, JSON-ready."""

    index: int                 # 1, 2, ... within one home search; ids of its new domains start at index * ID_STRIDE
    lo: list[list[float]]
    hi: list[list[float]]
    ids: list[int]
    depth: list[int]
    deadline: float            # wall-clock epoch (time.time()): monotonic clocks differ across machines
    region: int = 0
    polytope: int = 0
    batch: int = 64            # the home search's batch size when it shipped the chunk

    @property
    def id_base(self) -> int:
        return self.index * ID_STRIDE

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ChunkSpec":
        return cls(**data)

    def pending(self, dtype=torch.float32, device=None) -> Pending:
        """The chunk's domains as a pending queue (without node bounds)."""
        as_long = lambda v: torch.tensor(v, dtype=torch.long, device=device)
        return Pending(torch.tensor(self.lo, dtype=dtype, device=device), torch.tensor(self.hi, dtype=dtype, device=device),
                       as_long(self.ids), as_long(self.depth))


@dataclass
class ChunkResult:
    """What searching one chunk gave: status, the proof log of its subtrees, stats, a witness."""

    index: int
    status: str                                  # holds | violated | unknown | timeout
    splits: list = field(default_factory=list)   # (parent id, dim, at, low id, high id)
    leaves: list = field(default_factory=list)   # (id, row, claimed bound)
    stats: dict = field(default_factory=dict)
    counterexample: list[float] | None = None    # the input x the chunk's validator confirmed
    worker: str = ""                             # who searched it
    region: int = 0
    polytope: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ChunkResult":
        out = cls(**data)
        out.splits = [tuple(s) for s in out.splits]
        out.leaves = [tuple(leaf) for leaf in out.leaves]
        return out


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

    Local search is left to the home search (it has the whole box); the chunk probes its boxes as
    any search does. A counterexample is validated here on onnxruntime, and again at home.
    """
    from verifier.bounds import BoundEngine, DeadlineReached
    from verifier.counterexample import validate
    from verifier.portfolio import pick_device

    device, dtype = pick_device(config.bounds.device), getattr(torch, config.bounds.dtype)
    region = spec.regions[chunk.region]
    poly = region.unsafe[chunk.polytope]
    runner = runner or model.reference_runner()
    check = lambda x: validate(runner, spec, x, "bab", exact_inputs=config.exact_inputs)
    deadline = time.monotonic() + (chunk.deadline - time.time())
    engine = engine or BoundEngine(model.graph, device=device, dtype=dtype)
    engine.deadline = deadline
    bab = dataclasses.replace(config.bab, local_share=0.0)
    search = new_search(engine, model.graph, region.lower, region.upper, poly.A, poly.b, check, deadline, bab, device,
                        dtype, [(p.A, p.b) for p in region.unsafe], chunk.pending(dtype, device), chunk.id_base,
                        aux=poly.aux)
    search.size = chunk.batch
    search.hunt.gen.manual_seed(chunk.index)   # its own probes, not a copy of the home search's
    with clock.cancel_scope(cancel):
        try:
            out = search.run(deadline)
        except DeadlineReached:
            out = search.outcome("timeout")
    return chunk_result(chunk, out, worker)


def chunk_result(chunk: ChunkSpec, out: SplitOutcome, worker: str = "") -> ChunkResult:
    """A chunk's outcome as plain data."""
    cex = None
    if out.counterexample is not None:
        cex = np.asarray(getattr(out.counterexample, "x", out.counterexample), dtype=np.float64).reshape(-1).tolist()
    log = out.log
    return ChunkResult(chunk.index, out.status, [tuple(s) for s in log.splits], [tuple(leaf) for leaf in log.leaves],
                       dict(out.stats), cex, worker, chunk.region, chunk.polytope)


def search_with(search: Search, deadline: float, offload: Offload, goal: tuple[int, int] = (0, 0)) -> SplitOutcome:
    """Run the home ``search`` until the goal is settled, shipping chunks to ``offload`` (see the module)."""
    home = _Home(search, deadline, offload, goal)
    try:
        return home.run()
    except BaseException:
        offload.cancel_all()
        raise


class _Home:
    """The home search's side of a distributed search: what is out, what came back."""

    def __init__(self, search: Search, deadline: float, offload: Offload, goal: tuple[int, int]):
        self.search, self.deadline, self.offload, self.goal = search, deadline, offload, goal
        self.out: dict[int, ChunkSpec] = {}      # shipped, no result yet
        self.joined: list[ChunkResult] = []      # chunks whose proofs joined the home log
        self.shipped = self.reclaimed = 0
        self.next_index = 1
        self.per_root: float | None = None       # measured seconds of search per shipped domain
        self.sent_at: dict[int, float] = {}
        self.overhead = 0.0                      # seconds between ship and result not spent searching

    def run(self) -> SplitOutcome:
        search = self.search
        look = time.monotonic() + search.config.distribute_after
        while True:
            out = search.run(self.deadline, lambda: time.monotonic() >= look and len(search.queue) >= 2)
            if out.status in ("violated", "unknown"):
                return self.finish(out.status, out.counterexample, out.stats.get("note", ""))
            settled = self.collect()
            if settled is not None:
                return settled
            if len(search.queue) == 0 and not self.out:
                return self.finish("holds")
            if clock.now() >= self.deadline:
                return self.finish("timeout")
            if len(search.queue) == 0:   # the home queue is empty: take back what nobody runs, or wait
                if not self.take_back():
                    time.sleep(WAIT)
                look = time.monotonic()
                continue
            self.ship()
            look = time.monotonic() + TICK

    def collect(self) -> SplitOutcome | None:
        """Join the results that arrived; an outcome when one of them settles the goal."""
        for res in self.offload.poll():
            spec = self.out.pop(res.index, None)
            if spec is None:   # a duplicate, or a chunk taken back: its domains are searched here
                continue
            if res.status == "holds":
                self.join(spec, res)
            elif res.status == "violated" and res.counterexample is not None:
                cex = self.search.hunt.validate(np.asarray(res.counterexample, dtype=np.float64))
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
        log = self.search.log
        log.splits.extend(res.splits)
        log.leaves.extend(res.leaves)
        self.joined.append(res)
        seconds = float(res.stats.get("time", 0.0))
        cost = seconds / max(len(spec.ids), 1)
        self.per_root = cost if self.per_root is None else 0.5 * (self.per_root + cost)
        self.overhead += max(0.0, time.monotonic() - self.sent_at.pop(res.index, time.monotonic()) - seconds)

    def requeue(self, spec: ChunkSpec) -> None:
        """Search a chunk's domains here after all."""
        q = self.search.queue
        q.push(spec.pending(q.lo.dtype, q.lo.device))
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
        n = min(want, (len(queue) - 1) // size)
        if n <= 0:
            return
        part = queue.select(slice(0, n * size))
        queue.__dict__.update(queue.select(slice(n * size, None)).__dict__)
        chunks = [self.spec(part.select(slice(k * size, (k + 1) * size))) for k in range(n)]
        self.offload.ship(chunks)
        now = time.monotonic()
        for c in chunks:
            self.out[c.index] = c
            self.sent_at[c.index] = now
        self.shipped += n

    def spec(self, part: Pending) -> ChunkSpec:
        index, self.next_index = self.next_index, self.next_index + 1
        left = clock.left(self.deadline)
        wall = time.time() + (min(left, 1e7) if left > 0 else 0.0)
        return ChunkSpec(index, part.lo.tolist(), part.hi.tolist(), part.ids.tolist(), part.depth.tolist(), wall,
                         self.goal[0], self.goal[1], self.search.size)

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
                                "taken_back": self.reclaimed,
                                "workers": 1 + len({r.worker for r in self.joined if r.worker}),
                                "chunk_seconds": round(sum(float(r.stats.get("time", 0.0)) for r in self.joined), 3),
                                "overhead_seconds": round(self.overhead, 3)}
        return SplitOutcome(status, cex, search.log, stats)
