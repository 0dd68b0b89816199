"""VNN-COMP benchmark runner: run ``nnverify verify`` on every instance of a family, score it.

Usage (from the repository root)::

    python -m benchmarks.vnncomp ../shared/benchmarks/vnncomp2021/acasxu --limit 10
    python -m benchmarks.vnncomp --all-families ../shared/benchmarks/vnncomp2021
    python -m benchmarks.vnncomp FOLDER --compare benchmarks/results/acasxu-.../results.csv
    python -m benchmarks.vnncomp NEW/results.csv --compare OLD/results.csv

Each instance runs in a fresh subprocess (its own process group, killed on overrun). Output
folder: ``results.csv``, ``summary.json``, ``cactus.png``, ``results/<id>.txt`` (the VNN-COMP
result files) and ``logs/<id>.out|.err``. A WRONG answer (sat where the truth is unsat, or unsat
where it is sat) is printed loudly and makes the exit code 1.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

from verifier.soundness.runner import (  # noqa: F401 -- the runner's names, re-exported for benchmark scripts
    DECIDED, WORDS, Instance, Outcome, Progress, RunnerConfig, Truth, check_witness, effective_timeout, file_stem,
    float_or_none, judge, norm_path, parse_json_stdout, parse_witness, read_result_file, run_all, run_instance,
    run_onnx, shout_wrong)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLI = REPO_ROOT / ".venv" / "bin" / "nnverify"
RESULTS_ROOT = REPO_ROOT / "benchmarks" / "results"
OPPOSITE = {"sat": "unsat", "unsat": "sat"}
REFERENCE_COLUMN = re.compile(r"^([A-Za-z][A-Za-z0-9]*_\d{4})$")


# ----------------------------------------------------------------------------- reading

def read_instances(folder: Path) -> list[Instance]:
    """Rows of ``folder/instances.csv`` (onnx, vnnlib, timeout_s); a header row is detected."""
    folder = Path(folder)
    rows = [r for r in csv.reader((folder / "instances.csv").open(newline="")) if any(c.strip() for c in r)]
    if rows and float_or_none(rows[0][2] if len(rows[0]) > 2 else None) is None:
        rows = rows[1:]   # header: the timeout column is not a number
    instances = []
    for i, row in enumerate(rows):
        if len(row) < 3 or float_or_none(row[2]) is None:
            raise ValueError(f"{folder / 'instances.csv'} row {i + 1}: expected onnx,vnnlib,timeout, got {row}")
        instances.append(Instance(i, row[0].strip(), row[1].strip(), float(row[2]), str(folder)))
    return instances


def read_truth(path: Path | None) -> dict[tuple[str, str], Truth]:
    """truth.csv keyed by (onnx, vnnlib); reference columns are ``<tool>_<year>`` + ``_s``."""
    if path is None or not Path(path).is_file():
        return {}
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        tools = [c for c in (reader.fieldnames or []) if REFERENCE_COLUMN.match(c)]
        table = {}
        for row in reader:
            refs = {t: ((row.get(t) or "").strip().lower(), float_or_none(row.get(f"{t}_s"))) for t in tools}
            word = (row.get("truth") or "unknown").strip().lower() or "unknown"
            table[(norm_path(row["onnx"]), norm_path(row["vnnlib"]))] = Truth(word, refs)
    return table


def select(instances: list[Instance], pattern: str | None, limit: int | None) -> list[Instance]:
    """Instances whose 'onnx,vnnlib' matches ``pattern`` (regex search), at most ``limit``."""
    chosen = [i for i in instances if not pattern or re.search(pattern, f"{i.onnx},{i.vnnlib}")]
    return chosen[:limit] if limit is not None else chosen



# ----------------------------------------------------------------------------- scoring

def write_results_csv(outcomes: list[Outcome], path: Path) -> None:
    """results.csv: one row per instance, columns = the Outcome fields."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([fl.name for fl in fields(Outcome)])
        for o in outcomes:
            writer.writerow(["" if v is None else v for v in asdict(o).values()])


