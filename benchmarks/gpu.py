"""GPU check of the bound engine: soundness and speed against the CPU, in one command.

Two steps, because the GPU machine sees only the repository:

``python -m benchmarks.gpu pack --out gpu_data`` (where ../shared sits beside the checkout): one instance per
VNN-COMP family (truth unsat preferred, then the smallest network), plus a few mnistfc and
acasxu instances for end-to-end runs, copied with ``manifest.json``; at most 45 MB in all.
The folder is added to ``.git/info/exclude``.

``python -m benchmarks.gpu run --data gpu_data --out OUT [--device cuda] [--verify-timeout 30]
[--budget 420] [--call-limit 60] [--filter REGEX]`` (on the GPU machine):

* bounds: for every entry, region 0 and its unsafe polytope 0, ``BoundEngine.compute`` with
  ibp, crown and alpha (10 iterations) on the CPU ("base") and on ``--device`` ("test"); timed
  (CUDA synchronised, after a warm-up). Every lower bound of ``C y`` must lie below the
  minimum over sampled points (1000, 50 of them corners) of the network evaluated in float64
  on the CPU; a bound above it (tolerance 1e-4 (1 + |lb|)) or NaN is a soundness violation.
  ``rel_diff`` is max |lb_base - lb_test| / (1 + |lb_base|). alpha is skipped on a device
  where crown took over 20 s. Errors are recorded per entry and method, never fatal.
* verify: ``verifier.portfolio.verify`` on the entries marked ``verify`` (mnistfc, acasxu,
  2023 vit, 2021 cifar10_resnet), on ``--device`` then on the CPU, scored against the truth.
  Relu networks need neither pysat nor scipy; should an import still fail, each run is an
  ``error`` and the summary's ``verify_import_problem`` says why.
* ``gpu_bounds.csv``, ``gpu_verify.csv``, ``gpu_summary.json`` in OUT; a table on stdout.
  Exit code 1 on any soundness violation or WRONG answer.

The bounds part may use half of ``--budget`` (seconds), the verify part the rest; no new
entry starts once its share is spent. Every task runs in one spawned worker process, killed
and replaced when a task overruns (sampling or one device's bounds: ``--call-limit``, default
60 s; a verify run: 2 x its timeout + 15 s, reported as ``killed``) or dies; the files are
rewritten after every entry. ``--device cpu`` compares the CPU with itself (tests).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing as mp
import queue
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.vnncomp import judge, machine_info, read_instances, read_truth
from verifier.bounds import BoundEngine
from verifier.bounds.box import outward_box
from verifier.config import AlphaConfig, VerifyConfig
from verifier.model.onnx_loader import load_onnx
from verifier.spec.vnnlib import load_vnnlib
from verifier.shared_data import benchmarks_root

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = benchmarks_root()
MAX_BYTES = 45_000_000
EXTRAS = (  # (year folder, family, onnx, vnnlib): end-to-end verify runs besides the family picks
    ("vnncomp2021", "mnistfc", "onnx/mnist-net_256x4.onnx", "vnnlib/prop_0_0.03.vnnlib"),
    ("vnncomp2021", "mnistfc", "onnx/mnist-net_256x6.onnx", "vnnlib/prop_2_0.03.vnnlib"),
    ("vnncomp2021", "mnistfc", "onnx/mnist-net_256x6.onnx", "vnnlib/prop_4_0.05.vnnlib"),
    ("vnncomp2021", "acasxu", "onnx/ACASXU_run2a_1_1_batch_2000.onnx", "vnnlib/prop_1.vnnlib"),
    ("vnncomp2021", "acasxu", "onnx/ACASXU_run2a_1_4_batch_2000.onnx", "vnnlib/prop_1.vnnlib"),
)
VERIFY_FAMILIES = ("2021_mnistfc", "2021_acasxu", "2023_vit", "2021_cifar10_resnet")
METHODS = ("ibp", "crown", "alpha")
ALPHA = AlphaConfig(iterations=10)
ALPHA_SKIP_S = 20.0     # alpha is skipped on a device where crown took longer
BOUNDS_SHARE = 0.5      # share of --budget the bounds part may use
TOL = 1e-4              # soundness tolerance, relative: lb may exceed the sampled min by TOL (1 + |lb|)
BOUND_FIELDS = ("entry", "family", "role", "device", "method", "rows", "prepare_s", "time_s", "lb_min", "lb_max",
                "slack", "violations", "rel_diff", "error")
VERIFY_FIELDS = ("entry", "family", "role", "device", "result", "truth", "check", "time_s", "method", "route",
                 "timings", "reason")


# ----------------------------------------------------------------------------- pack

def family_pick(folder: Path):
    """(instance, truth word) of one row: truth unsat preferred, then the smallest network, then the first."""
    instances = read_instances(folder)
    truth = read_truth(folder / "truth.csv")
    word = {i.index: truth[i.key].truth if i.key in truth else "unknown" for i in instances}
    size = {i.index: (folder / i.onnx).stat().st_size for i in instances}
    best = min(instances, key=lambda i: (word[i.index] != "unsat", size[i.index], i.index))
    return best, word[best.index]


def extra_picks(root: Path):
    """(folder, instance, truth word) of every EXTRAS row found under ``root``."""
    out = []
    for year, family, onnx, vnnlib in EXTRAS:
        folder = root / year / family
        if not (folder / "instances.csv").is_file():
            print(f"extra {year}/{family}: no instances.csv, skipped")
            continue
        truth = read_truth(folder / "truth.csv")
        match = [i for i in read_instances(folder) if (i.onnx, i.vnnlib) == (onnx, vnnlib)]
        if not match:
            print(f"extra {year}/{family} {onnx} {vnnlib}: not in instances.csv, skipped")
            continue
        out.append((folder, match[0], truth[match[0].key].truth if match[0].key in truth else "unknown"))
    return out


def pack(root: Path, out: Path, max_bytes: int = MAX_BYTES) -> list[dict]:
    """Copy the chosen instances into ``out`` with ``manifest.json``; returns the manifest entries."""
    if out.exists():
        if any(out.iterdir()) and not (out / "manifest.json").is_file():
            raise SystemExit(f"{out} exists and holds no manifest.json: not overwriting it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    picks = [(f, *family_pick(f)) for f in sorted(p.parent for p in root.glob("vnncomp20*/*/instances.csv"))]
    picks += extra_picks(root)
    entries, copied, total, seen = [], set(), 0, set()
    for folder, inst, truth in picks:
        tag = f"{folder.parent.name.removeprefix('vnncomp')}_{folder.name}"
        if (tag, inst.onnx, inst.vnnlib) in seen:
            continue
        seen.add((tag, inst.onnx, inst.vnnlib))
        files = [Path(tag) / inst.onnx, Path(tag) / inst.vnnlib]
        new = [f for f in files if f not in copied]
        size = sum((folder / f.relative_to(tag)).stat().st_size for f in new)
        if total + size > max_bytes:
            print(f"skipped {tag} {inst.onnx} {inst.vnnlib}: {size / 1e6:.1f} MB would pass {max_bytes / 1e6:.0f} MB")
            continue
        for f in new:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / f.relative_to(tag), out / f)
            copied.add(f)
        total += size
        name = tag if all(e["name"] != tag for e in entries) else f"{tag}:{Path(inst.onnx).stem}:{Path(inst.vnnlib).stem}"
        entries.append({"name": name, "family": tag, "onnx": str(files[0]), "vnnlib": str(files[1]), "truth": truth,
                        "timeout": inst.timeout, "verify": tag in VERIFY_FAMILIES})
    (out / "manifest.json").write_text(json.dumps({"entries": entries, "bytes": total}, indent=1) + "\n")
    exclude_from_git(out)
    for e in entries:
        print(f"  {e['name']:60s} {e['truth']:8s} {'verify' if e['verify'] else ''}")
    print(f"packed {len(entries)} instances, {total / 1e6:.1f} MB, into {out}")
    return entries


def exclude_from_git(folder: Path) -> None:
    """List ``folder`` in the repository's .git/info/exclude when it lies inside the repository."""
    git = REPO_ROOT / ".git"
    try:
        rel = folder.resolve().relative_to(REPO_ROOT)
    except ValueError:
        return
    if not git.is_dir():
        return
    exclude = git / "info" / "exclude"
    exclude.parent.mkdir(exist_ok=True)
    text = exclude.read_text() if exclude.is_file() else ""
    line = f"/{rel.as_posix()}/"
    if line not in text.splitlines() and line[1:] not in text.splitlines():
        exclude.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")


