"""Binarized CNNs at scale: a 64x64x3 sign-input CNN through ``verify`` (the SAT route) with a budget.

Usage (from the repository root)::

    python -m benchmarks.bnn_scale                  # writes benchmarks/results/bnn-scale/{results.json,README.md}
    python -m benchmarks.bnn_scale --quick          # a 16x16x3 network, 10 s budgets

Network (fixed seed, written with ``onnx.helper``): Sign(x) -> 3 x [Conv 3x3 pad 1 (+-1 weights,
bias) -> BatchNormalization -> Sign -> MaxPool 2x2] -> Flatten -> Gemm 1024 (+-1 weights) ->
BatchNormalization -> Sign -> Gemm 10 (real weights). Channels 16, 32, 64: 12288 inputs, 4096
values after the last pool, 4.2 M +-1 dense weights. Batch-norm statistics are set from the
pre-activation spread of random sign inputs, so neurons are balanced (random nets are rarely
robust; ``boost`` adds ``boost * h0 / sqrt(1024)`` to the label's output row, h0 the last hidden
signs at the centre: a stand-in for a trained margin).

Properties: an L-inf ball of radius eps around a random point x0 in [-1, 1]^n (clipped to
[-1, 1]); unsafe: any other class scoring at least the label of x0 (one polytope per class).
Only inputs within eps of 0 can change sign, so eps sets how many inputs are free. Each instance
runs ``verify`` in-process with the budget, measuring the wall time around the call: an overrun
is a wall time above the budget + 1 s (the CLI's watchdog would have fired).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent / "results" / "bnn-scale"
FULL = {"shape": (3, 64, 64), "channels": (16, 32, 64), "dense": 1024, "classes": 10}
QUICK = {"shape": (3, 16, 16), "channels": (4, 8, 8), "dense": 64, "classes": 10}
INSTANCES = [(0.002, 0.0), (0.01, 0.0), (0.05, 0.0), (0.002, 1.0), (0.01, 1.0), (0.05, 1.0)]


def _pm1(rng, shape) -> np.ndarray:
    """Random {-1, +1} float32 weights."""
    return (rng.integers(0, 2, shape) * 2 - 1).astype(np.float32)


def _bn(name: str, x: str, n: int, fan: int, rng, inits: list) -> onnx.NodeProto:
    """BatchNormalization over n channels with statistics matched to a +-1 sum of ``fan`` terms."""
    for suffix, v in (("g", rng.uniform(0.5, 1.5, n)), ("b", rng.normal(0, 0.1, n)),
                      ("m", rng.normal(0, np.sqrt(fan) / 4, n)), ("v", np.full(n, float(fan)))):
        inits.append(numpy_helper.from_array(v.astype(np.float32), f"{name}_{suffix}"))
    return helper.make_node("BatchNormalization", [x, f"{name}_g", f"{name}_b", f"{name}_m", f"{name}_v"],
                            [name], epsilon=1e-5)


def build_model(seed: int, shape=(3, 64, 64), channels=(16, 32, 64), dense: int = 1024, classes: int = 10,
                head: np.ndarray | None = None) -> onnx.ModelProto:
    """The sign-input binarized CNN as an ONNX model (``head``: replaces the final weight [classes, dense])."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], [helper.make_node("Sign", ["x"], ["s0"])]
    prev, c_in, side = "s0", shape[0], shape[1]
    for i, c in enumerate(channels):
        inits += [numpy_helper.from_array(_pm1(rng, (c, c_in, 3, 3)), f"w{i}"),
                  numpy_helper.from_array(rng.integers(-2, 3, c).astype(np.float32), f"cb{i}")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"cb{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  _bn(f"bn{i}", f"c{i}", c, 9 * c_in, rng, inits),
                  helper.make_node("Sign", [f"bn{i}"], [f"s{i + 1}"]),
                  helper.make_node("MaxPool", [f"s{i + 1}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2])]
        prev, c_in, side = f"p{i}", c, side // 2
    flat = c_in * side * side
    inits += [numpy_helper.from_array(_pm1(rng, (dense, flat)), "wd"),
              numpy_helper.from_array(rng.integers(-2, 3, dense).astype(np.float32), "bd")]
    nodes += [helper.make_node("Flatten", [prev], ["f"]),
              helper.make_node("Gemm", ["f", "wd", "bd"], ["d"], transB=1),
              _bn("bnd", "d", dense, flat, rng, inits),
              helper.make_node("Sign", ["bnd"], ["h"])]
    w_out = (rng.standard_normal((classes, dense)) / np.sqrt(dense)).astype(np.float32) if head is None else head
    inits += [numpy_helper.from_array(w_out.astype(np.float32), "wo"),
              numpy_helper.from_array((rng.standard_normal(classes) * 0.1).astype(np.float32), "bo")]
    nodes.append(helper.make_node("Gemm", ["h", "wo", "bo"], ["y"], transB=1))
    graph = helper.make_graph(nodes, "bnn_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, x: np.ndarray, names=("y", "h")) -> list[np.ndarray]:
    """onnxruntime outputs ``names`` of the model at one flat input (extra outputs exposed as needed)."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name in names:
        if name not in {o.name for o in m.graph.output}:
            m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    return [v.reshape(-1) for v in sess.run(list(names), {"x": x.astype(np.float32).reshape(shape)})]


def boosted(model: onnx.ModelProto, x0: np.ndarray, label: int, boost: float) -> onnx.ModelProto:
    """The model with ``boost * h0 / sqrt(dense)`` added to the label's output row (h0 at x0)."""
    if boost == 0:
        return model
    _, h0 = _run(model, x0)
    wo = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "wo").copy()
    wo[label] += boost * h0 / np.sqrt(len(h0))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, t in enumerate(out.graph.initializer):
        if t.name == "wo":
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(wo.astype(np.float32), "wo"))
    return out


def write_property(path: Path, x0: np.ndarray, eps: float, label: int, classes: int) -> None:
    """VNN-LIB: the eps-box around x0 (clipped to [-1, 1]); unsafe: some class j scores >= the label."""
    lo, hi = np.clip(x0 - eps, -1, 1), np.clip(x0 + eps, -1, 1)
    lines = [f"(declare-const X_{i} Real)" for i in range(len(x0))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(classes)]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (>= X_{i} {float(a)!r}))", f"(assert (<= X_{i} {float(b)!r}))"]
    ors = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(classes) if j != label)
    lines.append(f"(assert (or {ors}))")
    path.write_text("\n".join(lines) + "\n")


