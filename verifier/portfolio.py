"""``verify``: the pipeline that settles a property in short steps, within a wall-clock budget.

Each step may settle the verdict: load -> attack -> bounds (IBP, CROWN, alpha-CROWN) -> exact.
A ``violated`` answer always carries a counterexample onnxruntime confirmed on the original file;
a ``holds`` answer is re-derived in float64 before it is reported.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from verifier import clock
from verifier.bounds.box import outward_box
from verifier.bounds.nonlinear import ZeroInIntervalError
from verifier.certify import bound_leaf
from verifier.config import VerifyConfig
from verifier.result import Result, Verdict
from verifier.spec.spec import Spec
from verifier.threads import cpu_threads, pick_device  # noqa: F401 -- used below and by callers


log = logging.getLogger("nnverify")

SEARCH_EVERY = 0.5   # seconds between two ``search`` progress events of one branch-and-bound search


class InputError(ValueError):
    """A model, spec or option the user supplied cannot be used (reported as ``error``)."""


@dataclass
class Goal:
    """One (region, polytope) pair: the property holds iff every goal is proved."""

    region: int
    polytope: int
    proved: bool = False
    best_lower: float = -np.inf   # best lower bound found on the polytope's best row margin
    method: str = ""
    proof: object = None          # what a certificate is built from (e.g. the input-split log)


@dataclass
class Run:
    """State of one ``verify`` call: deadline, goals, log."""

    model: object
    spec: Spec
    spec_sha256: str
    config: VerifyConfig
    deadline: float
    device: torch.device
    result: Result
    goals: list[Goal] = field(default_factory=list)
    onnx_runner: object = None    # onnxruntime on the original file, created on first use
    engine: object = None         # the bound engine (prepared weights), created on first use
    intermediate: dict = field(default_factory=dict)  # region -> node bounds from the last bound pass
    unstable: int | None = None   # unstable ReLU count under the (first) region box, from CROWN
    started: float = field(default_factory=time.monotonic)
    progress: Callable[[dict], object] | None = None   # the caller's progress callback (see ``verify``)
    offload: object = None        # a pool that searches chunks of input-split searches (see ``verify``)

    def left(self) -> float:
        """Seconds left in the budget (``-inf`` once the run is cancelled)."""
        return clock.left(self.deadline)

    def elapsed(self) -> float:
        """Seconds since the run started (after loading)."""
        return time.monotonic() - self.started

    def note(self, message: str) -> None:
        """Append a timestamped line to the method log and report it as a ``step`` event."""
        elapsed = self.elapsed()
        self.result.log.append(f"{elapsed:7.3f}s {message}")
        if self.progress is not None:
            self.emit({"event": "step", "elapsed": round(elapsed, 3), "message": message,
                       "proved": len(self.goals) - len(self.open_goals()), "goals": len(self.goals),
                       "best_bound": self.best_bound()})

    def emit(self, event: dict) -> None:
        """Hand ``event`` to the progress callback; a callback that raises is logged and dropped."""
        if self.progress is None:
            return
        try:
            self.progress(event)
        except Exception:
            log.warning("progress callback raised; no more progress events from this run", exc_info=True)
            self.progress = None

    def best_bound(self) -> float | None:
        """The smallest best lower bound over the open goals (None: no open goal, or one not bounded yet)."""
        low = min((g.best_lower for g in self.open_goals()), default=math.nan)
        return float(low) if math.isfinite(low) else None

    def timed(self, name: str, t0: float) -> None:
        """Accumulate the time since ``t0`` under ``name``."""
        self.result.timings[name] = self.result.timings.get(name, 0.0) + time.monotonic() - t0

    def open_goals(self) -> list[Goal]:
        return [g for g in self.goals if not g.proved]


def load_inputs(model, spec, float_as_real: bool = False):
    """Load the model and spec (paths or objects); raise ``InputError`` with one clear line.

    A spec file with a ``(vnnlib-version <2.0>)`` header is a VNN-LIB 2.0 query of one network:
    it is compiled with ``model`` bound to that network (``verifier.query``).
    """
    from verifier.certificate import sha256_file
    from verifier.model.onnx_loader import ModelLoadError, UnsupportedModelError, load_onnx
    from verifier.spec.vnnlib import VnnlibError, load_vnnlib

    if isinstance(spec, (str, Path)) and _is_query(spec):
        return _load_query(model, spec, float_as_real)
    spec_sha256 = getattr(spec, "sha256", "")
    try:
        if isinstance(model, (str, Path)):
            model = load_onnx(str(model))
        if isinstance(spec, (str, Path)):
            spec_sha256 = sha256_file(spec)
            spec = load_vnnlib(str(spec))
    except (ModelLoadError, UnsupportedModelError, VnnlibError, OSError) as exc:
        raise InputError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    graph = model.graph
    if spec.n_inputs != graph.n_inputs:
        raise InputError(f"spec declares {spec.n_inputs} inputs X_i but the network has {graph.n_inputs}")
    if spec.n_outputs != graph.n_outputs:
        raise InputError(f"spec declares {spec.n_outputs} outputs Y_j but the network has {graph.n_outputs}")
    return model, spec, spec_sha256


def _is_query(path) -> bool:
    """Whether the spec file is a VNN-LIB 2.0 query (by its version header)."""
    from verifier.spec.vnnlib2 import version_of

    try:
        with open(path, "rb") as fh:
            return version_of(fh.read(4096)) is not None
    except OSError:
        return False


def _load_query(model, path, float_as_real: bool):
    """A 2.0 query of one network, compiled with ``model`` (a path or a loaded ``Model``) bound to it."""
    from verifier.query.compile import compile_query
    from verifier.spec.vnnlib2 import QueryError, load_query

    try:
        query = load_query(path)
        if hasattr(model, "compiled"):       # already compiled once (e.g. by a caller's load_inputs)
            model = model.compiled.networks[0]
        compiled = compile_query(query, {query.only_network(): str(getattr(model, "path", model))}, float_as_real)
    except (QueryError, OSError) as exc:
        raise InputError(str(exc).splitlines()[0]) from exc
    return compiled.model, compiled.spec, compiled.spec.sha256


def verify(model, spec, config: VerifyConfig | None = None, *, cancel: clock.CancelEvent | None = None,
           progress: Callable[[dict], object] | None = None, offload=None) -> Result:
    """Decide whether ``spec`` holds for ``model`` (ONNX path or loaded ``Model``).

    ``cancel``: an event (anything with ``is_set()``, e.g. ``threading.Event``). Once it is set,
    every deadline check of the run fires at its next look (``verifier.clock``): the run stops
    within about a second and, unless it had already settled the verdict with full evidence,
    reports ``unknown`` with a reason starting ``cancelled``. One process runs one ``verify`` at a time.

    ``progress``: called with one JSON-serialisable dict per event: ``{"event": "step", "elapsed",
    "message", "proved", "goals", "best_bound"}`` for every method-log line, and ``{"event":
    "search", "elapsed", "domains", "pending", "method"}`` from branch and bound (at most every
    ``SEARCH_EVERY`` seconds per search). A callback that raises is logged and not called again.

    ``offload``: a ``verifier.search.distribute.Offload`` (e.g. the service's worker pool); input
    splitting still open after ``config.bab.distribute_after`` seconds ships chunks of its pending
    domains to it, and their proofs join the one certificate tree.
    """
    with clock.cancel_scope(cancel):
        return _verify(model, spec, config or VerifyConfig(), progress, offload)


def _verify(model, spec, config: VerifyConfig, progress, offload=None) -> Result:
    """``verify``'s body, inside the run's cancel scope."""
    t0 = time.monotonic()
    result = Result(Verdict.UNKNOWN)
    try:
        model, spec, spec_sha256 = load_inputs(model, spec, config.float_as_real)
    except InputError as exc:
        result.verdict, result.reason = Verdict.ERROR, str(exc)
        result.timings["total"] = time.monotonic() - t0
        return result
    result.timings["load"] = time.monotonic() - t0
    run = Run(model, spec, spec_sha256, config, t0 + config.timeout, pick_device(config.bounds.device), result,
              progress=progress, offload=offload)
    run.goals = [Goal(r, p) for r, reg in enumerate(spec.regions) for p in range(len(reg.unsafe))]
    try:
        with cpu_threads(_threads(run)):
            _run_route(run)
        if hasattr(model, "compiled"):
            result.query = _query_record(model.compiled, result)
    except ZeroInIntervalError as exc:  # e.g. a division whose denominator's bounds contain 0
        result.verdict, result.counterexample = Verdict.UNKNOWN, None
        result.reason = f"bounds undefined: {exc}"
    except Exception as exc:  # a bug or resource failure must not take the caller down
        result.verdict, result.counterexample = Verdict.ERROR, None
        result.reason = f"internal error: {type(exc).__name__}: {exc}"
        result.log.append(traceback.format_exc())
    finally:
        result.timings["total"] = time.monotonic() - t0
    return result


def _query_record(compiled, result: Result) -> dict:
    """A 2.0 query's version and networks (into the certificate too), and the witness by variable name."""
    from verifier.query.witness import witness_lines

    record = compiled.header()
    if isinstance(result.certificate, dict):
        result.certificate["query"] = dict(record)
    if result.counterexample is not None:
        lines = witness_lines(compiled, result.counterexample.x, result.counterexample.y)
        record["witness"] = dict(line.split("=", 1) for line in lines)
    return record


def _threads(run: Run) -> int:
    """The thread count for this run (``BoundsConfig.threads``; 0 = auto by graph size)."""
    cfg = run.config.bounds
    if cfg.threads:
        return cfg.threads
    params = sum(t.numel() for n in run.model.graph.nodes for t in n.params.values() if t is not None)
    return 1 if params < cfg.small_graph_params else 0


def _run_route(run: Run) -> None:
    """Choose the route and run its steps until one settles the verdict or the budget ends."""
    result = run.result
    result.route, result.route_reason, steps = choose_route(run)
    run.note(f"route {result.route}: {result.route_reason}; {torch.get_num_threads()} torch threads")
    from verifier.bounds import DeadlineReached

    for step in steps:
        try:
            settled = step(run)
        except DeadlineReached as exc:   # the budget ran out inside one bound propagation
            run.note(str(exc))
            break
        if settled or run.left() <= 0:
            break
    _finish(run)


def _certified(run: Run) -> bool:
    """Check every bound-propagation proof with the independent checker; False demotes to unknown.

    Leaves the checker cannot re-derive (its plain float64 CROWN can be looser than the engine's
    bounds) are split further and re-proved, a few rounds at most, before giving up; each round
    re-checks only the subtrees that replaced weak leaves.
    """
    from verifier.certify import certify

    if not run.config.check_certificates:
        run.result.certificate_checked = False
        run.note("certificate check disabled: holds is unchecked")
        return True
    if not any(g.proof is not None for g in run.goals):
        run.result.certificate_checked = not any(g.proof is None for g in run.goals)
        return True
    only = None   # after a repair, only the new subtrees need checking: every other leaf was accepted
    for _ in range(6):
        proofs = [(g.region, g.polytope, g.proof) for g in run.goals if g.proof is not None]
        t0 = time.monotonic()
        cert, report = certify(run.model.graph, run.spec, run.model.sha256, run.spec_sha256, proofs, run.deadline,
                               only, _workers(run))
        run.timed("check", t0)
        run.note(f"certificate: {report.leaves} leaves, checked in {report.time:.3f}s: "
                 f"{'ok' if report.ok else f'{len(report.weak)} weak leaves' if report.weak else 'REJECTED'}")
        if report.ok:
            run.result.certificate = cert
            run.result.certificate_checked = not any(g.proof is None for g in run.goals)
            return True
        if report.failures != len(report.weak) or run.left() <= 0 or not _repair(run, report.weak):
            break
        only = {leaf.where for _, _, leaf in report.weak}
    for g in run.goals:  # bound-propagation proofs no longer count; exact ones (no tree) still do
        g.proved = g.proved and g.proof is None
    run.result.certificate_checked = False
    if run.left() <= 0:
        run.note("budget spent before the certificate was checked: holds not reported")
        return False
    log.error("certificate REJECTED by the independent checker: %s", "; ".join(report.reasons[:5]))
    run.result.reason = "certificate rejected by the independent checker: " + "; ".join(report.reasons[:3])
    return False


def _workers(run: Run) -> int:
    """Processes for input splitting and the certificate check: up to ``config.workers`` cores
    while the run itself uses one torch thread on CPU (a small network), else one (also inside a
    daemonic process, e.g. a pool worker, which may not start children)."""
    import multiprocessing

    if (run.device.type != "cpu" or torch.get_num_threads() != 1 or multiprocessing.current_process().daemon
            or "fork" not in multiprocessing.get_all_start_methods()):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(run.config.workers, cores))