# ----------------------------------------------------------------------------- bounds

def sample_points(lower: np.ndarray, upper: np.ndarray, n: int, corners: int, seed: int = 0) -> np.ndarray:
    """``n`` float64 points inside the box [lower, upper]; the first ``corners`` are random corners."""
    rng = np.random.default_rng(seed)
    pts = np.clip(lower + rng.random((n, lower.size)) * (upper - lower), lower, upper)
    k = min(corners, n)
    pts[:k] = np.where(rng.integers(0, 2, (k, lower.size)).astype(bool), upper, lower)
    return pts


def sampled_min(graph, points: np.ndarray, A: np.ndarray, chunk: int = 200) -> np.ndarray:
    """min over points of A y (y = the network in float64 on the CPU), per row of A."""
    g64 = graph.to(device="cpu", dtype=torch.float64)
    At = torch.tensor(np.array(A), dtype=torch.float64)
    best = torch.full((A.shape[0],), math.inf, dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, len(points), chunk):
            x = torch.as_tensor(points[s:s + chunk]).reshape((-1,) + graph.input_shape)
            y = g64.forward(x).reshape(x.shape[0], -1)
            best = torch.minimum(best, (y @ At.T).min(dim=0).values)
    return best.numpy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def _load(entry: dict, data: Path):
    """(graph, region 0, A of its unsafe polytope 0) of a manifest entry."""
    graph = load_onnx(str(data / entry["onnx"])).graph
    region = load_vnnlib(str(data / entry["vnnlib"])).regions[0]
    A = np.array(region.unsafe[0].A)
    if A.shape[0] == 0:
        raise ValueError("unsafe polytope 0 has no output rows")
    return graph, region, A


