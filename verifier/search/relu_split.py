"""Branch and bound over ReLU splits with beta-CROWN bounds (the complete verifier for ReLU nets).

A domain is the region box plus ReLU split constraints (one int8 tensor per relu node). The root
is bounded by (alpha-)CROWN; pending domains are bounded in batches by beta-CROWN
(``verifier.bounds.beta``) with the root's intermediate bounds as reference, warm-started from
their parent's alphas and betas. A domain is proved when some row of the polytope's margin
``A y - b`` has a positive lower bound (or its splits contradict the bounds); otherwise the
point minimising its linear lower bound seeds a short PGD attack on the region box, and it is
split on the best BaBSR-scored neuron (``branching.py``). Every split and proved leaf is logged
so that ``ReluSplitLog.tree()`` is the certificate TREE (relu splits, leaf alphas and betas).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from verifier import clock
from verifier.bounds.alpha import SPEC, AlphaSet
from verifier.bounds.beta import BetaConfig, BetaResult, compute_domains, quick_domains
from verifier.bounds.problem import Domain
from verifier.config import AlphaConfig, BabConfig
from verifier.search.branching import choose_neurons, relu_scores
from verifier.search.input_split import SplitOutcome
from verifier.search.prooftree import split_tree

BOUND_MODES = ("checker", "root", "hybrid", "refined")
EMPTY_CLAIM = 1e-12  # the bound claimed for a domain whose splits contradict its bounds (the checker re-derives it)
_OOM = tuple(e for e in (getattr(torch, "OutOfMemoryError", None), MemoryError) if e is not None)


@dataclass(frozen=True)
class ReluSplitOptions:
    """Knobs of the ReLU-split search beyond ``BabConfig`` (batch, max_domains)."""

    beta: BetaConfig = field(default_factory=BetaConfig)  # per batch of child domains
    root_iterations: int = 30        # alpha iterations at the root
    # How domains' intermediate bounds are derived:
    #   "checker": re-derived by plain CROWN under the domain's splits (no root alphas; costly per
    #              domain; the mode of a subtree that replaces a leaf of another proof);
    #   "root":    IBP intersected with the root's alpha-CROWN bounds, clamped by the splits (cheap
    #              and tight); the root's intermediate alphas go into the certificate (the proof's
    #              ``alphas``), so that the checker re-derives the same root bounds;
    #   "refined": "root", and each domain's bounds re-derived by CROWN under its splits as well;
    #   "hybrid":  "root" for the search; a domain it proves becomes a leaf only once its bound also
    #              holds the "checker" way (else it is split further).
    bounds: str = "root"
    leaf_iterations: int = 20        # alpha/beta iterations of the "checker"-way re-bound of a hybrid leaf
    attack_domains: int = 16         # open domains per batch whose bound minimiser seeds PGD
    attack_steps: int = 5
    max_memory_bytes: int = 1 << 30  # pending domains' tensors at most (beyond: stop, unknown)
    margin: float = 0.0              # a row is proved when its lower bound exceeds this
    # which neuron to split: "babsr" takes the best BaBSR-style score (branching.py); "fsb" (filtered
    # smart branching) bounds both children of the ``fsb_candidates`` best-scored neurons once
    # (no optimisation, parent's alphas and betas, beta 0 on the new split) and splits the one whose
    # worse child is best. Measured on mnistfc 256x4 prop 0 eps 0.03 polytope 2 ("root" bounds):
    # babsr proves it in 5,439 domains; fsb with 4 candidates is still open after 96,000 (the
    # one-pass estimate without the new split's beta misjudges early-layer splits), so babsr is the default.
    branching: str = "babsr"
    fsb_candidates: int = 4
    fsb_max_children: int = 1024     # children bounded together by one FSB call

    def __post_init__(self):
        if self.bounds not in BOUND_MODES:
            raise ValueError(f"unknown bounds mode {self.bounds!r} (known: {', '.join(BOUND_MODES)})")
        if self.branching not in ("babsr", "fsb"):
            raise ValueError(f"unknown branching {self.branching!r} (known: babsr, fsb)")


@dataclass
class ReluSplitLog:
    """The proof: relu splits (parent, node, flat index, inactive id, active id) and proved leaves."""

    lower: np.ndarray
    upper: np.ndarray
    splits: list[tuple[int, str, int, int, int]] = field(default_factory=list)
    leaves: list[tuple[int, int, float, dict, np.ndarray | None]] = field(default_factory=list)
    parent: dict[int, tuple[int, str, int]] = field(default_factory=dict)
    root: list[tuple[str, int, int]] = field(default_factory=list)  # the root domain's fixed (node, index, sign)
    # the root's alpha-CROWN slopes that give the intermediate reference bounds ("root" mode):
    # value -> (flat rows [k], {relu node: slopes [2k or 1, *shape]}); the certificate proof's ``alphas``
    root_alphas: dict = field(default_factory=dict)

    def add_split(self, parent: int, node: str, index: int, inactive: int, active: int) -> None:
        """Record one split of domain ``parent``."""
        self.splits.append((parent, node, index, inactive, active))
        self.parent[inactive] = self.parent[active] = (parent, node, index)

    def lineage(self, ident: int) -> list[tuple[int, str, int]]:
        """(parent id, relu node, flat index) of every split on the path to ``ident``, root first."""
        out = []
        while ident in self.parent:
            ident, node, index = self.parent[ident]
            out.append((ident, node, index))
        return out[::-1]

    def path(self, ident: int) -> list[tuple[str, int]]:
        """(relu node, flat index) of every split on the path to ``ident``, root first (fixed root splits first)."""
        out = []
        while ident in self.parent:
            ident, node, index = self.parent[ident]
            out.append((node, index))
        return [(node, index) for node, index, _ in self.root] + out[::-1]

    def tree(self, root: int = 0) -> dict:
        """The certificate TREE (docs/certificate.md) rooted at domain ``root``."""
        children = {p: ({"kind": "relu", "node": node, "index": int(k)}, a, c) for p, node, k, a, c in self.splits}
        leaves = {i: {"row": int(row), "bound": float(bound), "box": [self.lower, self.upper],
                      "alphas": alphas, "betas": betas} for i, row, bound, alphas, betas in self.leaves}
        tree = split_tree(root, children, leaves)
        if root == 0 and self.root_alphas:
            tree["root_alphas"] = self.root_alphas
        return tree


class Pending:
    """Pending domains as stacked tensors: splits, warm-start alphas / betas, ids, depths."""

    def __init__(self, tensors: dict[str, dict[str, torch.Tensor]], ids: torch.Tensor, depth: torch.Tensor):
        self.tensors, self.ids, self.depth = tensors, ids, depth

    def __len__(self) -> int:
        """Number of pending domains."""
        return int(self.ids.shape[0])

    def pop(self, n: int) -> "Pending":
        """Remove and return the last ``n`` domains (depth first)."""
        k = len(self) - n
        taken = {g: {name: t[k:] for name, t in d.items()} for g, d in self.tensors.items()}
        self.tensors = {g: {name: t[:k] for name, t in d.items()} for g, d in self.tensors.items()}
        out = Pending(taken, self.ids[k:], self.depth[k:])
        self.ids, self.depth = self.ids[:k], self.depth[:k]
        return out

    def select(self, index) -> "Pending":
        """The domains at ``index`` (a slice or a mask)."""
        return Pending({g: {name: t[index] for name, t in d.items()} for g, d in self.tensors.items()},
                       self.ids[index], self.depth[index])

    def push(self, other: "Pending") -> None:
        """Append ``other``'s domains."""
        self.tensors = {g: {name: torch.cat([t, other.tensors[g][name]]) for name, t in d.items()}
                        for g, d in self.tensors.items()}
        self.ids, self.depth = torch.cat([self.ids, other.ids]), torch.cat([self.depth, other.depth])

    def bytes_per_domain(self) -> int:
        """Memory one domain takes."""
        return sum(t[0].numel() * t.element_size() for d in self.tensors.values() for t in d.values()) + 16


