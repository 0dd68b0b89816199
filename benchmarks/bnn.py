"""BNN -> SAT benchmark: fixed-seed MNIST-sized binarized networks under argmax-robustness boxes.

Usage (from the repository root)::

    python -m benchmarks.bnn                       # default grid, writes benchmarks/results/bnn.json
    python -m benchmarks.bnn --quick               # one small configuration
    python -m benchmarks.bnn --encodings           # also compare cardinality encodings and solvers

Networks: 784 -> hidden... -> 10, hidden weights random +-1, batch-norm as a per-neuron affine,
final linear with real weights. Inputs: a random "binary-ish" image x0 (pixels +-U(0.3, 1));
k random pixels are free over [-1, 1] (their sign may be -1, 0 or +1), the others move by at
most 0.05 (their sign is fixed). Property: the label predicted at x0 stays the argmax (unsafe
polytopes y_label - y_j <= 0, one per j, solved as one disjunction). Random networks are
rarely robust, so ``boost`` adds ``boost * h0 / sqrt(width)`` to the label's output row (h0: the
last hidden signs at x0), a stand-in for a trained margin: boost 0 -> mostly violated, 1 -> mostly holds.

Every "holds" is cross-checked by sampling the box (a violation found there is reported as WRONG).
VNN-COMP's traffic_signs_recognition (the public BNN benchmark) is not in the shared benchmarks,
so the instances here are generated.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from verifier.exact.bnn_sat import recognise_bnn, verify_bnn_any
from verifier.model.graph import Graph, Node
from verifier.spec.spec import Polytope, Region

RESULTS = Path(__file__).resolve().parent / "results" / "bnn.json"
GRID = {"hidden": [[100], [200, 100], [500, 200]], "k": [5, 20], "boost": [0.0, 1.0], "seeds": [0]}
QUICK = {"hidden": [[100]], "k": [5, 20], "boost": [0.0, 1.0], "seeds": [0]}


def make_bnn(seed: int, hidden: list[int], n_in: int = 784, n_out: int = 10) -> Graph:
    """A fixed-seed binarized MLP: sign(x), then (+-1 linear, BN affine, sign) blocks, real final linear."""
    g = torch.Generator().manual_seed(seed)
    nodes, prev, width = [Node("s0", "sign", ("x",), (n_in,))], "s0", n_in
    for i, h in enumerate(hidden):
        w = (torch.randint(0, 2, (h, width), generator=g) * 2 - 1).float()
        nodes.append(Node(f"fc{i}", "linear", (prev,), (h,), {"weight": w, "bias": torch.randn(h, generator=g)}))
        mean = torch.randn(h, generator=g) * width ** 0.5 / 2
        scale = torch.rand(h, generator=g) * 1.5 + 0.5
        nodes.append(Node(f"bn{i}", "affine", (f"fc{i}",), (h,), {"scale": scale, "bias": -mean * scale}))
        nodes.append(Node(f"s{i + 1}", "sign", (f"bn{i}",), (h,)))
        prev, width = f"s{i + 1}", h
    w = torch.randn(n_out, width, generator=g) / width ** 0.5
    nodes.append(Node("out", "linear", (prev,), (n_out,), {"weight": w, "bias": torch.randn(n_out, generator=g) * 0.1}))
    return Graph("x", (n_in,), tuple(nodes), "out")


def make_instance(graph: Graph, seed: int, k: int) -> tuple[Region, int]:
    """A box around a random binary-ish image with k sign-free pixels, and the label at its centre."""
    rng = np.random.default_rng(1000 + seed)
    n = graph.n_inputs
    x0 = rng.choice([-1.0, 1.0], n) * rng.uniform(0.3, 1.0, n)
    lo, hi = np.clip(x0 - 0.05, -1, 1), np.clip(x0 + 0.05, -1, 1)
    free = rng.choice(n, k, replace=False)
    lo[free], hi[free] = -1.0, 1.0
    with torch.no_grad():
        label = int(graph.forward(torch.tensor(x0, dtype=torch.float32)[None]).argmax())
    polys = []
    for j in range(graph.n_outputs):
        if j != label:
            a = np.zeros((1, graph.n_outputs))
            a[0, label], a[0, j] = 1.0, -1.0
            polys.append(Polytope(a, [0.0]))
    return Region(lo, hi, tuple(polys)), label


def boosted(graph: Graph, region: Region, label: int, boost: float) -> Graph:
    """The network with ``boost * h0 / sqrt(width)`` added to the label's output weights."""
    if boost == 0:
        return graph
    x0 = torch.tensor((region.lower + region.upper) / 2, dtype=torch.float32)[None]
    with torch.no_grad():
        h0 = graph.forward(x0, keep=True)[graph.nodes[-2].name][0]
    out = graph.nodes[-1]
    w = out.params["weight"].clone()
    w[label] += boost * h0 / len(h0) ** 0.5
    head = Node(out.name, out.op, out.inputs, out.shape, {"weight": w, "bias": out.params["bias"]})
    return Graph(graph.input_name, graph.input_shape, graph.nodes[:-1] + (head,), graph.output_name)


