"""One branch-and-bound search spread over the worker pool: hard ACAS Xu (input splitting) and
mnist_fc (ReLU splitting) instances with 1 and 2 worker processes.

    python -m benchmarks.distributed --out benchmarks/results/distributed --acas 10 --mnist 10 \\
        --acas-timeout 40 --mnist-timeout 30

Each setting gets its own stack (API + one worker of 1 or 2 processes, one torch thread each)
on the local Redis; jobs run one at a time, so with 2 processes the second one only ever takes
chunks. Chunks ship after ``--after`` seconds (``NNVERIFY_DISTRIBUTE_AFTER``). ACAS Xu: the
``--acas`` slowest instances of ``benchmarks/results/acasxu-full-116s``; mnist_fc: ``MNIST``.
Writes ``results.csv`` and ``summary.json``: wall time per job, the search's own time, the
chunks' search time, their queue overhead (time from ship to result not spent searching) and the
home search's time in the pool calls (shipping, polling, joining). Figures only; nothing here asserts.
"""
from __future__ import annotations

import argparse
import ast
import csv
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.vnncomp import machine_info
from verifier.shared_data import benchmarks_root
from workers.client import Client
from workers.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
ACAS = benchmarks_root() / "vnncomp2021" / "acasxu"
MNIST_DIR = benchmarks_root() / "vnncomp2021" / "mnistfc"
ACAS_TIMES = ROOT / "benchmarks" / "results" / "acasxu-full-116s" / "results.csv"
# mnist_fc instances that reach ReLU splitting: the five 256x2 ones that one process settles in a few
# seconds today, then five it leaves open after 40-60 s (probed before the run; known truth)
MNIST = [("256x2", "prop_0_0.03"), ("256x2", "prop_5_0.03"), ("256x2", "prop_9_0.03"), ("256x2", "prop_13_0.03"),
         ("256x2", "prop_6_0.05"), ("256x2", "prop_3_0.03"), ("256x2", "prop_1_0.03"), ("256x4", "prop_13_0.03"),
         ("256x2", "prop_0_0.05"), ("256x4", "prop_0_0.03")]
STAT_KEYS = ("chunks", "shipped", "taken_back", "partial", "chunk_seconds", "overhead_seconds", "home_pool_seconds",
             "home_wait_seconds")


def slowest_acas(n: int) -> list[tuple[Path, Path]]:
    """The ``n`` ACAS Xu instances settled slowest in the full 116 s run."""
    rows = [r for r in csv.DictReader(ACAS_TIMES.open()) if r["result"] in ("sat", "unsat")]
    rows.sort(key=lambda r: -float(r["tool_time_s"]))
    return [(ACAS / r["onnx"], ACAS / r["vnnlib"]) for r in rows[:n]]


def instance_name(net: Path, prop: Path) -> str:
    """``5_8 prop_1`` (ACAS Xu) or ``256x2 prop_0_0.03`` (mnist_fc)."""
    if "run2a_" in net.stem:
        return f"{net.stem.split('run2a_')[1][:3]} {prop.stem}"
    return f"{net.stem.split('_')[-1]} {prop.stem}"


def search_stats(job: dict) -> dict:
    """Branch-and-bound stats summed over the job's goals (its ``bab-input``/``bab-relu ... region`` lines)."""
    total = {"domains": 0, "goals": 0, "proved": 0, **{k: 0.0 for k in STAT_KEYS}, "workers": 1}
    for line in job.get("log", []):
        if ("bab-input region" in line or "bab-relu region" in line) and "{" in line:
            stats = ast.literal_eval(line[line.index("{"):])
            total["domains"] += int(stats.get("domains", 0))
            total["goals"] += 1
            total["proved"] += ": holds {" in line
            dist = stats.get("distributed", {})
            for k in STAT_KEYS:
                total[k] += float(dist.get(k, 0.0))
            total["workers"] = max(total["workers"], int(dist.get("workers", 1)))
    return total


def run_setting(processes: int, instances: list[tuple[str, Path, Path, float]], after: float, data: Path) -> list[dict]:
    """Run every instance once, one at a time, on a stack with ``processes`` worker processes."""
    stack = LocalStack(data, {"NNVERIFY_QUEUE_PREFIX": f"dist{uuid.uuid4().hex[:8]}:", "NNVERIFY_WORKER_THREADS": "1",
                              "NNVERIFY_DISTRIBUTE_AFTER": str(after)})
    rows = []
    try:
        stack.start_api()
        stack.start_worker(queues="cpu", concurrency=processes, ready=240)
        api = Client(stack.url, stack.token("bench"))
        for family, net, prop, timeout in instances:
            t0 = time.monotonic()
            job = api.wait(api.submit(str(net), str(prop), timeout=timeout), poll=0.2, limit=timeout + 180)
            wall = time.monotonic() - t0
            st = search_stats(job)
            rows.append({"family": family, "processes": processes, "instance": instance_name(net, prop),
                         "verdict": job["verdict"], "timeout_s": timeout, "wall_s": round(wall, 3),
                         "job_s": job["seconds"], "bab_s": job["timings"].get("bab"),
                         "check_s": job["timings"].get("check"), "bab_goals": st["goals"], "bab_proved": st["proved"],
                         "domains": st["domains"],
                         "chunks": int(st["chunks"]), "shipped": int(st["shipped"]), "taken_back": int(st["taken_back"]),
                         "partial": int(st["partial"]),
                         "workers": st["workers"], "chunk_search_s": round(st["chunk_seconds"], 3),
                         "overhead_s": round(st["overhead_seconds"], 3),
                         "home_pool_s": round(st["home_pool_seconds"], 3),
                         "home_wait_s": round(st["home_wait_seconds"], 3)})
            print(rows[-1], flush=True)
    finally:
        stack.stop()
    return rows