@dataclass
class _Search:
    """State shared by the steps of one search."""

    engine: object
    box: tuple[torch.Tensor, torch.Tensor]
    C: torch.Tensor
    b: torch.Tensor
    reference: dict
    options: ReluSplitOptions
    validate: Callable
    log: ReluSplitLog
    deadline: float
    next_id: int = 1
    visited: int = 0
    max_depth: int = 0
    progress: Callable[[dict], object] | None = None   # told the counts before every batch
    root_polytopes: tuple[int, ...] = ()   # the polytopes the root's alpha-CROWN bounded together (RootBounds)


@dataclass(frozen=True)
class RootBounds:
    """What a search takes from its root's alpha-CROWN: intermediate reference bounds (None in
    "checker" mode), the objective alphas its root domain starts from, and the intermediate alphas
    that re-derive the reference (``ReluSplitLog.root_alphas``). ``polytopes``: the polytopes of the
    region whose rows the root bounded together (``shared_roots``); empty: this search's own rows."""

    reference: dict | None
    init: dict
    alphas: dict
    polytopes: tuple[int, ...] = ()


def shared_roots(engine, lower: np.ndarray, upper: np.ndarray, As: list[np.ndarray], polytopes: list[int],
                 options: ReluSplitOptions = ReluSplitOptions(),
                 root_splits: dict[str, np.ndarray] | None = None) -> list[RootBounds]:
    """One alpha-CROWN run at the root for the rows of several polytopes of one box together; the
    RootBounds of each (same reference and intermediate alphas, its own rows' objective alphas).

    Searches of several goals over one region then share the root's cost and its certificate alphas.
    """
    box, C, _ = _tensors(engine, lower, upper, np.concatenate(As), np.zeros(sum(len(a) for a in As)))
    fixed = _fixed_splits(engine, root_splits, ReluSplitLog(np.zeros(0), np.zeros(0)))
    reference, init, alphas = _root_reference(engine, box, C, options, fixed)
    out, start = [], 0
    for A in As:
        stop = start + len(A)
        mine = {name: t if t.shape[1] == 1 else t[:, start:stop] for name, t in init.items()}
        out.append(RootBounds(reference, mine, alphas, tuple(polytopes)))
        start = stop
    return out