def run_instance(onnx_path: Path, spec_path: Path, timeout: float) -> dict:
    """``verify`` with the budget; verdict, route, times, the first counterexample's time, overrun."""
    from verifier.config import VerifyConfig
    from verifier.portfolio import verify

    t0 = time.monotonic()
    res = verify(str(onnx_path), str(spec_path), VerifyConfig(timeout=timeout))
    wall = time.monotonic() - t0
    return {"verdict": res.verdict.value, "route": res.route, "method": res.method, "reason": res.reason,
            "wall_s": round(wall, 3), "overrun_s": round(max(wall - timeout, 0.0), 3),
            "watchdog_would_fire": wall > timeout + 1.0,
            "time_to_counterexample_s": round(wall, 3) if res.verdict.value == "violated" else None,
            "timings": {k: round(v, 3) for k, v in res.timings.items()}, "log": res.log}


def write_readme(report: dict, path: Path) -> None:
    """A short README.md beside results.json: the network, one row per instance, the overrun check."""
    net, rows = report["network"], report["instances"]
    first = [r["time_to_counterexample_s"] for r in rows if r["time_to_counterexample_s"] is not None]
    lines = [
        "# Binarized CNN at scale (`python -m benchmarks.bnn_scale`)", "",
        f"Generated {report['generated']} on {report['machine']['platform']}, shared 2-core CPU, "
        f"budget {report['timeout_s']:g} s per property, `verify` in-process (route chosen automatically).", "",
        f"Network: Sign(x), x in R^{'x'.join(map(str, net['shape']))} -> 3 x [conv 3x3 (+-1) -> batch norm -> sign -> "
        f"maxpool 2x2] with {net['channels']} channels -> dense {net['dense']} (+-1) -> batch norm -> sign -> "
        f"linear {net['classes']}. Properties: eps-box around a random x0 in [-1, 1]^n, unsafe = another class "
        "scores >= the label at x0; boost 1 adds a margin for the label (see the script's docstring).", "",
        "| # | eps | boost | free inputs | verdict | wall s | method | reason |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reason = r["reason"].replace("|", "/")
        lines.append(f"| {r['instance']} | {r['eps']} | {r['boost']} | {r['free_inputs']} | {r['verdict']} | "
                     f"{r['wall_s']} | {r['method'] or '-'} | {reason[:160]} |")
    summ = report["summary"]
    lines += ["", f"Verdicts: {summ['verdicts']}. Time to the first counterexample: "
              f"{', '.join(f'{t:g} s' for t in first) or 'none found'}.",
              f"Budget overruns (wall > budget + 1 s, where the CLI watchdog would fire): {summ['overruns']}; "
              f"largest wall time past the budget: {summ['max_overrun_s']} s.", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    """Build the network, write the properties, run each with the budget, write results.json + README.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 16x16x3 network and 10 s budgets")
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--readme-only", action="store_true", help="rewrite README.md from an existing results.json")
    args = ap.parse_args(argv)
    if args.readme_only:
        write_readme(json.loads((args.out / "results.json").read_text()), args.out / "README.md")
        return 0
    cfg = QUICK if args.quick else FULL
    timeout = args.timeout or (10.0 if args.quick else 60.0)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "instances"
    work.mkdir(exist_ok=True)
    base = build_model(0, cfg["shape"], cfg["channels"], cfg["dense"], cfg["classes"])
    n = int(np.prod(cfg["shape"]))
    rows = []
    for k, (eps, boost) in enumerate(INSTANCES):
        rng = np.random.default_rng(100 + k)
        x0 = rng.uniform(-1, 1, n)
        label = int(np.argmax(_run(base, x0)[0]))
        model = boosted(base, x0, label, boost)
        onnx_path, spec_path = work / f"net_{k}.onnx", work / f"prop_{k}.vnnlib"
        onnx.save(model, str(onnx_path))
        write_property(spec_path, x0, eps, label, cfg["classes"])
        free = int(np.sum(np.abs(x0) <= eps))
        row = {"instance": k, "eps": eps, "boost": boost, "label": label, "free_inputs": free,
               **run_instance(onnx_path, spec_path, timeout)}
        print(json.dumps({key: row[key] for key in ("instance", "eps", "boost", "free_inputs", "verdict", "wall_s",
                                                     "reason")}), flush=True)
        rows.append(row)
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    report = {"benchmark": "bnn_scale", "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "network": {**cfg, "shape": list(cfg["shape"]), "channels": list(cfg["channels"])},
              "timeout_s": timeout, "instances": rows,
              "summary": {"verdicts": {v: sum(r["verdict"] == v for r in rows) for v in sorted({r["verdict"] for r in rows})},
                          "overruns": sum(r["watchdog_would_fire"] for r in rows),
                          "max_overrun_s": max(r["overrun_s"] for r in rows)}}
    (args.out / "results.json").write_text(json.dumps(report, indent=1, default=float))
    write_readme(report, args.out / "README.md")
    print(json.dumps(report["summary"], indent=1))
    return 1 if report["summary"]["overruns"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
