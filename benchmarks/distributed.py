"""One input-split search spread over the worker pool: slow ACAS Xu instances with 1 and 2 worker processes.

    python -m benchmarks.distributed --out benchmarks/results/distributed --limit 5 --timeout 60

Each setting gets its own stack (API + one worker of 1 or 2 processes, one torch thread each)
on the local Redis; jobs run one at a time, so with 2 processes the second one only ever takes
chunks. Chunks ship after ``--after`` seconds (``NNVERIFY_DISTRIBUTE_AFTER``). Writes
``results.csv`` and ``summary.json``: wall time per job, the search's own time, the chunks'
search time and their queue overhead (time from ship to result not spent searching). Figures
only; nothing here asserts.
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
from workers.client import Client
from workers.stack import LocalStack

ACAS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "vnncomp2021" / "acasxu"
# the slowest ACAS Xu instances that one process settles in about 10 s (acasxu-full-116s); the three
# slower ones (2_8 prop_1, 4_2 prop_2, 3_3 prop_2: 70-106 s) are left to the projection in docs/distributed.md
SLOW = [("5_8", 1), ("3_3", 9), ("1_1", 5), ("1_4", 1), ("4_9", 1), ("1_8", 2), ("4_7", 1), ("5_9", 1)]


def search_stats(job: dict) -> dict:
    """The input-split search's stats from the job's method log (its ``bab-input ...`` line)."""
    for line in job.get("log", []):
        if "bab-input region" in line and "{" in line:
            return ast.literal_eval(line[line.index("{"):])
    return {}


def run_setting(processes: int, instances: list[tuple[Path, Path]], timeout: float, after: float, data: Path) -> list[dict]:
    """Run every instance once, one at a time, on a stack with ``processes`` worker processes."""
    stack = LocalStack(data, {"NNVERIFY_QUEUE_PREFIX": f"dist{uuid.uuid4().hex[:8]}:", "NNVERIFY_WORKER_THREADS": "1",
                              "NNVERIFY_DISTRIBUTE_AFTER": str(after)})
    rows = []
    try:
        stack.start_api()
        stack.start_worker(queues="cpu", concurrency=processes, ready=240)
        api = Client(stack.url, stack.token("bench"))
        for net, prop in instances:
            t0 = time.monotonic()
            job = api.wait(api.submit(str(net), str(prop), timeout=timeout), poll=0.2, limit=timeout + 120)
            wall = time.monotonic() - t0
            stats = search_stats(job)
            dist = stats.get("distributed", {})
            rows.append({"processes": processes, "instance": f"{net.stem.split('run2a_')[1][:3]} {prop.stem}",
                         "verdict": job["verdict"], "wall_s": round(wall, 3), "job_s": job["seconds"],
                         "bab_s": job["timings"].get("bab"), "check_s": job["timings"].get("check"),
                         "domains": stats.get("domains"), "chunks": dist.get("chunks", 0),
                         "workers": dist.get("workers", 1), "chunk_search_s": dist.get("chunk_seconds", 0.0),
                         "overhead_s": dist.get("overhead_seconds", 0.0)})
            print(rows[-1], flush=True)
    finally:
        stack.stop()
    return rows


def summarize(rows: list[dict], truth: dict[str, str]) -> dict:
    one = {r["instance"]: r for r in rows if r["processes"] == 1}
    two = {r["instance"]: r for r in rows if r["processes"] == 2}
    both = [k for k in one if k in two and one[k]["verdict"] == two[k]["verdict"] == "holds"]
    wrong = [r["instance"] for r in rows if r["verdict"] in ("holds", "violated")
             and truth.get(r["instance"]) not in (None, {"holds": "unsat", "violated": "sat"}[r["verdict"]])]
    chunk_s = sum(two[k]["chunk_search_s"] for k in two)
    chunks = sum(two[k]["chunks"] for k in two)
    return {
        "instances": len(one), "solved_1": sum(r["verdict"] in ("holds", "violated") for r in one.values()),
        "solved_2": sum(r["verdict"] in ("holds", "violated") for r in two.values()), "wrong": wrong,
        "speedup_job_geomean": _geomean([one[k]["job_s"] / two[k]["job_s"] for k in both]),
        "speedup_search_geomean": _geomean([one[k]["bab_s"] / two[k]["bab_s"] for k in both]),
        "per_domain_ms_1": round(1000 * statistics.median(one[k]["bab_s"] / one[k]["domains"] for k in both), 4) if both else None,
        "chunks": chunks, "chunk_search_s": round(chunk_s, 3),
        "queue_overhead_s": round(sum(two[k]["overhead_s"] for k in two), 3),
        "queue_overhead_share": round(sum(two[k]["overhead_s"] for k in two) / chunk_s, 4) if chunk_s else None,
        "overhead_per_chunk_s": round(sum(two[k]["overhead_s"] for k in two) / chunks, 4) if chunks else None,
    }


def _geomean(values: list[float]) -> float | None:
    return round(statistics.geometric_mean(values), 3) if values else None


def _truth() -> dict[str, str]:
    out = {}
    for line in (ACAS / "truth.csv").read_text().splitlines() if (ACAS / "truth.csv").exists() else []:
        parts = line.split(",")
        if len(parts) >= 4 and "run2a_" in parts[0]:   # onnx, vnnlib, timeout, truth, ...
            out[f"{parts[0].split('run2a_')[1][:3]} {Path(parts[1]).stem}"] = parts[3].strip()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/distributed")
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--after", type=float, default=1.0, help="seconds before chunks ship (NNVERIFY_DISTRIBUTE_AFTER)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    instances = [(ACAS / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx", ACAS / "vnnlib" / f"prop_{prop}.vnnlib")
                 for net, prop in SLOW[:args.limit]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnverify-dist-") as tmp:
        for processes in (1, 2):
            rows += run_setting(processes, instances, args.timeout, args.after, Path(tmp) / f"p{processes}")
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {"summary": summarize(rows, _truth()), "timeout_s": args.timeout, "distribute_after_s": args.after,
               "machine": machine_info()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["summary"], indent=1))


if __name__ == "__main__":
    main()