def relu_split(engine, graph, lower: np.ndarray, upper: np.ndarray, A: np.ndarray, b: np.ndarray,
               validate: Callable[[np.ndarray], object], deadline: float, config: BabConfig,
               device=None, options: ReluSplitOptions = ReluSplitOptions(),
               progress: Callable[[dict], object] | None = None,
               root_splits: dict[str, np.ndarray] | None = None, offload=None,
               goal: tuple[int, int] = (0, 0), root: RootBounds | None = None) -> SplitOutcome:
    """Prove ``A f(x) <= b`` unreachable over the box by ReLU splitting, or find a validated counterexample.

    ``graph`` is the model's graph (the engine's copy is used for bounds and attacks); ``device``
    defaults to the engine's. Statuses: holds (log complete), violated, timeout, unknown (domain
    or memory limit, or a domain with nothing left to split). ``progress``, when given, is called
    before every batch with the counts ``{"domains": bounded so far, "pending": queued}``.
    ``root_splits`` (relu node -> flat int array, +1: z >= 0, -1: z <= 0, 0: free) are split constraints
    the root domain already carries (e.g. an activation pattern): the proof covers only the part of
    the box where they hold; they are never split again, and ``log.root`` lists them (node, index,
    sign) in the order the leaves' betas use.
    ``offload`` (a ``verifier.search.distribute.Offload``, e.g. the service's worker pool): after
    ``config.distribute_after`` seconds, chunks of the pending domains of goal ``goal`` (region,
    polytope) ship to it while this process searches the rest.
    ``root``: the root's bounds computed beforehand (``shared_roots``, with the same ``root_splits``);
    by default the search runs alpha-CROWN on its own rows.
    """
    if device is not None and torch.device(device).type != engine.device.type:
        raise ValueError(f"relu_split: device {device} differs from the engine's {engine.device}")
    search = new_relu_search(engine, lower, upper, A, b, validate, deadline, config, options, root_splits, root)
    search.s.progress = progress
    if offload is not None:
        from verifier.search.distribute import search_with

        return search_with(search, deadline, offload, goal)
    return search.run(deadline)


def new_relu_search(engine, lower: np.ndarray, upper: np.ndarray, A: np.ndarray, b: np.ndarray,
                    validate: Callable[[np.ndarray], object], deadline: float, config: BabConfig,
                    options: ReluSplitOptions = ReluSplitOptions(),
                    root_splits: dict[str, np.ndarray] | None = None, root: RootBounds | None = None) -> "ReluSearch":
    """A search of the root domain (the box with ``root_splits``), bounded first by alpha-CROWN (or ``root``)."""
    t0 = time.monotonic()
    s, fixed, init = _setup(engine, lower, upper, A, b, validate, deadline, options, root_splits, root)
    zero = torch.zeros(1, dtype=torch.long, device=engine.device)
    return ReluSearch(s, Pending({"splits": fixed, "alphas": init, "betas": {}}, zero, zero.clone()), config, t0)


def resume_relu_search(engine, lower: np.ndarray, upper: np.ndarray, A: np.ndarray, b: np.ndarray,
                       validate: Callable[[np.ndarray], object], deadline: float, config: BabConfig,
                       root: list, domains: list[tuple[int, int, list]], next_id: int,
                       options: ReluSplitOptions = ReluSplitOptions(), bounds: RootBounds | None = None) -> "ReluSearch":
    """A search of domains another search created, from their splits alone (e.g. a chunk shipped to a worker).

    ``root``: the root's fixed splits ``(node, index, sign)``; ``domains``: ``(id, depth, lineage)``
    with ``lineage`` the domain's splits from the root, ``(parent id, node, index, sign)`` each (see
    ``ReluSplitLog.lineage``). The root's bounds (intermediate reference, alphas) are derived here
    again, and the domains start from default alphas and zero betas: nothing but the splits is
    taken from the other search, so it can make no bound unsound. Their leaves' betas follow the
    whole path from the root, so the proof joins the other search's log; new domains are numbered
    from ``next_id``.
    """
    t0 = time.monotonic()
    s, _, init = _setup(engine, lower, upper, A, b, validate, deadline, options, root_signs(engine, root), bounds)
    queue = lineage_pending(engine, s.log, domains)
    n = len(queue)
    queue.tensors["alphas"] = {name: t.expand((n,) + tuple(t.shape[1:])).clone() for name, t in init.items()}
    s.next_id = next_id
    return ReluSearch(s, queue, config, t0)


