"""Op coverage of every VNN-COMP family: load status, agreement with onnxruntime, CROWN time, verdicts.

Part 1 (fast, every family): every distinct network is loaded; the canonical graph is compared
with onnxruntime on random points of the boxes of (up to ``--props``) properties per network
(relative error = max |ours - ort| / max(1, max |ort|), float32); CROWN bounds the first
property of the family (time and the best margin). Writes ``coverage.csv`` / ``coverage.md``.

Part 2 (``--verdicts``, slow): every instance runs through the CLI with a short timeout (the
runner of ``benchmarks/vnncomp.py``), scored against truth.csv: counts per family, a WRONG
column, and alpha-beta-CROWN's solved count from truth.csv. Rows are appended to
``verdicts.csv`` as they finish and ``verdicts.md`` is rewritten after each family.

    python -m benchmarks.coverage [--families REGEX] [--verdicts --timeout 10 --limit N]
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.vnncomp import RunnerConfig, Truth, read_instances, read_truth, run_instance
from verifier.shared_data import benchmarks_root

ROOT = benchmarks_root()
RESULTS = Path(__file__).resolve().parent / "results" / "coverage"
NEW_OPS = ("mul", "matmul", "pow", "sin", "cos", "exp", "reciprocal", "sqrt", "erf", "floor", "ceil", "round")


@dataclass
class FamilyCoverage:
    """Part 1 figures of one family."""

    family: str
    networks: int
    loaded: int
    load_errors: str
    new_ops: str
    points: int
    max_rel_err: float
    worst_network: str
    crown_s: float | None
    crown_margin: float | None
    crown_note: str


def families(root: Path, pattern: str | None) -> list[Path]:
    """Family folders (holding instances.csv) under ``root``/vnncomp20*, filtered by regex."""
    found = sorted(p for p in root.glob("vnncomp20*/*") if (p / "instances.csv").is_file())
    return [p for p in found if not pattern or re.search(pattern, f"{p.parent.name}/{p.name}")]


def family_name(folder: Path) -> str:
    """``2023/vit`` style label."""
    return f"{folder.parent.name.replace('vnncomp', '')}/{folder.name}"


def _props_by_network(folder: Path, max_props: int) -> dict[str, list[str]]:
    """network path -> up to ``max_props`` property paths (instances.csv order)."""
    out: dict[str, list[str]] = {}
    for inst in read_instances(folder):
        props = out.setdefault(str(folder / inst.onnx), [])
        if len(props) < max_props:
            props.append(str(folder / inst.vnnlib))
    return out


def network_error(model, runner, specs, n_points: int, seed: int) -> tuple[float, int]:
    """Max relative error of ``model`` vs onnxruntime on random points of the specs' boxes."""
    rng = np.random.default_rng(seed)
    worst, count = 0.0, 0
    for spec in specs:
        for region in spec.regions[:2]:
            lo, hi = region.lower, region.upper
            x = (lo + rng.uniform(0, 1, (n_points, lo.size)) * (hi - lo)).astype(np.float32)
            ref = runner.run(x)
            xt = torch.tensor(x).reshape((n_points,) + tuple(model.graph.input_shape))
            with torch.no_grad():
                ours = model.graph.forward(xt).reshape(n_points, -1).double().numpy()
            err = np.abs(ours - ref).max() / max(1.0, float(np.abs(ref).max()))
            worst, count = max(worst, float(err)), count + n_points
    return worst, count


def crown_first(model, spec) -> tuple[float | None, float | None, str]:
    """(seconds, best margin min over rows of lower(A y) - b, note) of CROWN on the first polytope."""
    from verifier.bounds import BoundEngine
    from verifier.bounds.box import outward_box

    region = spec.regions[0]
    poly = region.unsafe[0]
    t0 = time.monotonic()
    try:
        engine = BoundEngine(model.graph)
        lo, hi = outward_box(region.lower, region.upper, torch.float32, None, (1,) + tuple(model.graph.input_shape))
        res = engine.compute(lo, hi, torch.as_tensor(poly.A, dtype=torch.float32).unsqueeze(0), method="crown",
                             want_upper=False)
    except (ValueError, NotImplementedError, RuntimeError) as exc:
        return None, None, f"{type(exc).__name__}: {str(exc)[:120]}"
    margin = float((res.lower[0].double().numpy() - poly.b).max())
    return time.monotonic() - t0, margin, ""


def cover_family(folder: Path, n_points: int, max_props: int) -> FamilyCoverage:
    """Part 1 for one family."""
    from verifier.model import load_onnx
    from verifier.model.reference import OnnxRunner
    from verifier.spec.vnnlib import load_vnnlib

    nets = _props_by_network(folder, max_props)
    loaded, errors, ops, worst, worst_net, points = 0, [], set(), 0.0, "", 0
    crown = (None, None, "no network loaded")
    for k, (path, props) in enumerate(nets.items()):     # instances.csv order: k == 0 is the first property
        try:
            model = load_onnx(path)
        except (ValueError, OSError) as exc:
            errors.append(f"{Path(path).name}: {str(exc)[:160]}")
            continue
        loaded += 1
        ops |= {n.op for n in model.graph.nodes} & set(NEW_OPS)
        specs = [load_vnnlib(p) for p in props]
        err, n = network_error(model, OnnxRunner(path), specs, n_points, seed=k)
        points += n
        if err >= worst:
            worst, worst_net = err, Path(path).name
        if k == 0 or crown[2] == "no network loaded":
            crown = crown_first(model, specs[0])
    return FamilyCoverage(family_name(folder), len(nets), loaded, "; ".join(errors), " ".join(sorted(ops)),
                          points, worst, worst_net, *crown)


