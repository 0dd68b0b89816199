"""Service benchmarks: queue overhead on trivial jobs, and ACAS Xu through the API.

    python -m benchmarks.service trivial --jobs 2000 --out benchmarks/results/service-trivial
    python -m benchmarks.service acasxu --out benchmarks/results/service-acasxu

Each run starts its own stack (API + one worker of ``--workers`` processes, one torch thread
each) on the local Redis under a fresh key prefix, submits through HTTP, and writes
``results.csv`` and ``summary.json``. Figures only; nothing here asserts.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import datetime as dt
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.vnncomp import judge, read_instances, read_truth
from verifier.shared_data import benchmarks_root
from workers.stack import LocalStack
from workers.warmup import tiny_instance

SHARED = benchmarks_root()


class Bench:
    """A stack plus an HTTP client with one tenant's token."""

    def __init__(self, workers: int, data: Path):
        self.stack = LocalStack(data, {"NNVERIFY_QUEUE_PREFIX": f"bench{uuid.uuid4().hex[:8]}:",
                                       "NNVERIFY_WORKER_THREADS": "1"})
        self.stack.start_api()
        self.stack.start_worker(concurrency=workers)
        self.http = httpx.Client(base_url=self.stack.url, timeout=60,
                                 headers={"Authorization": f"Bearer {self.stack.token('bench')}"})

    def submit(self, model: Path, spec: Path, timeout: float) -> tuple[str, float]:
        """Submit; (job id, wall-clock time of the submit call's start)."""
        t = time.time()
        files = {"model": (model.name, model.read_bytes()), "spec": (spec.name, spec.read_bytes())}
        r = self.http.post("/v1/jobs", files=files, data={"timeout": str(timeout)})
        r.raise_for_status()
        return r.json()["id"], t

    def wait_done(self, n: int, limit: float) -> float:
        """Poll the count of finished jobs (cheaply) until it reaches ``n``; the wall time then."""
        end = time.time() + limit
        while time.time() < end:
            total = sum(self.http.get("/v1/jobs", params={"state": st, "limit": 1}).json()["total"]
                        for st in ("done", "failed"))
            if total >= n:
                return time.time()
            time.sleep(0.1)
        return time.time()

    def all_jobs(self) -> list[dict]:
        rows, offset = [], 0
        while True:
            page = self.http.get("/v1/jobs", params={"limit": 500, "offset": offset}).json()
            rows += page["items"]
            offset += 500
            if offset >= page["total"]:
                return rows

    def close(self) -> None:
        self.http.close()
        self.stack.stop()


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    value = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return value.replace(tzinfo=value.tzinfo or dt.timezone.utc).timestamp()


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_trivial(args) -> tuple[dict, list[dict]]:
    """N trivial jobs from concurrent clients: throughput, losses, and where a job's time goes."""
    with tempfile.TemporaryDirectory(prefix="nnverify-bench-") as tmp:
        net, prop = tiny_instance(Path(tmp))
        bench = Bench(args.workers, Path(tmp) / "stack")
        try:
            t0 = time.time()
            with cf.ThreadPoolExecutor(args.clients) as pool:
                ids = [i for i, _ in pool.map(lambda _: bench.submit(net, prop, 30.0), range(args.jobs))]
            t_submitted = time.time()
            t_done = bench.wait_done(args.jobs, args.limit)
            jobs = {j["id"]: j for j in bench.all_jobs()}
            probes = idle_probes(bench, net, prop, args.idle_probes)
        finally:
            bench.close()
    rows = []
    for job_id in ids:
        job = jobs.get(job_id, {})
        created, started, finished = (_epoch(job.get(k)) for k in ("created_at", "started_at", "finished_at"))
        rows.append({"id": job_id, "state": job.get("state"), "verdict": job.get("verdict"),
                     "queued_ms": 1000 * (started - created) if started else None,
                     "run_ms": 1000 * (finished - started) if finished and started else None,
                     "verify_ms": 1000 * job["seconds"] if job.get("seconds") is not None else None})
    verdicts = [r["verdict"] for r in rows]
    summary = {
        "jobs": args.jobs, "workers": args.workers, "clients": args.clients,
        "done": sum(r["state"] == "done" for r in rows), "lost": sum(r["state"] != "done" for r in rows),
        "verdicts": {v: verdicts.count(v) for v in sorted(set(map(str, verdicts)))},
        "submit_rate_per_s": args.jobs / (t_submitted - t0), "throughput_jobs_per_s": args.jobs / (t_done - t0),
        "backlog_submit_to_start_ms": _stats([r["queued_ms"] for r in rows]),
        "worker_run_ms": _stats([r["run_ms"] for r in rows]),
        "verify_ms": _stats([r["verify_ms"] for r in rows]),
        "idle": probes,
    }
    return summary, rows