def root_signs(engine, root: list) -> dict[str, np.ndarray]:
    """``relu_split``'s ``root_splits`` from a log's ``root`` list ``(node, index, sign)``."""
    out: dict[str, np.ndarray] = {}
    for node, index, sign in root:
        out.setdefault(node, np.zeros(engine.nodes[node].size, dtype=np.int8))[int(index)] = int(sign)
    return out


def lineage_pending(engine, log: ReluSplitLog, domains: list[tuple[int, int, list]]) -> Pending:
    """Cold pending domains (splits only: no alphas, no betas) from ``(id, depth, lineage)`` (see
    ``resume_relu_search``), under ``log``'s fixed root splits; records their ancestry in ``log``."""
    n, dev = len(domains), engine.device
    fixed = _fixed_splits(engine, root_signs(engine, log.root), ReluSplitLog(log.lower, log.upper))
    splits = {name: t.expand(n, -1).clone() for name, t in fixed.items()}
    for i, (ident, _, lineage) in enumerate(domains):
        child = int(ident)
        for parent, node, index, sign in reversed(lineage):
            if node not in splits:
                splits[node] = torch.zeros((n, engine.nodes[node].size), dtype=torch.int8, device=dev)
            splits[node][i, int(index)] = int(sign)
            log.parent[child] = (int(parent), node, int(index))
            child = int(parent)
    ids = torch.tensor([int(d[0]) for d in domains], dtype=torch.long, device=dev)
    depth = torch.tensor([int(d[1]) for d in domains], dtype=torch.long, device=dev)
    return Pending({"splits": splits, "alphas": {}, "betas": {}}, ids, depth)


def _tensors(engine, lower, upper, A, b):
    """The box ([1, *input_shape] each), C [1, R, n_out] and b [R] as the engine's tensors."""
    tensor = lambda a: torch.as_tensor(np.array(a), dtype=engine.dtype, device=engine.device)
    shape = (1,) + tuple(engine.graph.input_shape)
    return (tensor(lower).reshape(shape), tensor(upper).reshape(shape)), tensor(A).unsqueeze(0), tensor(b)


def _setup(engine, lower, upper, A, b, validate, deadline, options, root_splits, root: RootBounds | None = None):
    """(search state, fixed root splits, the root's objective alphas) of a search over the box."""
    box, C, bt = _tensors(engine, lower, upper, A, b)
    log = ReluSplitLog(np.asarray(lower, dtype=np.float64).reshape(-1), np.asarray(upper, dtype=np.float64).reshape(-1))
    fixed = _fixed_splits(engine, root_splits, log)
    if root is None:
        root = RootBounds(*_root_reference(engine, box, C, options, fixed))
    log.root_alphas = root.alphas
    s = _Search(engine, box, C, bt, root.reference, options, validate, log, deadline, root_polytopes=root.polytopes)
    return s, fixed, root.init


def _fixed_splits(engine, root_splits: dict | None, log: ReluSplitLog) -> dict[str, torch.Tensor]:
    """The root domain's split tensors ([1, size] int8 per relu node); records them in ``log.root``."""
    out = {}
    for name, signs in (root_splits or {}).items():
        node = engine.nodes.get(name)
        flat = np.asarray(signs).reshape(-1)
        if node is None or node.op != "relu" or flat.size != node.size or not np.isin(flat, (-1, 0, 1)).all():
            raise ValueError(f"root split {name!r}: needs a relu node and one sign in -1, 0, 1 per neuron")
        if not flat.any():
            continue
        out[name] = torch.as_tensor(flat.astype(np.int8), device=engine.device).reshape(1, -1)
        log.root += [(name, int(k), int(flat[k])) for k in np.flatnonzero(flat)]
    return out


def _root_reference(engine, box, C, options: ReluSplitOptions, fixed: dict | None = None):
    """(intermediate bounds valid on the root domain (box and fixed splits), the root's objective
    alphas, the intermediate alphas that re-derive those bounds (``ReluSplitLog.root_alphas``))."""
    if options.bounds == "checker":
        return None, {}, {}
    cfg = AlphaConfig(iterations=options.root_iterations, early_stop=False)
    res = engine.compute(box[0], box[1], C, method="alpha", alpha=cfg, want_upper=False, splits=fixed or None)
    init = dict(res.alphas[SPEC].slopes) if res.alphas and SPEC in res.alphas else {}
    starts = _stored_slopes(engine, {k: a for k, a in (res.alphas or {}).items() if k != SPEC})
    reference = replay_root(engine, box, fixed, starts)
    kept = {name: (a.rows.cpu().numpy().astype(np.int64), {relu: t[0].cpu().numpy() for relu, t in a.slopes.items()})
            for name, a in starts.items() if a.slopes}
    return reference, init, kept


