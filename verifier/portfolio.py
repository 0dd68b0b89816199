"""``verify``: the pipeline that settles a property in short steps, within a wall-clock budget.

Each step may settle the verdict: load -> attack -> bounds (IBP, CROWN, alpha-CROWN) -> exact.
A ``violated`` answer always carries a counterexample onnxruntime confirmed on the original file;
a ``holds`` answer is re-derived in float64 before it is reported.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from verifier.config import VerifyConfig
from verifier.result import Result, Verdict
from verifier.spec.spec import Spec


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
    config: VerifyConfig
    deadline: float
    device: torch.device
    result: Result
    goals: list[Goal] = field(default_factory=list)
    onnx_runner: object = None    # onnxruntime on the original file, created on first use
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        """Seconds left in the budget."""
        return self.deadline - time.monotonic()

    def note(self, message: str) -> None:
        """Append a timestamped line to the method log."""
        self.result.log.append(f"{time.monotonic() - self.started:7.3f}s {message}")

    def timed(self, name: str, t0: float) -> None:
        """Accumulate the time since ``t0`` under ``name``."""
        self.result.timings[name] = self.result.timings.get(name, 0.0) + time.monotonic() - t0

    def open_goals(self) -> list[Goal]:
        return [g for g in self.goals if not g.proved]


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_inputs(model, spec):
    """Load the model and spec (paths or objects); raise ``InputError`` with one clear line."""
    from verifier.model.onnx_loader import ModelLoadError, UnsupportedModelError, load_onnx
    from verifier.spec.vnnlib import VnnlibError, load_vnnlib

    try:
        if isinstance(model, (str, Path)):
            model = load_onnx(str(model))
        if isinstance(spec, (str, Path)):
            spec = load_vnnlib(str(spec))
    except (ModelLoadError, UnsupportedModelError, VnnlibError, OSError) as exc:
        raise InputError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    graph = model.graph
    if spec.n_inputs != graph.n_inputs:
        raise InputError(f"spec declares {spec.n_inputs} inputs X_i but the network has {graph.n_inputs}")
    if spec.n_outputs != graph.n_outputs:
        raise InputError(f"spec declares {spec.n_outputs} outputs Y_j but the network has {graph.n_outputs}")
    return model, spec


def verify(model, spec, config: VerifyConfig | None = None) -> Result:
    """Decide whether ``spec`` holds for ``model`` (ONNX path or loaded ``Model``)."""
    config = config or VerifyConfig()
    t0 = time.monotonic()
    result = Result(Verdict.UNKNOWN)
    try:
        model, spec = load_inputs(model, spec)
    except InputError as exc:
        result.verdict, result.reason = Verdict.ERROR, str(exc)
        result.timings["total"] = time.monotonic() - t0
        return result
    result.timings["load"] = time.monotonic() - t0
    run = Run(model, spec, config, t0 + config.timeout, pick_device(config.bounds.device), result)
    run.goals = [Goal(r, p) for r, reg in enumerate(spec.regions) for p in range(len(reg.unsafe))]
    try:
        for step in PIPELINE:
            if step(run) or run.left() <= 0:
                break
        _finish(run)
    except Exception as exc:  # a bug or resource failure must not take the caller down
        result.verdict, result.counterexample = Verdict.ERROR, None
        result.reason = f"internal error: {type(exc).__name__}: {exc}"
        result.log.append(traceback.format_exc())
    finally:
        result.timings["total"] = time.monotonic() - t0
    return result


def _finish(run: Run) -> None:
    """Turn the goals' state into the final verdict when no step settled it."""
    res = run.result
    if res.verdict in (Verdict.VIOLATED, Verdict.ERROR):
        return
    res.bounds = [{"region": g.region, "polytope": g.polytope, "lower": g.best_lower,
                   "proved": g.proved, "method": g.method} for g in run.goals]
    if all(g.proved for g in run.goals):
        res.verdict = Verdict.HOLDS
        res.method = res.method or ", ".join(sorted({g.method for g in run.goals}))
        res.reason = res.reason or "every unsafe region refuted by a sound bound"
    elif run.left() <= 0:
        res.verdict = Verdict.TIMEOUT
        res.reason = f"budget of {run.config.timeout:g} s spent; {len(run.open_goals())} of {len(run.goals)} goals open"
    else:
        res.verdict = Verdict.UNKNOWN
        res.reason = res.reason or f"{len(run.open_goals())} of {len(run.goals)} goals not proved and no counterexample found"


# --- the steps -----------------------------------------------------------------------------
# Each step takes the run, may settle the verdict (returns True), and records what it did.