def read_results_csv(path: Path) -> list[Outcome]:
    """Outcomes back from a results.csv this module wrote."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append(Outcome(r["id"], r["onnx"], r["vnnlib"], float(r["timeout_s"]), r["result"],
                           float(r["time_s"]), float_or_none(r["tool_time_s"]), r["method"],
                           r["reason"], r["truth"], r["check"], r.get("witness", "")))
    return out


def _times(values: list[float]) -> dict:
    """total and median of a list of seconds (None median when empty)."""
    return {"total_s": round(sum(values), 3), "median_s": round(statistics.median(values), 3) if values else None}


def reference_stats(outcomes: list[Outcome], instances: list[Instance], truth: dict) -> dict:
    """Per reference tool, on the same instances: solved (not contradicting truth), wrong, times."""
    limits = {i.key: o.timeout_s for i, o in zip(instances, outcomes)}
    stats: dict[str, dict] = {}
    for inst in instances:
        row = truth.get(inst.key)
        for tool, (word, secs) in (row.references.items() if row else ()):
            s = stats.setdefault(tool, {"solved": 0, "wrong": 0, "solved_within_our_timeout": 0, "_t": []})
            verdict = judge(word, row.truth)
            if verdict == "WRONG":
                s["wrong"] += 1
            elif verdict:
                s["solved"] += 1
                s["_t"].append(secs or 0.0)
                s["solved_within_our_timeout"] += int(secs is not None and secs <= limits[inst.key])
    for s in stats.values():
        s.update({f"solved_{k}": v for k, v in _times(s.pop("_t")).items()})
    return stats


def machine_info() -> dict:
    """Where and with what this run happened: platform, CPUs, torch threads, git commit, date."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    try:
        import torch
    except ImportError:
        info["torch_threads"] = None
    else:
        info["torch_threads"], info["torch"] = torch.get_num_threads(), torch.__version__
    info["git_commit"] = _git("rev-parse", "HEAD")
    info["git_dirty"] = bool(_git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no"))
    return info


def _git(*args: str) -> str | None:
    """Output of a read-only git command in the repository, or None."""
    try:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def summarize(outcomes: list[Outcome], instances: list[Instance], truth: dict, family: str,
              config: RunnerConfig, folder: Path) -> dict:
    """The summary.json object: counts, times, reference tools, machine, settings."""
    counts = {w: sum(o.result == w for o in outcomes) for w in WORDS}
    counts.update(solved=sum(o.solved for o in outcomes), WRONG=sum(o.check == "WRONG" for o in outcomes),
                  correct=sum(o.check == "correct" for o in outcomes),
                  unconfirmed=sum(o.check == "unconfirmed" for o in outcomes))
    return {
        "family": family, "folder": str(folder), "instances": len(outcomes), "counts": counts,
        "time": {"all": _times([o.time_s for o in outcomes]),
                 "solved": _times([o.time_s for o in outcomes if o.solved])},
        "wrong": [o.id for o in outcomes if o.check == "WRONG"],
        "witness": {w: sum(o.witness == w for o in outcomes) for w in ("valid", "invalid", "unchecked")},
        "truth": {w: sum(o.truth == w for o in outcomes) for w in ("sat", "unsat", "unknown")},
        "reference": reference_stats(outcomes, instances, truth),
        "machine": machine_info(), "settings": asdict(config),
    }


# ----------------------------------------------------------------------------- plots and tables

def cactus_plot(outcomes: list[Outcome], instances: list[Instance], truth: dict, path: Path, title: str) -> bool:
    """Cactus plot PNG: instances solved (x) vs per-instance time (y); False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    lines = {"nnverify": sorted(o.time_s for o in outcomes if o.solved)}
    for inst in instances:
        row = truth.get(inst.key)
        for tool, (word, secs) in (row.references.items() if row else ()):
            series = lines.setdefault(tool, [])
            if judge(word, row.truth) in ("correct", "unconfirmed") and secs is not None:
                series.append(secs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, times in lines.items():
        times = sorted(times)
        ax.plot(range(1, len(times) + 1), times, marker="o", markersize=3, label=f"{name} ({len(times)})",
                linewidth=2.2 if name == "nnverify" else 1.2)
    ax.set_xlabel("instances solved")
    ax.set_ylabel("time (s)")
    ax.set_yscale("log")
    ax.set_xlim(0, max(len(instances), 1))
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def markdown_table(summaries: list[dict]) -> str:
    """One markdown table over families: our counts and times, then each reference tool."""
    tools = sorted({t.split("_")[0] for s in summaries for t in s["reference"]})
    head = ["family", "inst", "solved", "sat", "unsat", "unknown", "timeout", "error", "WRONG",
            "solved time (s)", "median (s)"] + [f"{t} solved (s)" for t in tools]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    total = {k: 0 for k in ("instances", "solved", "sat", "unsat", "unknown", "timeout", "error", "WRONG")}
    for s in summaries:
        c = s["counts"]
        refs = {t.split("_")[0]: r for t, r in s["reference"].items()}
        cells = [s["family"], s["instances"]] + [c[k] for k in list(total)[1:]]
        cells[-1] = f"**{c['WRONG']}**" if c["WRONG"] else 0
        cells += [f"{s['time']['solved']['total_s']:.1f}", _fmt(s["time"]["solved"]["median_s"])]
        cells += [f"{refs[t]['solved']} ({refs[t]['solved_total_s']:.1f})" if t in refs else "-" for t in tools]
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
        total["instances"] += s["instances"]
        for k in list(total)[1:]:
            total[k] += c[k]
    solved_time = sum(s["time"]["solved"]["total_s"] for s in summaries)
    lines.append("| **total** | " + " | ".join(str(total[k]) for k in total) + f" | {solved_time:.1f} | |"
                 + " |" * len(tools))
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    """A number with one decimal, or '-' for None."""
    return "-" if x is None else f"{x:.1f}"


# ----------------------------------------------------------------------------- comparing runs

def compare(old: list[Outcome], new: list[Outcome]) -> dict:
    """Diff two runs on their common instances: newly solved, lost, flips, speed-ups."""
    before = {(norm_path(o.onnx), norm_path(o.vnnlib)): o for o in old}
    common = [(before[k], o) for o in new if (k := (norm_path(o.onnx), norm_path(o.vnnlib))) in before]
    both = [(a, b) for a, b in common if a.solved and b.solved]
    ratios = sorted(((a.time_s / max(b.time_s, 1e-3), b.id) for a, b in both), reverse=True)
    return {
        "common": len(common),
        "newly_solved": [b.id for a, b in common if b.solved and not a.solved],
        "lost": [b.id for a, b in common if a.solved and not b.solved],
        "flipped": [f"{b.id}: {a.result} -> {b.result}" for a, b in common
                    if a.result in DECIDED and b.result == OPPOSITE[a.result]],
        "solved_old": sum(a.solved for a, _ in common), "solved_new": sum(b.solved for _, b in common),
        "both_solved": len(both),
        "time_both_old_s": round(sum(a.time_s for a, _ in both), 3),
        "time_both_new_s": round(sum(b.time_s for _, b in both), 3),
        "speedups": [(round(r, 2), i) for r, i in ratios[:10] if r > 1.0],
        "slowdowns": [(round(r, 2), i) for r, i in reversed(ratios[-10:]) if r < 1.0],
    }


def compare_markdown(diff: dict) -> str:
    """The comparison as a short markdown report."""
    out = [f"# Comparison ({diff['common']} common instances)", "",
           f"* solved: {diff['solved_old']} -> {diff['solved_new']}",
           f"* time on the {diff['both_solved']} solved by both: "
           f"{diff['time_both_old_s']:.1f} s -> {diff['time_both_new_s']:.1f} s"]
    for key, title in (("flipped", "ANSWER FLIPS (sat <-> unsat)"), ("newly_solved", "newly solved"),
                       ("lost", "lost")):
        out += ["", f"## {title} ({len(diff[key])})"] + [f"* {x}" for x in diff[key]]
    for key, title in (("speedups", "largest speed-ups (old/new)"), ("slowdowns", "largest slow-downs (old/new)")):
        out += ["", f"## {title}"] + [f"* {r}x {i}" for r, i in diff[key]]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- entry points

def run_family(folder: Path, config: RunnerConfig, out_dir: Path, truth_path: Path | None = None) -> dict:
    """Run one benchmark family and write results.csv, summary.json and cactus.png into ``out_dir``."""
    folder = Path(folder).resolve()
    family = folder.name
    truth_path = truth_path if truth_path is not None else folder / "truth.csv"
    truth = read_truth(truth_path)
    instances = select(read_instances(folder), config.filter, config.limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = run_all(instances, truth, config, out_dir, family)
    write_results_csv(outcomes, out_dir / "results.csv")
    summary = summarize(outcomes, instances, truth, family, config, folder)
    summary["cactus"] = cactus_plot(outcomes, instances, truth, out_dir / "cactus.png",
                                    f"{family}: {summary['counts']['solved']}/{len(outcomes)} solved")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_families(root: Path, config: RunnerConfig, out_dir: Path) -> list[dict]:
    """Run every family folder under ``root`` (those holding instances.csv); write summary.md."""
    folders = sorted(p for p in Path(root).iterdir() if (p / "instances.csv").is_file())
    summaries = [run_family(f, config, out_dir / f.name) for f in folders]
    table = markdown_table(summaries)
    (out_dir / "summary.md").write_text(f"# {Path(root).name}\n\n{table}")
    (out_dir / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries


def print_summary(summary: dict) -> None:
    """A few human lines about one family on stderr."""
    c, t = summary["counts"], summary["time"]["solved"]
    print(f"{summary['family']}: solved {c['solved']}/{summary['instances']} (sat {c['sat']}, unsat {c['unsat']}), "
          f"unknown {c['unknown']}, timeout {c['timeout']}, error {c['error']}, WRONG {c['WRONG']}; "
          f"solved time {t['total_s']:.1f} s, median {_fmt(t['median_s'])} s", file=sys.stderr)
    for tool, r in summary["reference"].items():
        print(f"  {tool}: solved {r['solved']} ({r['solved_total_s']:.1f} s), wrong {r['wrong']}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.vnncomp", description=__doc__.split("\n")[0])
    p.add_argument("folder", nargs="?", type=Path,
                   help="benchmark folder with instances.csv (or a results.csv with --compare)")
    p.add_argument("--all-families", type=Path, metavar="ROOT", help="run every family folder under ROOT")
    p.add_argument("--truth", type=Path, help="truth.csv (default: beside instances.csv)")
    p.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<family>-<timestamp>/)")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every published timeout")
    p.add_argument("--max-timeout", type=float, help="cap on the (scaled) timeout, seconds")
    p.add_argument("--grace", type=float, default=5.0,
                   help="seconds past the timeout before the process group is killed")
    p.add_argument("--filter", metavar="REGEX", help="only instances whose 'onnx,vnnlib' matches")
    p.add_argument("--limit", type=int, help="at most N instances (after --filter)")
    p.add_argument("--jobs", type=int, default=1, help="instances run at the same time")
    p.add_argument("--cli", default=str(DEFAULT_CLI), help="the nnverify executable")
    p.add_argument("--no-witness-check", action="store_true", help="do not re-run sat witnesses on onnxruntime")
    p.add_argument("--compare", type=Path, metavar="OLD_RESULTS_CSV", help="diff against an earlier results.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 1 when any answer is WRONG (or flipped in --compare), 2 on usage errors."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = RunnerConfig(cli=args.cli, timeout_scale=args.timeout_scale, max_timeout=args.max_timeout,
                          grace=args.grace, filter=args.filter, limit=args.limit, jobs=max(1, args.jobs),
                          check_witness=not args.no_witness_check)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.compare and args.folder and args.folder.is_file():
        return _compare_files(args.compare, args.folder, None)
    if args.all_families:
        out = args.out or RESULTS_ROOT / f"all-{args.all_families.name}-{stamp}"
        summaries = run_families(args.all_families, config, out)
        for s in summaries:
            print_summary(s)
        print((out / "summary.md").read_text())
        print(f"results in {out}", file=sys.stderr)
        return 1 if any(s["counts"]["WRONG"] for s in summaries) else 0
    if args.folder is None or not (args.folder / "instances.csv").is_file():
        parser.error("give a benchmark folder holding instances.csv, or --all-families ROOT")
    out = args.out or RESULTS_ROOT / f"{args.folder.resolve().name}-{stamp}"
    summary = run_family(args.folder, config, out, args.truth)
    print_summary(summary)
    for wrong_id in summary["wrong"]:
        print(f"!!! WRONG: {wrong_id}", file=sys.stderr)
    print(f"results in {out}", file=sys.stderr)
    flipped = _compare_files(args.compare, out / "results.csv", out / "compare.md") if args.compare else 0
    return 1 if summary["counts"]["WRONG"] or flipped else 0


def _compare_files(old: Path, new: Path, report: Path | None) -> int:
    """Print (and optionally write) the diff of two results.csv; 1 if any sat/unsat answer flipped."""
    diff = compare(read_results_csv(old), read_results_csv(new))
    text = compare_markdown(diff)
    print(text)
    if report is not None:
        report.write_text(text)
    return 1 if diff["flipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