def _stored_slopes(engine, starts: dict[str, AlphaSet]) -> dict[str, AlphaSet]:
    """The intermediate alphas as the certificate keeps them: relu nodes only (the checker takes
    the default slope elsewhere), rounded to float16 (any value in [0, 1] stays in [0, 1])."""
    out = {}
    for name, aset in starts.items():
        slopes = {relu: t.detach().to(torch.float16).to(t.dtype) for relu, t in aset.slopes.items()
                  if engine.nodes[relu].op == "relu"}
        out[name] = AlphaSet(aset.rows, slopes)
    return out


def replay_root(engine, box, fixed: dict | None, starts: dict[str, AlphaSet]) -> dict:
    """Bounds of every value on the root domain from one pass with the intermediate alphas ``starts``
    (what the certificate checker re-derives from the proof's ``alphas``, up to float precision)."""
    empty = torch.zeros(0, dtype=torch.long, device=engine.device)
    plan = {name: starts[name].rows if name in starts else empty for name in engine.refined}
    with torch.no_grad():
        bounds, _ = engine.propagate(box, Domain(None, fixed or None), crown=True, plan=plan, alphas=starts)
    return {k: (lo.detach(), hi.detach()) for k, (lo, hi) in bounds.items()}


class ReluSearch:
    """One depth-first ReLU-split search: its pending domains, its log, and the loop that runs it.

    ``run`` may be called again after it stopped (``stopped()`` or the deadline): the pending
    domains, batch size and cost estimate carry over. Domains with ids below the first new id at
    creation (the root, or the domains a resumed search was given) start cold: the batch that
    holds them gets the root's iteration count.
    """

    def __init__(self, s: _Search, queue: Pending, config: BabConfig, t0: float | None = None):
        self.s, self.queue, self.config = s, queue, config
        self.size = max(1, config.batch)   # batch size (halved on out-of-memory)
        self.per_domain = 0.0              # measured seconds per domain (keeps a batch inside the deadline)
        self.batch_seconds: float | None = None   # if set, a batch takes about this long at most (after the first)
        self.cold_below = s.next_id
        self.cold: set[int] = set()        # more domains that start cold (sent back by another search)
        self.t0 = time.monotonic() if t0 is None else t0

    @property
    def log(self) -> ReluSplitLog:
        return self.s.log

    def outcome(self, status: str, cex=None, note: str = "") -> SplitOutcome:
        return SplitOutcome(status, cex, self.s.log, _stats(self.s, self.queue, self.t0, note))

    def run(self, deadline: float, stopped: Callable[[], bool] | None = None) -> SplitOutcome:
        """Bound, prove, attack and split batches of pending domains until none is left, a limit
        hits, or ``stopped()`` turns true (timeout)."""
        s, pending, config = self.s, self.queue, self.config
        while len(pending):
            if s.progress is not None:
                s.progress({"domains": s.visited, "pending": len(pending)})
            if clock.now() >= deadline or (stopped is not None and stopped()):
                return self.outcome("timeout")
            cap = min(config.max_domains, s.options.max_memory_bytes // pending.bytes_per_domain())
            if len(pending) > cap:
                return self.outcome("unknown", note="domain limit")
            fits = int((deadline - time.monotonic()) / self.per_domain) if self.per_domain > 0 else self.size
            if self.batch_seconds is not None and self.per_domain > 0:
                fits = min(fits, int(self.batch_seconds / self.per_domain))
            dom = pending.pop(max(1, min(self.size, len(pending), fits)))  # a batch should end before the deadline
            t_batch = time.monotonic()
            returned = bool(self.cold) and bool(self.cold.intersection(dom.ids.tolist()))
            cold = returned or bool((dom.ids < self.cold_below).any())
            cfg = _with_iterations(s.options.beta, s.options.root_iterations) if cold else s.options.beta
            try:
                res = _bound(s, dom, cfg, warm=not returned)   # their zero-filled alphas would be a poor start
            except _OOM:
                pending.push(dom)
                if self.size == 1:
                    return self.outcome("unknown", note="out of memory")
                self.size = max(1, self.size // 2)
                continue
            if returned:
                self.cold.difference_update(dom.ids.tolist())
            s.visited += len(dom)
            out = _settle(s, dom, res, pending)
            # per domain: bounding, attacking, splitting and queueing (so that a batch ends before the deadline)
            self.per_domain = max(self.per_domain * 0.5, (time.monotonic() - t_batch) / len(dom))
            if out is not None:
                return self.outcome(out.status, out.counterexample, out.stats.get("note", ""))
        return self.outcome("holds")


def _with_iterations(cfg: BetaConfig, iterations: int) -> BetaConfig:
    """``cfg`` with another iteration count."""
    return dataclasses.replace(cfg, iterations=iterations)


def _bound(s: _Search, dom: Pending, cfg: BetaConfig, warm: bool = True):
    """beta-CROWN bounds of a batch of domains (``warm``: from their alphas; else from the defaults)."""
    n = len(dom)
    lo, hi = (t.expand((n,) + tuple(t.shape[1:])) for t in s.box)
    return compute_domains(s.engine, lo, hi, s.C, dom.tensors["splits"], reference=s.reference,
                           alphas=dom.tensors["alphas"] if warm else None, betas=dom.tensors["betas"], cfg=cfg,
                           refine=s.options.bounds in ("checker", "refined"), deadline=s.deadline)


def _settle(s: _Search, dom: Pending, res, pending: Pending) -> SplitOutcome | None:
    """Log proved domains; attack and split the rest. A non-None outcome ends the search."""
    margin = res.lower - s.b
    best, row = margin.max(1)
    proved = res.empty | (best > s.options.margin)
    if s.options.bounds == "hybrid" and bool(proved.any()):
        proved, res = _recheck(s, dom, res, proved)
        margin = res.lower - s.b
        best, row = margin.max(1)
    done = torch.nonzero(proved).flatten()
    _log_leaves(s, dom, res, done.tolist(), row[done].tolist(), best[done].tolist())
    open_ = torch.nonzero(~proved).flatten()
    if not open_.numel():
        return None
    cex = _attack(s, res, margin, row, open_)
    if cex is not None:
        return SplitOutcome("violated", cex, s.log, {})
    return _branch(s, dom, res, row, open_, pending)


def _recheck(s: _Search, dom: Pending, res, proved: torch.Tensor):
    """Re-bound the proved domains the checker's way; only those still proved stay proved.

    Returns the new proved mask and ``res`` with the re-derived bounds and parameters of the
    still-proved domains swapped in (so their leaves record what the checker will re-derive), and
    the checker-way intermediate bounds of every re-bounded domain.
    """
    idx = torch.nonzero(proved).flatten()
    sub = lambda d: {k: v[idx] for k, v in d.items()}
    lo, hi = (t.expand((idx.numel(),) + tuple(t.shape[1:])) for t in s.box)
    cfg = _with_iterations(s.options.beta, s.options.leaf_iterations)
    again = compute_domains(s.engine, lo, hi, s.C, sub(dom.tensors["splits"]), alphas=sub(res.alphas),
                            betas=sub(res.betas), cfg=cfg, refine=True, deadline=s.deadline)
    ok = again.empty | ((again.lower - s.b).max(1).values > s.options.margin)
    keep = idx[ok]
    lower = res.lower.clone()
    lower[keep] = again.lower[ok]
    for table, new in ((res.alphas, again.alphas), (res.betas, again.betas)):
        for name, t in new.items():
            table[name] = table[name].clone()
            table[name][keep] = t[ok]
    bounds = {}
    for name, (b_lo, b_hi) in res.bounds.items():  # failed domains branch on the checker-way bounds too
        b_lo, b_hi = b_lo.clone(), b_hi.clone()
        b_lo[idx], b_hi[idx] = again.bounds[name][0], again.bounds[name][1]
        bounds[name] = (b_lo, b_hi)
    new_proved = torch.zeros_like(proved)
    new_proved[keep] = True
    empty = res.empty.clone()
    empty[idx] = again.empty & ok
    return new_proved, BetaResult(lower, res.alphas, res.betas, bounds, empty, res.coeffs, res.input_A)


def _log_leaves(s: _Search, dom: Pending, res, idx: list[int], rows: list[int], bounds: list[float]) -> None:
    """Record proved domains ``idx`` (with their rows and bounds) with objective alphas and betas in path order."""
    if not idx:
        return
    at, row = torch.tensor(idx, device=dom.ids.device), torch.tensor(rows, device=dom.ids.device)
    alphas: dict[str, tuple[np.ndarray, np.ndarray]] = {}   # relu -> (unstable somewhere [n], alphas [n, *shape])
    for name, t in res.alphas.items():
        node = s.engine.nodes[name]
        if node.op != "relu":
            continue
        lo, hi = res.bounds[node.inputs[0]]
        lo, hi = (v[at] if v.shape[0] > 1 else v.expand((len(idx),) + tuple(v.shape[1:])) for v in (lo, hi))
        unstable = ((lo < 0) & (hi > 0)).flatten(1).any(1).cpu().numpy()
        alphas[name] = (unstable, t[at, row].detach().double().cpu().numpy())
    betas = {name: t[at, row].detach().flatten(1).double().cpu().numpy() for name, t in res.betas.items()}
    for j, ident in enumerate(dom.ids[at].tolist()):
        mine = {name: a[j] for name, (unstable, a) in alphas.items() if unstable[j]}
        path = s.log.path(ident)
        beta = None
        if path:
            beta = np.array([betas[node][j, k] if node in betas else 0.0 for node, k in path], dtype=np.float64)
        claim = bounds[j] if bounds[j] > 0 else EMPTY_CLAIM  # only empty domains are logged without a positive bound
        s.log.leaves.append((ident, rows[j], claim, mine, beta))


def _attack(s: _Search, res, margin, row, open_) -> object:
    """PGD on the region box from the bound minimisers of the least-proved open domains."""
    if res.input_A is None or s.options.attack_domains <= 0:
        return None
    order = open_[margin[open_].max(1).values.argsort()][: s.options.attack_domains]
    A_x = res.input_A[order, row[order]]
    lo, hi = s.box
    x = torch.where(A_x > 0, lo, hi).detach()
    graph, C, b = s.engine.graph, s.C[0], s.b
    step = (hi - lo) / 4
    for it in range(s.options.attack_steps + 1):
        x.requires_grad_(True)
        with torch.enable_grad():
            y = graph.forward(x).reshape(x.shape[0], -1)
            worst = (y @ C.T - b).max(1).values
            grad = torch.autograd.grad(worst.sum(), x)[0] if it < s.options.attack_steps else None
        x = x.detach()
        cex = _try(s, x, worst.detach())
        if cex is not None or grad is None:
            return cex
        x = torch.minimum(torch.maximum(x - step * grad.sign(), lo), hi)
        step = step * 0.7
    return None


def _try(s: _Search, x, worst) -> object:
    """Hand the candidates in the unsafe polytope (most violating first, at most 4) to ``validate``."""
    cand = torch.nonzero(worst <= 0).flatten()
    for i in cand[worst[cand].argsort()][:4].tolist():
        cex = s.validate(x[i].double().cpu().numpy().reshape(-1))
        if cex is not None:
            return cex
    return None


def _branch(s: _Search, dom: Pending, res, row, open_, pending: Pending) -> SplitOutcome | None:
    """Split every open domain on its best-scored neuron; children inherit alphas and betas."""
    splits = {k: v[open_] for k, v in dom.tensors["splits"].items()}
    scores = relu_scores(s.engine, _rows_of(res, open_), row[open_], splits)
    if not scores:
        return SplitOutcome("unknown", log=s.log, stats={"note": "the network has no relu to split"})
    names, pos, index = choose_neurons(scores)
    if bool((pos < 0).any()):
        return SplitOutcome("unknown", log=s.log, stats={"note": "a domain has no unstable relu left to split"})
    if s.options.branching == "fsb" and s.options.fsb_candidates > 1:
        pos, index = _fsb_choice(s, res, row[open_], open_, splits, scores, names)
    k, dev = open_.numel(), open_.device
    for name in names:
        if name not in splits:
            size = s.engine.nodes[name].size
            splits[name] = torch.zeros((k, size), dtype=torch.int8, device=dev)
    inactive = {n: t.clone() for n, t in splits.items()}
    active = {n: t.clone() for n, t in splits.items()}
    ar = torch.arange(k, device=dev)
    for j, name in enumerate(names):
        sel = ar[pos == j]
        inactive[name][sel, index[sel]] = -1
        active[name][sel, index[sel]] = 1
    ids = torch.arange(s.next_id, s.next_id + 2 * k, device=dev).reshape(2, k)
    s.next_id += 2 * k
    parents = dom.ids[open_]
    for p, j, ix, a, c in zip(parents.tolist(), pos.tolist(), index.tolist(), ids[0].tolist(), ids[1].tolist()):
        s.log.add_split(p, names[j], ix, a, c)
    warm = {g: {n: torch.cat([t[open_].detach()] * 2) for n, t in src.items()}
            for g, src in (("alphas", res.alphas), ("betas", res.betas))}
    tensors = {"splits": {n: torch.cat([inactive[n], active[n]]) for n in names}, **warm}
    depth = torch.cat([dom.depth[open_] + 1] * 2)
    s.max_depth = max(s.max_depth, int(depth.max()))
    _merge_push(pending, Pending(tensors, torch.cat([ids[0], ids[1]]), depth))
    return None


def _fsb_choice(s: _Search, res, row, open_, splits: dict, scores: dict, names: list[str]):
    """Filtered smart branching: per domain, of the ``fsb_candidates`` best-scored neurons the one
    whose worse child has the best bound (both children bounded once at the parent's parameters).

    Returns (node position [N], flat index [N]) like ``choose_neurons``.
    """
    sizes = [scores[n].shape[1] for n in names]
    flat = torch.cat([scores[n] for n in names], 1)                 # [N, total]
    n, k = flat.shape[0], min(s.options.fsb_candidates, flat.shape[1])
    top_val, top_idx = flat.topk(k, dim=1)
    offsets = torch.tensor([0] + sizes, device=flat.device).cumsum(0)
    node_pos = torch.bucketize(top_idx, offsets[1:], right=True)      # [N, k]
    node_idx = top_idx - offsets[node_pos]
    worse = torch.full((n, k), float("-inf"), dtype=s.b.dtype, device=flat.device)
    per = max(1, s.options.fsb_max_children // (2 * k))
    for start in range(0, n, per):
        doms = torch.arange(start, min(n, start + per), device=flat.device)
        worse[doms] = _fsb_bounds(s, res, row, open_, splits, names, doms, node_pos[doms], node_idx[doms], k)
    worse = torch.where(torch.isfinite(top_val), worse, torch.full_like(worse, float("-inf")))
    # ties (e.g. every candidate's worse child still hopeless by the same amount) keep the BaBSR order
    best = worse.argmax(1, keepdim=True)
    return node_pos.gather(1, best).squeeze(1), node_idx.gather(1, best).squeeze(1)


def _fsb_bounds(s: _Search, res, row, open_, splits, names, doms, node_pos, node_idx, k: int) -> torch.Tensor:
    """min over the two children of each (domain, candidate) of the chosen row's margin: [len(doms), k]."""
    m, dev = doms.numel(), doms.device
    rep = doms.repeat_interleave(k).repeat(2)                          # children: (sign, domain, candidate)
    pos, idx = node_pos.reshape(-1).repeat(2), node_idx.reshape(-1).repeat(2)
    sign = torch.cat([torch.full((m * k,), -1, dtype=torch.int8, device=dev),
                      torch.ones(m * k, dtype=torch.int8, device=dev)])
    child = {}
    for j, name in enumerate(names):
        size = s.engine.nodes[name].size
        base = splits[name][rep] if name in splits else torch.zeros((rep.numel(), size), dtype=torch.int8, device=dev)
        base = base.clone()
        sel = torch.nonzero(pos == j).flatten()
        base[sel, idx[sel]] = sign[sel]
        child[name] = base
    parent = open_[rep]
    alphas = {name: t[parent].detach() for name, t in res.alphas.items()}
    betas = {name: t[parent].detach() for name, t in res.betas.items()}
    lo, hi = (t.expand((rep.numel(),) + tuple(t.shape[1:])) for t in s.box)
    low, empty = quick_domains(s.engine, lo, hi, s.C, child, reference=s.reference, alphas=alphas, betas=betas,
                               refine=s.options.bounds in ("checker", "refined"))
    r = row[rep]
    margin = low.gather(1, r[:, None]).squeeze(1) - s.b[r]
    margin = torch.where(empty, torch.full_like(margin, float("inf")), margin)
    return torch.minimum(margin[:m * k], margin[m * k:]).reshape(m, k)


def _rows_of(res, open_):
    """A view of ``res`` restricted to the open domains (bounds and coefficients)."""
    pick = lambda d: {k: v[open_] for k, v in d.items()}
    bounds = {k: (lo[open_] if lo.shape[0] > 1 else lo, hi[open_] if hi.shape[0] > 1 else hi)
              for k, (lo, hi) in res.bounds.items()}
    return BetaResult(res.lower[open_], pick(res.alphas), pick(res.betas), bounds, res.empty[open_],
                      pick(res.coeffs), None)


def _merge_push(pending: Pending, new: Pending) -> None:
    """Push ``new`` onto ``pending``, first giving either side the tensors only the other has (zeros)."""
    if len(pending) == 0:
        pending.tensors, pending.ids, pending.depth = new.tensors, new.ids, new.depth
        return
    for g in new.tensors:
        for name in set(new.tensors[g]) | set(pending.tensors[g]):
            for side, other in ((pending, new), (new, pending)):
                if name not in side.tensors[g]:
                    like = other.tensors[g][name]
                    side.tensors[g][name] = torch.zeros((len(side),) + tuple(like.shape[1:]), dtype=like.dtype,
                                                        device=like.device)
    pending.push(new)


def _stats(s: _Search, pending: Pending, t0: float, note: str = "") -> dict:
    """Search statistics for the outcome."""
    return {"domains": s.visited, "pending": len(pending), "max_depth": s.max_depth, "leaves": len(s.log.leaves),
            "time": round(time.monotonic() - t0, 4), **({"note": note} if note else {})}