def _repair(run: Run, weak) -> bool:
    """Replace each weak input-box leaf by a subtree that re-proves it: two input-split halves on
    small inputs, a ReLU-split search of the leaf's box on wide ones (bisecting 784 inputs is hopeless)."""
    from verifier.bounds import DeadlineReached

    try:
        return _split_weak_leaves(run, weak)
    except DeadlineReached:
        return False


def _split_weak_leaves(run: Run, weak) -> bool:
    """``_repair``'s work (the engine may stop it at the deadline)."""
    from verifier.search.input_split import input_split
    from verifier.search.relu_split import ReluSplitOptions, relu_split

    engine, wide = _engine(run), run.model.graph.n_inputs > run.config.bab.input_split_max_dims
    for region, polytope, leaf in weak:
        if leaf.splits or run.left() <= 0:
            return False
        goal = next(g for g in run.goals if (g.region, g.polytope) == (region, polytope))
        node = goal.proof
        for step in leaf.where.split(").", 1)[1].split(".") if ")." in leaf.where else []:
            node = node["children"][0 if step in ("L", "I") else 1]
        poly = run.spec.regions[region].unsafe[polytope]
        if wide:
            out = relu_split(engine, run.model.graph, leaf.lower, leaf.upper, poly.A, poly.b, lambda x: None,
                             run.deadline, run.config.bab, device=run.device,
                             options=ReluSplitOptions(bounds="checker"))  # a subtree: no root alphas of its own
            if out.status != "holds":
                return False
            node.clear()
            node.update(out.log.tree())
            continue
        width = (leaf.upper - leaf.lower) / np.maximum(run.spec.regions[region].upper - run.spec.regions[region].lower, 1e-300)
        dim = int(np.argmax(width))
        mid = float((leaf.lower[dim] + leaf.upper[dim]) / 2)
        if not leaf.lower[dim] < mid < leaf.upper[dim]:
            return False
        low_upper, high_lower = leaf.upper.copy(), leaf.lower.copy()
        low_upper[dim] = high_lower[dim] = mid
        halves = []
        for lo, hi in ((leaf.lower, low_upper), (high_lower, leaf.upper)):
            out = input_split(engine, run.model.graph, lo, hi, poly.A, poly.b, lambda x: None, run.deadline,
                              run.config.bab, device=run.device, aux=poly.aux)
            if out.status != "holds":
                return False
            halves.append(out.log.tree())
        node.clear()
        node.update({"split": {"kind": "input", "dim": dim, "at": mid}, "children": halves})
    return True