def idle_probes(bench: Bench, net: Path, prop: Path, n: int) -> dict:
    """Jobs sent one at a time to idle workers, watched every 5 ms: the queue's own overhead."""
    start_lag, visible_lag, round_trip = [], [], []
    for _ in range(n):
        job_id, t_call = bench.submit(net, prop, 30.0)
        while (job := bench.http.get(f"/v1/jobs/{job_id}").json())["state"] not in ("done", "failed"):
            time.sleep(0.005)
        seen = time.time()
        created, started, finished = (_epoch(job[k]) for k in ("created_at", "started_at", "finished_at"))
        start_lag.append(1000 * (started - created))
        visible_lag.append(1000 * (seen - finished))
        round_trip.append(1000 * (seen - t_call) - 1000 * job["seconds"])
    return {"n": n, "submit_to_start_ms": _stats(start_lag), "finish_to_visible_ms": _stats(visible_lag),
            "round_trip_minus_verify_ms": _stats(round_trip), "poll_ms": 5}


def _stats(values: list) -> dict:
    values = [v for v in values if v is not None]
    return {"p50": _pct(values, 50), "p95": _pct(values, 95), "n": len(values)}


def run_acasxu(args) -> dict:
    """Every ACAS Xu instance through the API to warm single-thread workers: solved, wrong, wall."""
    folder = Path(args.family)
    instances, truth = read_instances(folder), read_truth(folder / "truth.csv")
    with tempfile.TemporaryDirectory(prefix="nnverify-bench-") as tmp:
        bench = Bench(args.workers, Path(tmp) / "stack")
        try:
            t0 = time.time()
            ids = {}
            for inst in instances[: args.limit]:
                job_id, _ = bench.submit(folder / inst.onnx, folder / inst.vnnlib, inst.timeout)
                ids[job_id] = inst
            wall = bench.wait_done(len(ids), args.limit_s) - t0
            rows = []
            for job_id, inst in ids.items():
                job = bench.http.get(f"/v1/jobs/{job_id}").json()
                word = job.get("result") or job["state"]
                t = truth.get((inst.onnx.lstrip("./"), inst.vnnlib.lstrip("./")))
                t = t or truth.get((str(Path(inst.onnx)), str(Path(inst.vnnlib))))
                expected = t.truth if t else "unknown"
                rows.append({"onnx": inst.onnx, "vnnlib": inst.vnnlib, "result": word, "truth": expected,
                             "check": judge(word, expected), "verify_s": job["seconds"],
                             "queue_s": (_epoch(job["started_at"]) or 0) - (_epoch(job["created_at"]) or 0),
                             "certificate_checked": job["certificate_checked"], "reason": job["reason"][:200]})
        finally:
            bench.close()
    solved = [r for r in rows if r["result"] in ("sat", "unsat") and r["check"] != "WRONG"]
    return {"instances": len(rows), "workers": args.workers, "solved": len(solved),
            "unsat": sum(r["result"] == "unsat" for r in solved), "sat": sum(r["result"] == "sat" for r in solved),
            "wrong": sum(r["check"] == "WRONG" for r in rows), "wall_s": wall,
            "verify_s_total": sum(r["verify_s"] or 0 for r in rows),
            "verify_s_median": statistics.median([r["verify_s"] or 0 for r in rows]) if rows else None}, rows


def write(out: Path, summary: dict, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if rows:
        with (out / "results.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(json.dumps(summary, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("trivial")
    t.add_argument("--jobs", type=int, default=2000)
    t.add_argument("--clients", type=int, default=4, help="concurrent submitting threads")
    t.add_argument("--idle-probes", type=int, default=50)
    t.add_argument("--limit", type=float, default=1800, help="seconds to wait for all jobs")
    a = sub.add_parser("acasxu")
    a.add_argument("--family", default=str(SHARED / "vnncomp2021" / "acasxu"))
    a.add_argument("--limit", type=int, default=None, help="first N instances only")
    a.add_argument("--limit-s", type=float, default=7200)
    for p in (t, a):
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.what == "trivial":
        summary, rows = run_trivial(args)
    else:
        summary, rows = run_acasxu(args)
    summary["when"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write(args.out, summary, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