def judge_bounds(row: dict, cmin: np.ndarray) -> None:
    """Soundness of ``row['lb']`` against the sampled minimum: violations, slack, lb range."""
    lb = row.get("lb")
    if lb is None:
        return
    bad = ~(cmin >= lb - TOL * (1 + np.abs(lb)))   # NaN bounds count as violations
    row["violations"] = int(bad.sum())
    row["slack"] = float(np.min(cmin - lb))
    row["lb_min"], row["lb_max"] = float(np.min(lb)), float(np.max(lb))


# ----------------------------------------------------------------------------- worker tasks
# Each runs in the worker process and yields plain dicts, sent back one at a time.

def _warm_autograd() -> None:
    """One Adam step on a scalar: the first in a process costs seconds (lazy imports), kept out of alpha's time."""
    x = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([x])
    (x * x).sum().backward()
    opt.step()


def task_info(device: str):
    """The machine as the worker sees it, and whether ``verify`` can import all it needs."""
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    yield {"device_name": torch.cuda.get_device_name(torch.device(device)) if cuda else "cpu",
           "cuda_available": torch.cuda.is_available(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "torch_threads": torch.get_num_threads(), "verify_import_problem": verify_import_problem()}


def task_sampled_min(entry: dict, data: Path, points: int, corners: int):
    """The minimum over sampled points of C y, per row (the soundness reference)."""
    graph, region, A = _load(entry, data)
    yield {"cmin": sampled_min(graph, sample_points(region.lower, region.upper, points, corners), A)}


def task_bounds(entry: dict, data: Path, device: str, left: float):
    """ibp / crown / alpha on one device, one dict per method: time and lower bounds, or an error."""
    deadline = time.monotonic() + left
    graph, region, C = _load(entry, data)
    dev = torch.device(device)
    try:
        t0 = time.monotonic()
        engine = BoundEngine(graph, device=dev)
        lo, hi = outward_box(region.lower, region.upper, torch.float32, dev, (1,) + graph.input_shape)
        Ct = torch.tensor(C, dtype=torch.float32, device=dev).unsqueeze(0)
        _sync(dev)
        prepare = time.monotonic() - t0
        if dev.type != "cpu":   # warm-up: CUDA context, kernels, allocator, autograd
            engine.compute(lo, hi, Ct, method="crown")
            engine.compute(lo, hi, Ct, method="alpha", alpha=AlphaConfig(iterations=1))
            _sync(dev)
    except Exception as exc:
        yield {"error": "prepare: " + _short(exc)}
        return
    crown_s = None
    for method in METHODS:
        row = {"method": method, "rows": C.shape[0], "prepare_s": prepare}
        if time.monotonic() > deadline:
            row["error"] = "skipped: budget spent"
        elif method == "alpha" and (crown_s is None or crown_s > ALPHA_SKIP_S):
            row["error"] = "skipped: no crown" if crown_s is None else f"skipped: crown took {crown_s:.1f} s"
        else:
            try:
                _sync(dev)
                t0 = time.monotonic()
                res = engine.compute(lo, hi, Ct, method=method, alpha=ALPHA)
                _sync(dev)
                row["time_s"] = time.monotonic() - t0
                row["lb"] = res.lower[0].detach().double().cpu().numpy()
            except Exception as exc:
                row["error"] = _short(exc)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            crown_s = row.get("time_s") if method == "crown" else crown_s
        yield row


def task_verify(entry: dict, data: Path, device: str, timeout: float):
    """One ``verify`` run (see ``verify_entry``)."""
    yield verify_entry(entry, data, device, timeout)


TASKS = {"info": task_info, "sampled_min": task_sampled_min, "bounds": task_bounds, "verify": task_verify}


def _serve(tasks, results) -> None:
    """The worker's loop: run each task, send every item it yields, then None."""
    _warm_autograd()
    for name, args in iter(tasks.get, None):
        try:
            for item in TASKS[name](*args):
                results.put(item)
        except Exception as exc:
            results.put({"error": _short(exc)})
        results.put(None)


class Worker:
    """One spawned process that runs tasks in turn; killed and replaced when a task overruns or dies.

    A network whose CPU bounds take many minutes, or a crash, costs one task, not the run.
    """

    def __init__(self):
        self.proc = None

    def run(self, name: str, args: tuple, limit: float) -> tuple[list[dict], str | None]:
        """(items the task yielded, None), or (items so far, why it stopped) after ``limit`` seconds."""
        if self.proc is None:
            ctx = mp.get_context("spawn")   # no fork: the parent may hold threads, the child CUDA
            self.tasks, self.results = ctx.Queue(), ctx.Queue()
            self.proc = ctx.Process(target=_serve, args=(self.tasks, self.results), daemon=True)
            self.proc.start()
        self.tasks.put((name, args))
        items, end = [], time.monotonic() + limit
        while True:
            try:
                item = self.results.get(timeout=min(max(end - time.monotonic(), 0.01), 1.0))
            except queue.Empty:
                if not self.proc.is_alive():
                    code = self.proc.exitcode
                    self.close()
                    return items, f"worker died (exit code {code})"
                if time.monotonic() > end:
                    self.close(kill=True)
                    return items, f"killed after {limit:.0f} s"
                continue
            if item is None:
                return items, None
            items.append(item)

    def close(self, kill: bool = False) -> None:
        """Stop the process (asked to end when idle, else killed) and drop its queues."""
        if self.proc is None:
            return
        if self.proc.is_alive() and not kill:
            self.tasks.put(None)
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()
        self.proc = None


# ----------------------------------------------------------------------------- parent side

def bound_entry(worker: Worker, entry: dict, data: Path, devices: tuple[str, str], args, deadline: float):
    """Both devices' rows for one manifest entry, judged against the sampled minimum."""
    head = {"entry": entry["name"], "family": entry["family"]}
    got, why = worker.run("sampled_min", (entry, data, args.points, args.corners), args.call_limit)
    if not got or "cmin" not in got[0]:
        error = got[0].get("error") if got else why
        return [{**head, "role": "test", "device": devices[1], "error": f"setup: {error}"}]
    cmin = got[0]["cmin"]
    rows = []
    for role, device in (("test", devices[1]), ("base", devices[0])):   # test first: a budget cut keeps it
        left = deadline - time.monotonic()
        got, why = worker.run("bounds", (entry, data, device, left), args.call_limit) if left > 0 else ([], None)
        by_method = {g["method"]: g for g in got if "method" in g}
        fail = next((g["error"] for g in got if "method" not in g), None) or why or "skipped: budget spent"
        for m in METHODS:
            r = {**head, "role": role, "device": device, "method": m, **by_method.get(m, {"error": fail})}
            judge_bounds(r, cmin)
            rows.append(r)
    base = {r["method"]: r.get("lb") for r in rows if r["role"] == "base"}
    for r in rows:
        if r["role"] == "test" and r.get("lb") is not None and base.get(r["method"]) is not None:
            ref = base[r["method"]]
            r["rel_diff"] = float(np.max(np.abs(ref - r["lb"]) / (1 + np.abs(ref))))
    return rows


def verify_import_problem() -> str | None:
    """Why ``verify`` cannot run here (it imports ``verifier.exact`` for every route), or None."""
    try:
        import verifier.exact  # noqa: F401
    except ImportError as exc:
        return f"verifier.exact does not import: {_short(exc)}"
    return None


def verify_entry(entry: dict, data: Path, device: str, timeout: float) -> dict:
    """One ``verify`` run, scored against the manifest truth."""
    from verifier.portfolio import verify

    row = {"entry": entry["name"], "family": entry["family"], "device": device, "truth": entry["truth"]}
    cfg = VerifyConfig.from_dict({"timeout": timeout, "bounds": {"device": device}, "exact": {"milp_max_unstable": 0}})
    t0 = time.monotonic()
    try:
        res = verify(str(data / entry["onnx"]), str(data / entry["vnnlib"]), cfg)
    except Exception as exc:
        row.update(result="error", reason=_short(exc), time_s=time.monotonic() - t0, check="")
        return row
    word = res.verdict.vnncomp
    row.update(result=word, check=judge(word, entry["truth"]), time_s=time.monotonic() - t0, method=res.method,
               route=res.route, reason=res.reason[:300],
               timings=json.dumps({k: round(v, 3) for k, v in res.timings.items()}))
    return row


def verify_in_worker(worker: Worker, entry: dict, data: Path, device: str, timeout: float) -> dict:
    """``verify_entry`` in the worker, killed at 2 x timeout + 15 s (result ``killed``)."""
    limit = 2 * timeout + 15
    t0 = time.monotonic()
    got, why = worker.run("verify", (entry, data, device, timeout), limit)
    if got and "result" in got[0]:
        return got[0]
    return {"entry": entry["name"], "family": entry["family"], "device": device, "truth": entry["truth"],
            "result": "killed" if why and why.startswith("killed") else "error", "check": "",
            "time_s": time.monotonic() - t0, "reason": (got[0].get("error") if got else None) or why}


# ----------------------------------------------------------------------------- report

def _fmt(x, spec=".3g") -> str:
    return "" if x is None else format(x, spec) if isinstance(x, float) else str(x)


def write_csv(rows: list[dict], fields: tuple[str, ...], path: Path) -> None:
    """Rows to CSV (only ``fields``; floats compact)."""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k), ".6g") for k in fields})