# ----------------------------------------------------------------------------- verdicts
def _reference_solved(truth: dict) -> tuple[str, int]:
    """(column, count) of alpha-beta-CROWN answers that agree with the truth."""
    for t in truth.values():
        for col in t.references:
            if col.startswith("abcrown"):
                n = sum(1 for v in truth.values() if v.references.get(col, ("",))[0] in ("sat", "unsat")
                        and v.references[col][0] == v.truth)
                return col, n
    return "", 0


def verdict_family(folder: Path, timeout: float, limit: int | None, out_dir: Path, rows_csv: Path,
                   jobs: int = 1) -> dict:
    """Part 2 for one family: run the CLI on each instance (``jobs`` at a time), append rows, return the counts."""
    truth = read_truth(folder / "truth.csv")
    instances = read_instances(folder)[:limit] if limit else read_instances(folder)
    config = RunnerConfig(max_timeout=timeout, grace=3.0)
    for sub in ("results", "logs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    counts = {"instances": len(instances), "sat": 0, "unsat": 0, "unknown": 0, "timeout": 0, "error": 0,
              "WRONG": 0, "truth_sat": 0, "truth_unsat": 0}
    truths = [truth.get(inst.key, Truth("unknown", {})).truth for inst in instances]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = pool.map(lambda it: run_instance(it[0], it[1], config, out_dir), zip(instances, truths))
        for inst, t, out in zip(instances, truths, outcomes):
            _count(counts, folder, inst, t, out, rows_csv)
    col, n = _reference_solved({k: v for k, v in truth.items()
                                if k in {i.key for i in instances}})
    counts["abcrown"] = f"{n} ({col})" if col else ""
    return counts


def _count(counts: dict, folder: Path, inst, t: str, out, rows_csv: Path) -> None:
    """Add one outcome to the family's counts and append its row to ``rows_csv``."""
    word = out.result if out.result in ("sat", "unsat", "timeout", "error") else "unknown"
    counts[word] += 1
    counts["WRONG"] += out.check == "WRONG"
    counts["truth_" + t] = counts.get("truth_" + t, 0) + 1
    with rows_csv.open("a", newline="") as f:
        csv.writer(f).writerow([family_name(folder), inst.onnx, inst.vnnlib, out.result, out.time_s, t,
                                out.check, out.reason[:200]])


# ----------------------------------------------------------------------------- output
def coverage_markdown(rows: list[FamilyCoverage]) -> str:
    """The Part 1 table."""
    head = ("| family | nets loaded | new ops | points | max rel err | CROWN s (1st prop) | CROWN margin | notes |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        t = "-" if r.crown_s is None else f"{r.crown_s:.2f}"
        m = "-" if r.crown_margin is None else f"{r.crown_margin:+.4g}"
        note = "; ".join(x for x in (r.load_errors, r.crown_note) if x)
        lines.append(f"| {r.family} | {r.loaded}/{r.networks} | {r.new_ops} | {r.points} | {r.max_rel_err:.2e} "
                     f"({r.worst_network}) | {t} | {m} | {note[:200]} |")
    return head + "\n".join(lines) + "\n"


def verdict_markdown(table: dict[str, dict], timeout: float) -> str:
    """The Part 2 table."""
    head = (f"Per-instance timeout {timeout:g} s.\n\n| family | run | unsat | sat | unknown | timeout | error | "
            "WRONG | truth unsat / sat | alpha-beta-CROWN solved |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {fam} | {c['instances']} | {c['unsat']} | {c['sat']} | {c['unknown']} | {c['timeout']} | "
             f"{c['error']} | {c['WRONG']} | {c['truth_unsat']} / {c['truth_sat']} | {c['abcrown']} |"
             for fam, c in table.items()]
    return head + "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.coverage", description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=ROOT, help="folder holding vnncomp20*/<family>/")
    p.add_argument("--families", metavar="REGEX", help="only families whose 'vnncomp20xx/name' matches")
    p.add_argument("--points", type=int, default=8, help="random points per property box")
    p.add_argument("--props", type=int, default=2, help="properties per network used for the comparison")
    p.add_argument("--verdicts", action="store_true", help="also run the CLI on every instance (slow)")
    p.add_argument("--no-coverage", action="store_true", help="skip part 1")
    p.add_argument("--timeout", type=float, default=10.0, help="per-instance timeout of the verdict run")
    p.add_argument("--limit", type=int, help="at most N instances per family in the verdict run")
    p.add_argument("--jobs", type=int, default=1, help="instances of the verdict run at the same time")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"output folder (default {RESULTS})")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 1 when any verdict is WRONG."""
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    folders = families(args.root, args.families)
    if not folders:
        print(f"no benchmark families under {args.root}", file=sys.stderr)
        return 2
    if not args.no_coverage:
        rows = []
        for folder in folders:
            rows.append(cover_family(folder, args.points, args.props))
            print(coverage_markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
            with (args.out / "coverage.csv").open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
                w.writeheader()
                w.writerows(asdict(r) for r in rows)
            (args.out / "coverage.md").write_text(coverage_markdown(rows))
    wrong = 0
    if args.verdicts:
        rows_csv = args.out / "verdicts.csv"
        rows_csv.write_text("family,onnx,vnnlib,result,time_s,truth,check,reason\n")
        table: dict[str, dict] = {}
        for folder in folders:
            table[family_name(folder)] = verdict_family(folder, args.timeout, args.limit,
                                                         args.out / "runs" / family_name(folder), rows_csv, args.jobs)
            wrong += table[family_name(folder)]["WRONG"]
            (args.out / "verdicts.md").write_text(verdict_markdown(table, args.timeout))
            print(verdict_markdown(table, args.timeout).splitlines()[-1], file=sys.stderr, flush=True)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
