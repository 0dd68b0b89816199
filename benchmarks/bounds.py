"""Bound-propagation benchmark: time and tightness of IBP, CROWN and alpha-CROWN.

Networks: a fixed-seed 784-256-256-10 ReLU MLP, a small CNN (conv 1->8 3x3 stride 2, relu,
linear), and (when the loader, the VNN-LIB parser and the files are there) the VNN-COMP 2021
mnistfc / oval21 networks on their first property. Synthetic boxes are L_inf balls of 0.03
around a random image in [0, 1] with C = e_label - e_j rows. Reports the median of repeats,
the torch thread count, the summed lower bound of the spec rows, and a profile of one CROWN run.

    python -m benchmarks.bounds [--repeats 5] [--alpha-iterations 20] [--threads N] [--out FILE]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import time

import numpy as np
import torch

from verifier.bounds import BoundEngine
from verifier.config import AlphaConfig
from verifier.model.graph import Graph, Node
from verifier.shared_data import benchmarks_root

VNNCOMP = str(benchmarks_root() / "vnncomp2021")
REAL = [("mnistfc_256x2", "mnistfc", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_0_0.03.vnnlib"),
        ("mnistfc_256x6", "mnistfc", "onnx/mnist-net_256x6.onnx", "vnnlib/prop_0_0.03.vnnlib"),
        ("oval21_base", "oval21", "onnx/cifar_base_kw.onnx",
         "vnnlib/cifar_base_kw-img4549-eps0.00392156862745098.vnnlib")]


def mlp_784() -> Graph:
    """784-256-256-10 ReLU MLP with fixed-seed weights."""
    gen = torch.Generator().manual_seed(0)
    sizes, nodes, prev = [784, 256, 256, 10], [], "x"
    for i in range(3):
        w = torch.randn(sizes[i + 1], sizes[i], generator=gen) * (2.0 / sizes[i]) ** 0.5
        nodes.append(Node(f"fc{i}", "linear", (prev,), (sizes[i + 1],), {"weight": w, "bias": torch.zeros(sizes[i + 1])}))
        prev = f"fc{i}"
        if i < 2:
            nodes.append(Node(f"relu{i}", "relu", (prev,), (sizes[i + 1],)))
            prev = f"relu{i}"
    return Graph("x", (784,), tuple(nodes), prev)


def small_cnn() -> Graph:
    """conv 1->8 3x3 stride 2 on 1x28x28, relu, flatten, linear to 10."""
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(8, 1, 3, 3, generator=gen) / 3.0
    conv = Node("conv", "conv", ("x",), (8, 13, 13), {"weight": w, "bias": torch.zeros(8)},
                {"stride": 2, "padding": 0, "dilation": 1, "groups": 1})
    fc_w = torch.randn(10, 8 * 13 * 13, generator=gen) * (2.0 / (8 * 13 * 13)) ** 0.5
    nodes = (conv, Node("relu", "relu", ("conv",), (8, 13, 13)), Node("flat", "reshape", ("relu",), (8 * 13 * 13,)),
             Node("fc", "linear", ("flat",), (10,), {"weight": fc_w, "bias": torch.zeros(10)}))
    return Graph("x", (1, 28, 28), nodes, "fc")


def ball_problem(graph: Graph, eps=0.03, seed=0):
    """L_inf ball around a random image in [0, 1]; C = e_label - e_j (j != label)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((1,) + tuple(graph.input_shape), generator=gen)
    label = int(graph.forward(x).argmax())
    C = torch.zeros(1, 9, 10)
    others = [j for j in range(10) if j != label]
    for r, j in enumerate(others):
        C[0, r, label], C[0, r, j] = 1.0, -1.0
    return graph, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1), C, torch.zeros(9)


def real_problem(folder, onnx_rel, vnn_rel):
    """A VNN-COMP network and its property: C = stacked unsafe-polytope rows, offsets b."""
    from verifier.model.onnx_loader import load_onnx
    from verifier.spec.vnnlib import load_vnnlib

    model = load_onnx(os.path.join(VNNCOMP, folder, onnx_rel))
    spec = load_vnnlib(os.path.join(VNNCOMP, folder, vnn_rel))
    region = spec.regions[0]
    A = np.concatenate([p.A for p in region.unsafe])
    b = np.concatenate([p.b for p in region.unsafe])
    lo = torch.tensor(region.lower, dtype=torch.float32).unsqueeze(0)
    hi = torch.tensor(region.upper, dtype=torch.float32).unsqueeze(0)
    return model.graph, lo, hi, torch.tensor(A, dtype=torch.float32).unsqueeze(0), torch.tensor(b)


def problems():
    """(name, problem) pairs; real ones only when their files and parsers are available."""
    out = [("mlp_784_256_256_10", ball_problem(mlp_784())), ("cnn_conv8_s2", ball_problem(small_cnn()))]
    for name, folder, onnx_rel, vnn_rel in REAL:
        try:
            out.append((name, real_problem(folder, onnx_rel, vnn_rel)))
        except (ImportError, OSError, ValueError) as exc:
            print(f"skipping {name}: {type(exc).__name__}: {exc}")
    return out


def time_method(engine, lo, hi, C, method, alpha, repeats):
    """Median seconds over repeats and the last result."""
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = engine.compute(lo, hi, C, method=method, alpha=alpha, want_upper=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), res


def profile_crown(engine, lo, hi, C, top=12) -> str:
    """cProfile of one CROWN run, top functions by internal time."""
    prof = cProfile.Profile()
    prof.enable()
    engine.compute(lo, hi, C, want_upper=False)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def run(repeats: int, alpha_iterations: int) -> dict:
    """Benchmark every problem; returns the JSON-able report."""
    alpha = AlphaConfig(iterations=alpha_iterations, early_stop=False)
    report = {"torch_threads": torch.get_num_threads(), "alpha_iterations": alpha_iterations, "problems": {}}
    print(f"torch threads: {torch.get_num_threads()}")
    for name, (graph, lo, hi, C, b) in problems():
        engine = BoundEngine(graph)
        engine.compute(lo, hi, C, method="alpha", alpha=AlphaConfig(iterations=2))  # warm-up (imports optim)
        entry = {}
        for method in ("ibp", "crown", "alpha"):
            reps = 1 if method == "alpha" else repeats
            sec, res = time_method(engine, lo, hi, C, method, alpha, reps)
            margin = res.lower[0].double() - b.double()
            unstable = sum(int(((l < 0) & (h > 0)).sum()) for l, h in res.intermediate.values())
            entry[method] = {"seconds": sec, "sum_margin": float(margin.sum()), "min_margin": float(margin.min()),
                             "unstable_neurons": unstable}
            print(f"{name:22s} {method:6s} {sec * 1000:9.1f} ms  min margin {float(margin.min()):12.4f}  "
                  f"unstable {unstable}")
        report["problems"][name] = entry
    graph, lo, hi, C, _ = ball_problem(mlp_784())
    report["crown_profile_mlp"] = profile_crown(BoundEngine(graph), lo, hi, C)
    print(report["crown_profile_mlp"])
    return report


def main(argv=None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--alpha-iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "bounds.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args.repeats, args.alpha_iterations)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