def _finish(run: Run) -> None:
    """Turn the goals' state into the final verdict when no step settled it."""
    res = run.result
    if res.verdict in (Verdict.VIOLATED, Verdict.ERROR):
        return
    res.bounds = [{"region": g.region, "polytope": g.polytope, "lower": g.best_lower,
                   "proved": g.proved, "method": g.method} for g in run.goals]
    if all(g.proved for g in run.goals) and _certified(run):
        res.verdict = Verdict.HOLDS
        res.method = res.method or ", ".join(sorted({g.method for g in run.goals}))
        res.reason = res.reason or "every unsafe region refuted by a sound bound"
    elif clock.cancelled():
        res.verdict = Verdict.UNKNOWN
        res.reason = (f"cancelled after {run.elapsed():.1f} s; {len(run.open_goals())} of {len(run.goals)} "
                      "goals open")
    elif run.left() <= 0:
        res.verdict = Verdict.TIMEOUT
        res.reason = f"budget of {run.config.timeout:g} s spent; {len(run.open_goals())} of {len(run.goals)} goals open"
    else:
        res.verdict = Verdict.UNKNOWN
        res.reason = res.reason or f"{len(run.open_goals())} of {len(run.goals)} goals not proved and no counterexample found"


# --- the steps -----------------------------------------------------------------------------
# Each step takes the run, may settle the verdict (returns True), and records what it did.