def sampled_violation(graph: Graph, region: Region, n: int = 2000, seed: int = 0) -> bool:
    """Whether random points of the box (free pixels at -1, 0 or 1) reach an unsafe polytope."""
    rng = np.random.default_rng(seed)
    lo, hi = region.lower, region.upper
    pick = rng.integers(0, 3, (n, len(lo)))
    xs = np.where(pick == 0, lo, np.where(pick == 1, hi, np.clip(0.0, lo, hi)))
    with torch.no_grad():
        ys = graph.to(dtype=torch.float64).forward(torch.tensor(xs)).numpy()
    return any(p.satisfied_by(y) for y in ys for p in region.unsafe)


def run_one(graph: Graph, region: Region, timeout: float, solver: str, encoding: str, attack: int = 256) -> dict:
    """Verify one instance; the row for the JSON report."""
    t0 = time.monotonic()
    res = verify_bnn_any(graph, region, region.unsafe, timeout=timeout, solver=solver, encoding=encoding,
                         attack_samples=attack)
    row = {"status": res.status, "time_s": round(time.monotonic() - t0, 3), "reason": res.reason,
           "vars": res.stats.get("vars"), "clauses": res.stats.get("clauses"),
           "encode_s": round(res.stats.get("encode_s", 0.0), 3), "layers": res.stats.get("layers")}
    if res.status == "holds" and sampled_violation(graph, region):
        row["WRONG"] = "sampling found a violation of a 'holds' verdict"
        print("WRONG:", row)
    return row


def summarise(rows: list[dict]) -> dict:
    """Solved counts and times of a group of rows."""
    solved = [r for r in rows if r["status"] in ("holds", "violated")]
    times = [r["time_s"] for r in solved]
    return {"instances": len(rows), "solved": len(solved),
            "violated": sum(r["status"] == "violated" for r in rows),
            "holds": sum(r["status"] == "holds" for r in rows),
            "unknown": sum(r["status"] == "unknown" for r in rows),
            "wrong": sum("WRONG" in r for r in rows),
            "median_s": round(statistics.median(times), 3) if times else None,
            "max_s": round(max(times), 3) if times else None}


def run_grid(grid: dict, timeout: float, solver: str, encoding: str, attack: int) -> tuple[list[dict], dict]:
    """Every (hidden sizes, k, boost, seed) instance of the grid."""
    rows, summary = [], {}
    for hidden in grid["hidden"]:
        name = "784-" + "-".join(map(str, hidden)) + "-10"
        for k in grid["k"]:
            for boost in grid["boost"]:
                group = []
                for seed in grid["seeds"]:
                    graph = make_bnn(seed, hidden)
                    region, label = make_instance(graph, seed, k)
                    graph = boosted(graph, region, label, boost)
                    assert recognise_bnn(graph) is not None
                    row = {"net": name, "k": k, "boost": boost, "seed": seed, "label": label, "solver": solver,
                           "encoding": encoding, "attack_samples": attack,
                           **run_one(graph, region, timeout, solver, encoding, attack)}
                    print(json.dumps({key: row[key] for key in ("net", "k", "boost", "status", "time_s", "clauses")}),
                          flush=True)
                    group.append(row)
                rows += group
                summary[f"{name} k={k} boost={boost}"] = summarise(group)
    return rows, summary


def compare_encodings(timeout: float) -> list[dict]:
    """Clause counts and SAT-only times of the cardinality encodings and two solvers on fixed instances."""
    out = []
    for hidden, k in (([100], 20), ([200, 100], 20)):
        graph = make_bnn(0, hidden)
        region, label = make_instance(graph, 0, k)
        graph = boosted(graph, region, label, 1.0)
        for solver, encoding in (("cadical153", "auto"), ("cadical153", "seqcounter"), ("cadical153", "totalizer"),
                                 ("cadical153", "kmtotalizer"), ("cadical153", "cardnetwrk"), ("glucose4", "auto")):
            row = {"net": "784-" + "-".join(map(str, hidden)) + "-10", "k": k, "boost": 1.0, "solver": solver,
                   "encoding": encoding, **run_one(graph, region, timeout, solver, encoding, attack=0)}
            print(json.dumps({key: row[key] for key in ("net", "solver", "encoding", "status", "time_s", "clauses")}),
                  flush=True)
            out.append(row)
    return out


def main(argv=None) -> int:
    """Run the benchmark and write the JSON report; exit code 1 on any WRONG verdict."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one small configuration")
    ap.add_argument("--encodings", action="store_true", help="also compare encodings and solvers")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--solver", default="cadical153")
    ap.add_argument("--encoding", default="auto")
    ap.add_argument("--attack", type=int, default=256, help="sampled sign patterns before SAT (0: pure SAT)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows, summary = run_grid(QUICK if args.quick else GRID, args.timeout, args.solver, args.encoding, args.attack)
    report = {"benchmark": "bnn_sat", "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "timeout_s": args.timeout, "summary": summary, "instances": rows,
              "note": "VNN-COMP traffic_signs_recognition is not in the shared benchmarks; instances are generated"}
    if args.encodings:
        report["encodings"] = compare_encodings(args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(summary, indent=1))
    wrong = sum("WRONG" in r for r in rows + report.get("encodings", []))
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