def bounds_table(rows: list[dict]) -> str:
    """One line per entry: per method base/test time, max rel diff, violations, errors."""
    lines = [f"{'entry':44s} {'m':>3s} " + " ".join(f"{m + ' base/test s':>17s}" for m in METHODS)
             + f" {'rel_diff':>8s} {'viol':>4s} errors"]
    for name in dict.fromkeys(r["entry"] for r in rows):
        mine = [r for r in rows if r["entry"] == name]
        cells = []
        for m in METHODS:
            t = {r["role"]: r.get("time_s") for r in mine if r.get("method") == m}
            cells.append(f"{_fmt(t.get('base'), '.3f') or '-':>8s}/{_fmt(t.get('test'), '.3f') or '-':<8s}")
        diffs = [r["rel_diff"] for r in mine if r.get("rel_diff") is not None]
        viol = sum(r.get("violations", 0) for r in mine)
        errs = sorted({f"{r['role']}/{r.get('method', '-')}: {r['error']}" for r in mine if r.get("error")})
        lines.append(f"{name[:44]:44s} {_fmt(mine[0].get('rows')):>3s} " + " ".join(cells)
                     + f" {_fmt(max(diffs) if diffs else None, '.1e'):>8s} {viol:4d} "
                     + "; ".join(e[:80] for e in errs[:3]))
    return "\n".join(lines)