def step_quick_attack(run: Run) -> bool:
    """A short attack before bounding: most easy counterexamples fall to a few restarts."""
    cfg = run.config.attack
    return _attack(run, dataclasses.replace(cfg, restarts=max(1, cfg.restarts // 4), steps=max(1, cfg.steps // 5)), "quick")


def step_attack(run: Run) -> bool:
    """The full attack, run once bounds alone did not settle the property."""
    return _attack(run, run.config.attack, "full")


def _attack(run: Run, cfg, label: str) -> bool:
    """PGD + random search; a counterexample counts only after onnxruntime confirms it."""
    from verifier.search.attack import attack

    t0 = time.monotonic()
    cfg = dataclasses.replace(cfg, seed=cfg.seed + (label == "full"))
    cex = attack(run.model.graph, run.spec, _runner(run), cfg, deadline=run.deadline, device=run.device,
                 exact_inputs=run.config.exact_inputs)
    run.timed("attack", t0)
    if cex is None:
        run.note(f"attack ({label}): no counterexample")
        return False
    run.note(f"attack: counterexample, margin {cex.margin:.3g}")
    return _violated(run, cex, "attack")


def region_objective(spec: Spec, region: int, goals: list[Goal]):
    """Stack the rows of the goals' polytopes: (C [m, n_out], b [m], row slices per goal)."""
    rows, rhs, slices, start = [], [], [], 0
    for g in goals:
        poly = spec.regions[region].unsafe[g.polytope]
        rows.append(poly.A)
        rhs.append(poly.b)
        slices.append(slice(start, start + len(poly.b)))
        start += len(poly.b)
    return np.concatenate(rows), np.concatenate(rhs), slices


def step_bounds(run: Run) -> bool:
    """CROWN, then alpha-CROWN, on every open goal; a goal is proved when some row's margin > 0."""
    methods = {"ibp": ["ibp"], "crown": ["crown"], "alpha": ["crown", "alpha"]}.get(run.config.method, ["crown", "alpha"])
    return _bound_goals(run, methods)


def step_crown(run: Run) -> bool:
    """CROWN alone (before input splitting, where alpha-CROWN rarely pays for itself)."""
    return _bound_goals(run, ["crown"])


def _bound_goals(run: Run, methods: list[str]) -> bool:
    """Bound every open goal with each method in turn; True once all are proved."""
    for method in methods:
        t0 = time.monotonic()
        for region in sorted({g.region for g in run.open_goals()}):
            if run.left() <= 0:
                break
            _bound_region(run, region, method)
        run.timed(method, t0)
        run.note(f"{method}: {len(run.goals) - len(run.open_goals())}/{len(run.goals)} goals proved")
        if not run.open_goals():
            return True
    return False


def _bound_region(run: Run, region: int, method: str) -> None:
    """Bound every open goal of one region with ``method`` and mark the proved ones."""
    goals = [g for g in run.open_goals() if g.region == region]
    C, b, slices = region_objective(run.spec, region, goals)
    graph = run.model.graph
    reg = run.spec.regions[region]
    dtype = getattr(torch, run.config.bounds.dtype)
    engine = _engine(run)
    box = outward_box(reg.lower, reg.upper, dtype, run.device, (1,) + graph.input_shape)
    Ct = torch.as_tensor(C, dtype=dtype, device=run.device).unsqueeze(0)
    res = engine.compute(box[0], box[1], Ct, method=method, alpha=run.config.bounds.alpha,
                         deadline=run.deadline)
    run.intermediate[region] = res.intermediate
    if run.unstable is None:
        run.unstable = count_unstable(graph, res.intermediate)
    margin = res.lower[0].double().cpu().numpy() - b
    for g, sl in zip(goals, slices):
        if sl.stop == sl.start:
            continue  # no output constraint: the whole box is unsafe, only a counterexample settles it
        row = int(np.argmax(margin[sl]))
        best = float(margin[sl][row])
        g.best_lower = max(g.best_lower, best)
        if best > 0:
            alphas = _row_alphas(graph, res.alphas, sl.start + row)
            g.proved, g.method = True, method
            g.proof = bound_leaf(row, best, reg.lower, reg.upper, alphas)


def _row_alphas(graph, alphas, row: int) -> dict[str, np.ndarray]:
    """The relu lower-bound slopes the engine used for spec row ``row`` (for the certificate)."""
    from verifier.bounds import SPEC

    if not alphas or SPEC not in alphas:
        return {}
    ops = {n.name: n.op for n in graph.nodes}
    out = {}
    for name, slopes in alphas[SPEC].slopes.items():
        if ops.get(name) == "relu":
            out[name] = slopes[0, row if slopes.shape[1] > 1 else 0].detach().double().cpu().numpy()
    return out


def count_unstable(graph, intermediate) -> int:
    """ReLU-like neurons whose input interval straddles 0 (these need a relaxation or a binary)."""
    total = 0
    for node in graph.nodes:
        if node.op in ("relu", "leaky_relu") and node.inputs[0] in intermediate:
            lo, hi = intermediate[node.inputs[0]]
            total += int(((lo < 0) & (hi > 0)).sum())
    return total


def step_bab(run: Run) -> bool:
    """Branch and bound on every open goal: input splitting for small inputs, else ReLU splitting."""
    from verifier.counterexample import validate
    from verifier.search.input_split import input_split
    from verifier.search.relu_split import relu_split

    graph = run.model.graph
    by_input = graph.n_inputs <= run.config.bab.input_split_max_dims
    search, method = (input_split, "bab-input") if by_input else (relu_split, "bab-relu")
    run.note(f"bab: {method} ({graph.n_inputs} inputs)")
    runner, engine = _runner(run), _engine(run)
    check = _exact(run, lambda x: validate(runner, run.spec, x, "bab", exact_inputs=run.config.exact_inputs))
    t0 = time.monotonic()
    roots: dict[int, dict] = {}   # region -> polytope -> RootBounds (ReLU splitting: one root alpha-CROWN per region)
    try:
        # the goal with the worst bound first: the likeliest to be violated (a counterexample ends the
        # run); when every goal holds, the order does not change what must be proved
        for goal in sorted(run.open_goals(), key=lambda g: g.best_lower):
            reg = run.spec.regions[goal.region]
            poly = reg.unsafe[goal.polytope]
            extra = {"offload": run.offload, "goal": (goal.region, goal.polytope)}
            if by_input:
                extra.update(falsify=[(p.A, p.b) for p in reg.unsafe], workers=_workers(run), aux=poly.aux)
            else:
                extra["root"] = _shared_root(run, engine, goal, roots)
            out = search(engine, graph, reg.lower, reg.upper, poly.A, poly.b, check, run.deadline, run.config.bab,
                         device=run.device, progress=_search_progress(run, method), **extra)
            run.note(f"{method} region {goal.region} polytope {goal.polytope}: {out.status} {out.stats}")
            if out.status == "violated":
                return _violated(run, out.counterexample, method)
            if out.status != "holds":
                run.result.reason = f"{method}: {out.status} on region {goal.region} polytope {goal.polytope}"
                return False
            goal.proved, goal.method, goal.proof = True, method, out.log.tree()
    finally:
        run.timed("bab", t0)
    return not run.open_goals()


def _shared_root(run: Run, engine, goal, roots: dict):
    """The root bounds of ``goal``'s ReLU-split search, computed once for every open polytope of its region."""
    from verifier.search.relu_split import shared_roots

    if goal.region not in roots:
        reg = run.spec.regions[goal.region]
        polys = [g.polytope for g in run.open_goals() if g.region == goal.region]
        found = shared_roots(engine, reg.lower, reg.upper, [reg.unsafe[p].A for p in polys], polys)
        roots[goal.region] = dict(zip(polys, found))
    return roots[goal.region][goal.polytope]


def step_smooth_bab(run: Run) -> bool:
    """Sigmoid / tanh networks: branch and bound on pre-activation intervals (GenBaB-style)."""
    from verifier.search.smooth_split import smooth_split

    graph, engine = run.model.graph, _engine(run)
    run.note(f"bab: bab-smooth ({sum(n.op in ('sigmoid', 'tanh') for n in graph.nodes)} sigmoid/tanh nodes)")
    t0 = time.monotonic()
    try:
        for goal in run.open_goals():
            reg = run.spec.regions[goal.region]
            poly = reg.unsafe[goal.polytope]
            out = smooth_split(engine, graph, reg.lower, reg.upper, poly.A, poly.b, run.deadline, run.config.bab,
                               progress=_search_progress(run, "bab-smooth"))
            run.note(f"bab-smooth region {goal.region} polytope {goal.polytope}: {out.status} {out.stats}")
            if out.status != "holds":
                run.result.reason = f"bab-smooth: {out.status} on region {goal.region} polytope {goal.polytope}"
                return False
            goal.proved, goal.method, goal.proof = True, "bab-smooth", out.log.tree()
    finally:
        run.timed("bab", t0)
    return not run.open_goals()


def _search_progress(run: Run, method: str):
    """The counts hook for one branch-and-bound search: ``search`` events, one per ``SEARCH_EVERY`` s."""
    if run.progress is None:
        return None
    last = [-math.inf]

    def report(counts: dict) -> None:
        now = time.monotonic()
        if now - last[0] >= SEARCH_EVERY:
            last[0] = now
            run.emit({"event": "search", "elapsed": round(now - run.started, 3), "domains": int(counts["domains"]),
                      "pending": int(counts["pending"]), "method": method})
    return report


def _engine(run: Run):
    """The bound engine for this run's graph, device and dtype (created once per run)."""
    from verifier.bounds import BoundEngine

    if run.engine is None:
        run.engine = BoundEngine(run.model.graph, device=run.device, dtype=getattr(torch, run.config.bounds.dtype))
        run.engine.deadline = run.deadline
    return run.engine


def _runner(run: Run):
    """The onnxruntime session on the original file (created once per run)."""
    if run.onnx_runner is None:
        run.onnx_runner = run.model.reference_runner()
    return run.onnx_runner


def step_milp(run: Run) -> bool:
    """Exact MILP on each open goal, when the network is small enough (or MILP was asked for)."""
    unstable = run.unstable
    if run.config.method == "auto" and (unstable is None or unstable > run.config.exact.milp_max_unstable):
        run.note(f"milp: skipped ({unstable} unstable neurons > {run.config.exact.milp_max_unstable})")
        return False
    from verifier.exact.milp import MilpUnsupported, verify_milp
    t0 = time.monotonic()
    try:
        for goal in run.open_goals():
            reg = run.spec.regions[goal.region]
            bounds = run.intermediate.get(goal.region)
            try:
                out = verify_milp(run.model.graph, reg, reg.unsafe[goal.polytope], bounds=bounds, timeout=max(run.left(), 0.1))
            except MilpUnsupported as exc:
                run.note(f"milp: {exc}")
                return False
            run.note(f"milp region {goal.region} polytope {goal.polytope}: {out.status} ({out.backend}; {out.reason})")
            if out.status == "violated":
                return _solver_witness(run, out.x, "milp")
            if out.status != "holds":
                return False
            goal.proved, goal.method, goal.best_lower = True, f"milp-{out.backend}", max(goal.best_lower, out.bound or 0.0)
            run.result.certificate_checked = False  # MILP optimality is the solver's word; no checker yet
    finally:
        run.timed("milp", t0)
    return not run.open_goals()


SAT_FALSIFY_SHARE = 0.25   # share of the time left that the SAT route spends falsifying first
SAT_FALSIFY_MAX = 20.0     # ... at most this many seconds


def step_sat(run: Run) -> bool:
    """Binarized network: falsify first (STE sign-gradient PGD + local search), then the exact SAT
    encoding of the property's cone; UNSAT proves holds, every witness is confirmed by onnxruntime."""
    from verifier.exact.bnn_sat import verify_bnn_spec

    t0 = time.monotonic()
    try:
        if _sat_falsify(run):
            return True
        if run.left() <= 0:
            run.note("sat: budget spent before the encoding")
            return False
        out = verify_bnn_spec(run.model.graph, run.spec, deadline=run.deadline, log=run.note, attack_samples=32)
        run.note(f"sat: {out.status} ({out.reason})")
        if out.status == "violated":
            return _solver_witness(run, out.x, "sat")
        if out.status == "holds":
            for g in run.goals:
                g.proved, g.method = True, "sat"
            run.result.certificate_checked = False  # UNSAT is the SAT solver's word (no DRAT checker installed)
            run.result.reason = "SAT encoding UNSAT for every region"
            return True
        run.result.reason = f"sat: {out.reason}"
        if run.left() > 3.0:  # the encoding gave up early: the rest of the budget goes to falsifying
            return _sat_falsify(run, share=1.0, seed=1000)
        return False
    finally:
        run.timed("sat", t0)


def _sat_falsify(run: Run, share: float = SAT_FALSIFY_SHARE, seed: int = 0) -> bool:
    """The BNN falsifier on every region within its share of the budget; True once onnxruntime confirms."""
    from verifier.exact.bnn_attack import falsify
    from verifier.exact.bnn_sat import recognise_bnn

    graph, structure = run.model.graph, recognise_bnn(run.model.graph)
    dtype = structure.dtype if structure is not None else np.float32
    cap = SAT_FALSIFY_MAX if share < 1 else math.inf
    stop = min(run.deadline - 1.0, clock.now() + min(share * max(run.left(), 0.0), cap))  # 1 s: confirmation
    t0 = time.monotonic()
    try:
        for ri, region in enumerate(run.spec.regions):
            if clock.now() >= stop:
                break
            x, stats = falsify(graph, region, region.unsafe, stop, structure=structure, dtype=dtype,
                               seed=run.config.attack.seed + seed + ri)
            for line in stats.log:
                run.note(f"sat falsify region {ri}: {line}")
            if x is not None and _solver_witness(run, x, "attack"):
                return True
    finally:
        run.timed("attack", t0)
    return False


def _solver_witness(run: Run, x, source: str) -> bool:
    """An exact solver's witness counts only once onnxruntime confirms it on the original file."""
    from verifier.counterexample import validate

    cex = validate(_runner(run), run.spec, x, source, exact_inputs=run.config.exact_inputs)
    if cex is not None:
        return _violated(run, cex, source)
    run.note(f"{source}: solver witness not confirmed by onnxruntime")
    return False


def _exact(run: Run, check):
    """``check`` followed by the model's exact re-check of a witness (2.0 queries), so a search goes on past a rejected one."""
    exact = getattr(run.model, "confirm", None)
    if exact is None:
        return check

    def both(x):
        cex = check(x)
        return cex if cex is None or exact(cex.x, cex.y) else None

    return both


def _violated(run: Run, cex, method: str) -> bool:
    """Record a confirmed counterexample as the verdict (a 2.0 query re-checks it exactly first)."""
    exact = getattr(run.model, "confirm", None)
    if exact is not None and not exact(cex.x, cex.y):
        run.note(f"{method}: witness confirmed on onnxruntime but it fails the exact re-check of the query "
                 "(a strict or rounded constraint at its boundary): not reported")
        return False
    run.result.verdict, run.result.counterexample, run.result.method = Verdict.VIOLATED, cex, method
    run.result.reason = f"counterexample confirmed by onnxruntime (region {cex.region}, polytope {cex.polytope})"
    return True


ROUTES = {
    "attack": (step_attack,),
    "ibp": (step_quick_attack, step_bounds), "crown": (step_quick_attack, step_bounds),
    "alpha": (step_quick_attack, step_bounds),
    "bab": (step_quick_attack, step_bounds, step_attack, step_bab),
    "milp": (step_quick_attack, step_bounds, step_milp),
    "sat": (step_sat,),
    "bounds": (step_quick_attack, step_bounds, step_attack, step_bab, step_milp),
    "input-split": (step_quick_attack, step_crown, step_bab),
    "smooth-bab": (step_quick_attack, step_bounds, step_attack, step_smooth_bab),
}


def choose_route(run: Run):
    """(route name, reason, steps): SAT for binarized nets, else attack + bounds + BaB + MILP."""
    method, graph = run.config.method, run.model.graph
    if method != "auto":
        return method, f"--method {method}", ROUTES[method]
    ops = sorted({n.op for n in graph.nodes})
    if "sign" in ops:   # only then is the SAT encoder (and its solver package) worth importing
        from verifier.exact.bnn_sat import bnn_reason, recognise_bnn

        if recognise_bnn(graph) is not None:
            return "sat", "binarized network (sign activations, +-1 weights): exact SAT encoding", ROUTES["sat"]
        reason = bnn_reason(graph)
    else:
        reason = "no sign activation"
    why = f"{graph.n_inputs} inputs, ops {', '.join(ops)}; not binarized ({reason})"
    if graph.n_inputs <= run.config.bab.input_split_max_dims:
        return "input-split", why + f"; <= {run.config.bab.input_split_max_dims} inputs: input splitting", ROUTES["input-split"]
    if "relu" not in ops and ("sigmoid" in ops or "tanh" in ops):
        return "smooth-bab", why + "; sigmoid/tanh, no relu: pre-activation interval splitting", ROUTES["smooth-bab"]
    return "bounds", why, ROUTES["bounds"]