def summarize(rows: list[dict], truth: dict[str, str]) -> dict:
    """Per family: solved, wrong verdicts, speed-ups over instances both settings settled, overheads."""
    one = {r["instance"]: r for r in rows if r["processes"] == 1}
    two = {r["instance"]: r for r in rows if r["processes"] == 2}
    settled = ("holds", "violated")
    both = [k for k in one if k in two and one[k]["verdict"] in settled and two[k]["verdict"] in settled]
    wrong = [f'{r["instance"]} ({r["processes"]}p)' for r in rows if r["verdict"] in settled
             and truth.get(r["instance"]) not in (None, {"holds": "unsat", "violated": "sat"}[r["verdict"]])]
    chunk_s = sum(r["chunk_search_s"] for r in two.values())
    chunks = sum(r["chunks"] for r in two.values())
    overhead = sum(r["overhead_s"] for r in two.values())
    pool = sum(r["home_pool_s"] for r in two.values())
    searched = [k for k in one if k in two and one[k]["bab_s"] and two[k]["bab_s"] and one[k]["domains"]]
    return {
        "instances": len(one), "solved_1": sum(r["verdict"] in settled for r in one.values()),
        "solved_2": sum(r["verdict"] in settled for r in two.values()), "wrong": wrong, "both_solved": len(both),
        "speedup_job_geomean": _geomean([one[k]["job_s"] / two[k]["job_s"] for k in both]),
        "speedup_search_geomean": _geomean([one[k]["bab_s"] / two[k]["bab_s"] for k in both]),
        # domains searched per second of branch and bound (home and chunks), over every instance both ran
        "throughput_ratio_geomean": _geomean([(two[k]["domains"] / two[k]["bab_s"]) / (one[k]["domains"] / one[k]["bab_s"])
                                              for k in searched if two[k]["domains"]]),
        "per_domain_ms_1": round(1000 * statistics.median(one[k]["bab_s"] / one[k]["domains"] for k in searched), 4)
        if searched else None,
        "chunks": chunks, "chunk_search_s": round(chunk_s, 3), "queue_overhead_s": round(overhead, 3),
        "queue_overhead_share": round(overhead / chunk_s, 4) if chunk_s else None,
        "overhead_per_chunk_s": round(overhead / chunks, 4) if chunks else None,
        "home_pool_s": round(pool, 3),
        "home_pool_share_of_search": round(pool / sum(r["bab_s"] or 0 for r in two.values()), 4)
        if any(r["bab_s"] for r in two.values()) else None,
    }


def _geomean(values: list[float]) -> float | None:
    return round(statistics.geometric_mean(values), 3) if values else None


def _truth() -> dict[str, str]:
    """Ground truth by instance name, from both benchmarks' ``truth.csv``."""
    out = {}
    for folder in (ACAS, MNIST_DIR):
        path = folder / "truth.csv"
        for row in csv.DictReader(path.open()) if path.exists() else []:
            out[instance_name(Path(row["onnx"]), Path(row["vnnlib"]))] = row["truth"].strip()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/distributed")
    ap.add_argument("--acas", type=int, default=10, help="how many of the slowest ACAS Xu instances")
    ap.add_argument("--mnist", type=int, default=10, help="how many of the mnist_fc instances in MNIST")
    ap.add_argument("--acas-timeout", type=float, default=40.0)
    ap.add_argument("--mnist-timeout", type=float, default=30.0)
    ap.add_argument("--after", type=float, default=1.0, help="seconds before chunks ship (NNVERIFY_DISTRIBUTE_AFTER)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    instances = [("acasxu", net, prop, args.acas_timeout) for net, prop in slowest_acas(args.acas)]
    instances += [("mnistfc", MNIST_DIR / "onnx" / f"mnist-net_{net}.onnx", MNIST_DIR / "vnnlib" / f"{prop}.vnnlib",
                   args.mnist_timeout) for net, prop in MNIST[:args.mnist]]
    rows = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nnverify-dist-") as tmp:
        for processes in (1, 2):
            rows += run_setting(processes, instances, args.after, Path(tmp) / f"p{processes}")
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    truth = _truth()
    summary = {"summary": {fam: summarize([r for r in rows if r["family"] == fam], truth)
                           for fam in ("acasxu", "mnistfc")},
               "acas_timeout_s": args.acas_timeout, "mnist_timeout_s": args.mnist_timeout,
               "distribute_after_s": args.after, "total_wall_s": round(time.monotonic() - t0, 1),
               "machine": machine_info()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["summary"], indent=1))


if __name__ == "__main__":
    main()