def verify_table(rows: list[dict]) -> str:
    """One line per verify run."""
    lines = [f"{'entry':56s} {'role':4s} {'device':6s} {'result':8s} {'truth':8s} {'check':11s} {'time_s':>7s} method"]
    for r in rows:
        lines.append(f"{r['entry'][:56]:56s} {r['role']:4s} {r['device']:6s} {r['result']:8s} {r['truth']:8s} "
                     f"{r['check'] or '-':11s} "
                     f"{_fmt(r.get('time_s'), '.2f'):>7s} {r.get('method') or r.get('reason', '')[:60]}")
    return "\n".join(lines)


def summarize(bounds: list[dict], verifies: list[dict], args, skipped: dict, info: dict, started: float) -> dict:
    """The gpu_summary.json object."""
    counts = {
        "entries": len({r["entry"] for r in bounds}),
        "bound_runs": sum(1 for r in bounds if r.get("lb") is not None),
        "bound_errors": sum(1 for r in bounds if r.get("error") and not r["error"].startswith("skipped")),
        "soundness_violations": sum(1 for r in bounds if r.get("violations")),
        "verify_runs": len(verifies),
        "verify_errors": sum(r["result"] in ("error", "killed") for r in verifies),
        "verify_correct": sum(r["check"] == "correct" for r in verifies),
        "WRONG": sum(r["check"] == "WRONG" for r in verifies),
    }
    diffs = [r["rel_diff"] for r in bounds if r.get("rel_diff") is not None]
    return {"device": args.device, **info, "counts": counts, "max_rel_diff": max(diffs) if diffs else None,
            "skipped": skipped, "elapsed_s": round(time.monotonic() - started, 1),
            "settings": {"budget": args.budget, "verify_timeout": args.verify_timeout, "call_limit": args.call_limit,
                         "points": args.points, "corners": args.corners, "alpha_iterations": ALPHA.iterations,
                         "tolerance": TOL},
            "machine": machine_info()}