def step_attack(run: Run) -> bool:
    """PGD + random search; a counterexample counts only after onnxruntime confirms it."""
    from verifier.search.attack import attack

    t0 = time.monotonic()
    cex = attack(run.model.graph, run.spec, _runner(run), run.config.attack, deadline=run.deadline, device=run.device)
    run.timed("attack", t0)
    if cex is None:
        run.note("attack: no counterexample")
        return False
    run.result.verdict, run.result.counterexample, run.result.method = Verdict.VIOLATED, cex, "attack"
    run.result.reason = f"counterexample confirmed by onnxruntime (region {cex.region}, polytope {cex.polytope})"
    run.note(f"attack: counterexample, margin {cex.margin:.3g}")
    return True


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
    """IBP/CROWN, then alpha-CROWN, on every open goal; a goal is proved when some row's margin > 0."""
    methods = {"ibp": ["ibp"], "crown": ["crown"], "alpha": ["crown", "alpha"]}.get(run.config.method, ["crown", "alpha"])
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
    from verifier.bounds import BoundEngine

    goals = [g for g in run.open_goals() if g.region == region]
    C, b, slices = region_objective(run.spec, region, goals)
    graph = run.model.graph
    reg = run.spec.regions[region]
    dtype = getattr(torch, run.config.bounds.dtype)
    engine = BoundEngine(graph, device=run.device, dtype=dtype)
    box = [torch.as_tensor(v, dtype=dtype, device=run.device).reshape((1,) + graph.input_shape)
           for v in (reg.lower, reg.upper)]
    Ct = torch.as_tensor(C, dtype=dtype, device=run.device).unsqueeze(0)
    res = engine.compute(box[0], box[1], Ct, method=method, alpha=run.config.bounds.alpha)
    margin = res.lower[0].double().cpu().numpy() - b
    for g, sl in zip(goals, slices):
        best = float(margin[sl].max())
        g.best_lower = max(g.best_lower, best)
        if best > 0 and _recheck(run, region, g):
            g.proved, g.method = True, method


def _recheck(run: Run, region: int, goal: Goal) -> bool:
    """Re-derive the goal's bound with CROWN in float64; True iff it still proves the goal."""
    from verifier.bounds import BoundEngine

    if not run.config.check_certificates:
        run.result.certificate_checked = False
        return True
    graph, reg = run.model.graph, run.spec.regions[region]
    poly = reg.unsafe[goal.polytope]
    engine = BoundEngine(graph, device=run.device, dtype=torch.float64)
    box = [torch.as_tensor(v, dtype=torch.float64, device=run.device).reshape((1,) + graph.input_shape)
           for v in (reg.lower, reg.upper)]
    C = torch.as_tensor(poly.A, dtype=torch.float64, device=run.device).unsqueeze(0)
    res = engine.compute(box[0], box[1], C, method="alpha", alpha=run.config.bounds.alpha)
    ok = bool((res.lower[0].cpu().numpy() - poly.b).max() > 0)
    run.result.certificate_checked = ok if run.result.certificate_checked in (None, True) else False
    if not ok:
        run.note(f"float64 re-check failed for region {region} polytope {goal.polytope}")
    return ok


def step_bab(run: Run) -> bool:
    """Branch and bound on every open goal: input splitting for low-dimensional inputs."""
    from verifier.bounds import BoundEngine
    from verifier.counterexample import validate
    from verifier.search.input_split import input_split

    graph = run.model.graph
    if graph.n_inputs > run.config.bab.input_split_max_dims:
        run.note(f"bab: {graph.n_inputs} inputs, input splitting not used; no ReLU-split BaB yet")
        return False
    runner = _runner(run)
    engine = BoundEngine(graph, device=run.device, dtype=getattr(torch, run.config.bounds.dtype))
    t0 = time.monotonic()
    try:
        for goal in run.open_goals():
            reg = run.spec.regions[goal.region]
            poly = reg.unsafe[goal.polytope]
            out = input_split(engine, graph, reg.lower, reg.upper, poly.A, poly.b,
                              lambda x: validate(runner, run.spec, x), run.deadline, run.config.bab, device=run.device)
            run.note(f"bab input split region {goal.region} polytope {goal.polytope}: {out.status} {out.stats}")
            if out.status == "violated":
                cex = out.counterexample
                run.result.verdict, run.result.counterexample, run.result.method = Verdict.VIOLATED, cex, "bab-input"
                run.result.reason = f"counterexample confirmed by onnxruntime (region {cex.region}, polytope {cex.polytope})"
                return True
            if out.status != "holds":
                return False
            goal.proved, goal.method, goal.proof = True, "bab-input", out.log
    finally:
        run.timed("bab", t0)
    return not run.open_goals()


def _runner(run: Run):
    """The onnxruntime session on the original file (created once per run)."""
    from verifier.model.reference import OnnxRunner

    if run.onnx_runner is None:
        run.onnx_runner = OnnxRunner(run.model.path)
    return run.onnx_runner


PIPELINE = (step_attack, step_bounds, step_bab)