def write_outputs(out: Path, bounds: list[dict], verifies: list[dict], summary: dict) -> None:
    """The three files (rewritten after every entry, so a killed run leaves what it did)."""
    write_csv(bounds, BOUND_FIELDS, out / "gpu_bounds.csv")
    write_csv(verifies, VERIFY_FIELDS, out / "gpu_verify.csv")
    (out / "gpu_summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def report(bounds: list[dict], verifies: list[dict], summary: dict) -> None:
    """The tables and the counts on stdout; every violation and WRONG answer on its own line."""
    print(bounds_table(bounds))
    print()
    print(verify_table(verifies))
    print()
    print(f"{summary.get('device_name')} torch {summary.get('torch')}: {json.dumps(summary['counts'])}; "
          f"max rel diff {_fmt(summary['max_rel_diff'], '.2e') or '-'}; "
          f"skipped {sum(map(len, summary['skipped'].values()))}; {summary['elapsed_s']:.0f} s")
    if summary.get("verify_import_problem"):
        print(f"!!! verify cannot run: {summary['verify_import_problem']}")
    for r in bounds:
        if r.get("violations"):
            print(f"!!! UNSOUND: {r['entry']} {r['role']} {r['device']} {r['method']}: {r['violations']} rows, "
                  f"slack {r['slack']:.3g}")
    for r in verifies:
        if r["check"] == "WRONG":
            print(f"!!! WRONG: {r['entry']} {r['device']}: {r['result']} vs truth {r['truth']}")


# ----------------------------------------------------------------------------- run

def run(args) -> int:
    """The bounds part, then the verify part, within ``args.budget``; writes the three files."""
    start = time.monotonic()
    entries = json.loads((args.data / "manifest.json").read_text())["entries"]
    entries = [e for e in entries if not args.filter or re.search(args.filter, e["name"])]
    args.out.mkdir(parents=True, exist_ok=True)
    worker = Worker()
    try:
        got, why = worker.run("info", (args.device,), 120)
        info = got[0] if got and "device_name" in got[0] else {"info_error": (got[0] if got else {}).get("error", why)}
        if args.device.startswith("cuda") and not info.get("cuda_available"):
            print(f"--device {args.device} but torch sees no CUDA device ({info})", file=sys.stderr)
            return 2
        if info.get("verify_import_problem"):
            print(f"!!! verify will fail: {info['verify_import_problem']}", file=sys.stderr)
        bounds, verifies, skipped = [], [], {"bounds": [], "verify": []}

        def save():
            write_outputs(args.out, bounds, verifies, summarize(bounds, verifies, args, skipped, info, start))

        bounds_deadline = start + args.budget * BOUNDS_SHARE
        for e in entries:
            if time.monotonic() > bounds_deadline:
                skipped["bounds"].append(e["name"])
                continue
            t0 = time.monotonic()
            bounds.extend(bound_entry(worker, e, args.data, ("cpu", args.device), args, bounds_deadline))
            print(f"bounds {e['name']}: {time.monotonic() - t0:.1f} s", file=sys.stderr)
            save()
        for e in [e for e in entries if e.get("verify")]:
            for role, device in (("test", args.device), ("base", "cpu")):
                if time.monotonic() > start + args.budget:
                    skipped["verify"].append(f"{e['name']}@{device}")
                    continue
                verifies.append({"role": role, **verify_in_worker(worker, e, args.data, device, args.verify_timeout)})
                print(f"verify {e['name']} {device}: {verifies[-1]['result']}", file=sys.stderr)
                save()
    finally:
        worker.close()
    summary = summarize(bounds, verifies, args, skipped, info, start)
    write_outputs(args.out, bounds, verifies, summary)
    report(bounds, verifies, summary)
    return 1 if summary["counts"]["soundness_violations"] or summary["counts"]["WRONG"] else 0


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of both sub-commands."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="copy one instance per family (and a few extras) into a folder")
    pk.add_argument("--out", type=Path, default=Path("gpu_data"))
    pk.add_argument("--root", type=Path, default=SHARED, help="folder holding vnncomp20*/<family>/")
    rn = sub.add_parser("run", help="bounds and verify checks on the packed data")
    rn.add_argument("--data", type=Path, default=Path("gpu_data"))
    rn.add_argument("--out", type=Path, required=True)
    rn.add_argument("--device", default="cuda")
    rn.add_argument("--verify-timeout", type=float, default=30.0)
    rn.add_argument("--budget", type=float, default=420.0, help="seconds; no new entry starts once spent")
    rn.add_argument("--call-limit", type=float, default=60.0,
                    help="seconds one entry's sampling or one device's bounds may take before the worker is killed")
    rn.add_argument("--filter", metavar="REGEX", help="only entries whose name matches")
    rn.add_argument("--points", type=int, default=1000, help="sampled points per soundness check")
    rn.add_argument("--corners", type=int, default=50, help="how many of the points are random box corners")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit code 1 on any soundness violation or WRONG answer, 2 on usage errors."""
    args = build_parser().parse_args(argv)
    if args.command == "pack":
        pack(args.root, args.out)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
