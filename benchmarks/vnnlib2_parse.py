"""VNN-LIB parsing cost: one ~10 MB property in 1.0 and 2.0 form, time and peak memory per parser.

The property: L_inf robustness (eps 0.02, clipped to [0, 1]) around N fixed-seed 784-pixel
"images" at once, each box with its own label: ``(or (and <box_i> (or (>= Y_j Y_label_i) ...)) ...)``,
so N regions of 9 unsafe polytopes each. The same decimal strings are written in both files
(2.0 needs plain decimals, so any float whose repr has an exponent is printed as its exact
decimal instead). A fixed-seed 784-32-10 ReLU MLP (``onnx.helper``) lets the 2.0 query compile.

Each measurement runs in a fresh subprocess: imports first, then ``ru_maxrss`` as a baseline,
then one parse; reported are its wall time and the peak-RSS increase over the baseline (RSS
high-water mark: memory freed and reused inside the parse is not counted twice). Parsers:

* ``v1``           ``verifier.spec.vnnlib.load_vnnlib`` (1.0 text -> Spec)
* ``v2_official``  ``vnnlib.parse_query_string`` alone (the PyPI package's typed AST)
* ``v2``           ``verifier.spec.vnnlib2.load_query`` (official parser + our exact DNF)
* ``v2_compile``   ``verifier.query.compile_files`` (all of ``v2`` + binding + compile to Spec)

After each ``v2_compile`` measurement the compiled Spec is compared with the 1.0 Spec: polytopes
exactly, box bounds up to the 2.0 compiler's outward rounding (one ulp) of decimals that are not
float64 values (the 1.0 parser takes the nearest float64).

    python -m benchmarks.vnnlib2_parse [--boxes 195] [--repeats 3] [--compile-repeats 1] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "vnnlib2-parse"
PARSERS = ("v1", "v2_official", "v2", "v2_compile")
N_IN, N_OUT, HIDDEN, EPS = 784, 10, 32, 0.02


# ------------------------------------------------------------------------------------ instance
def decimal_text(x: float) -> str:
    """A plain decimal (no exponent, with a point) that reads back as ``x``."""
    text = repr(float(x))
    if "e" in text or "E" in text:
        text = format(Decimal(float(x)), "f")
    if "." not in text:
        text += ".0"
    return "0.0" if Decimal(text) == 0 else text


def make_boxes(n: int, seed: int = 0) -> list[tuple[list[str], list[str], int]]:
    """N (lower strings, upper strings, label): eps-balls around k/255 pixel images, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        image = rng.integers(0, 256, N_IN) / 255.0
        lo, hi = np.clip(image - EPS, 0.0, 1.0), np.clip(image + EPS, 0.0, 1.0)
        boxes.append(([decimal_text(v) for v in lo], [decimal_text(v) for v in hi], int(rng.integers(N_OUT))))
    return boxes


def text_v1(boxes) -> str:
    """The property as VNN-LIB 1.0 (``X_i`` / ``Y_j``)."""
    parts = [f"(declare-const X_{i} Real)\n" for i in range(N_IN)]
    parts += [f"(declare-const Y_{j} Real)\n" for j in range(N_OUT)]
    parts.append("(assert (or\n")
    for lo, hi, label in boxes:
        bounds = " ".join(f"(<= X_{i} {h}) (>= X_{i} {l})" for i, (l, h) in enumerate(zip(lo, hi)))
        rows = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(N_OUT) if j != label)
        parts.append(f"  (and {bounds}\n    (or {rows}))\n")
    parts.append("))\n")
    return "".join(parts)


def text_v2(boxes) -> str:
    """The same property as VNN-LIB 2.0 (network ``net``, ``X[0,i]`` / ``Y[0,j]``)."""
    parts = ["(vnnlib-version <2.0>)\n",
             f"(declare-network net\n    (declare-input X real [1,{N_IN}])\n    (declare-output Y real [1,{N_OUT}])\n)\n",
             "(assert (or\n"]
    for lo, hi, label in boxes:
        bounds = " ".join(f"(<= X[0,{i}] {h}) (>= X[0,{i}] {l})" for i, (l, h) in enumerate(zip(lo, hi)))
        rows = " ".join(f"(and (>= Y[0,{j}] Y[0,{label}]))" for j in range(N_OUT) if j != label)
        parts.append(f"  (and {bounds}\n    (or {rows}))\n")
    parts.append("))\n")
    return "".join(parts)


def make_onnx(path: Path, seed: int = 0) -> None:
    """A fixed-seed 784-32-10 ReLU MLP, input [1,784], output [1,10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((N_IN, HIDDEN)) / np.sqrt(N_IN)).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, N_OUT)) / np.sqrt(HIDDEN)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(N_OUT, np.float32), "b2")]
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
             helper.make_node("Add", ["h3", "b2"], ["output"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, N_IN])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, N_OUT])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


# ------------------------------------------------------------------------------------ child
def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def _prepare(parser: str):
    """Import what ``parser`` needs (before the baseline) and return the call to time."""
    if parser == "v1":
        from verifier.spec.vnnlib import load_vnnlib

        return lambda files: load_vnnlib(files["v1"])
    if parser == "v2_official":
        import vnnlib

        return lambda files: {"networks": len(vnnlib.parse_query_string(Path(files["v2"]).read_text()).networks)}
    if parser == "v2":
        from verifier.spec.vnnlib2 import load_query

        def parse(files):
            q = load_query(files["v2"])
            return {"dnf_terms": len(q.terms), "atoms": sum(len(t) for t in q.terms)}
        return parse
    if parser == "v2_compile":
        import verifier.certificate  # noqa: F401  (imported lazily by the compiler)
        import verifier.model.onnx_file  # noqa: F401
        import verifier.model.onnx_loader  # noqa: F401
        import verifier.query.product  # noqa: F401
        from verifier.query import compile_files

        return lambda files: compile_files(files["v2"], {"net": files["onnx"]}).spec
    raise ValueError(f"unknown parser {parser!r} (known: {', '.join(PARSERS)})")


def child(parser: str, files: dict) -> dict:
    """One measurement in this (fresh) process."""
    call = _prepare(parser)
    base = _maxrss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    value = call(files)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    row = {"parser": parser, "time_s": seconds, "cpu_s": cpu, "peak_mb": _maxrss_mb() - base, "baseline_mb": base}
    if isinstance(value, dict):
        return {**row, **value}
    row.update(regions=len(value.regions), polytopes=sum(len(r.unsafe) for r in value.regions))
    if parser == "v2_compile":          # after the measurement: the 1.0 Spec, for the comparison
        from verifier.spec.vnnlib import load_vnnlib

        row["vs_v1"] = compare_specs(load_vnnlib(files["v1"]), value)
    return row


def compare_specs(s1, s2) -> dict:
    """How the compiled 2.0 Spec relates to the 1.0 Spec: polytopes exactly, box bounds up to outward rounding.

    The 1.0 parser reads a decimal as its nearest float64; the 2.0 compiler rounds it outward (the
    box never loses a point), so a bound whose decimal is not a float64 may sit one ulp outside.
    """
    out = {"regions_equal": len(s1.regions) == len(s2.regions), "polytopes_equal": True,
           "bounds": 0, "bounds_equal": 0, "bounds_one_ulp_outward": 0}
    for r1, r2 in zip(s1.regions, s2.regions):
        out["polytopes_equal"] &= len(r1.unsafe) == len(r2.unsafe) and all(
            np.array_equal(p.A, q.A) and np.array_equal(p.b, q.b) for p, q in zip(r1.unsafe, r2.unsafe))
        for a, b, side in ((r1.lower, r2.lower, -np.inf), (r1.upper, r2.upper, np.inf)):
            out["bounds"] += a.size
            out["bounds_equal"] += int(np.sum(a == b))
            out["bounds_one_ulp_outward"] += int(np.sum((a != b) & (b == np.nextafter(a, side))))
    out["polytopes_equal"] = bool(out["polytopes_equal"])
    out["same_up_to_outward_rounding"] = (out["regions_equal"] and out["polytopes_equal"]
                                          and out["bounds_equal"] + out["bounds_one_ulp_outward"] == out["bounds"])
    return out


# ------------------------------------------------------------------------------------ parent
def _run_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.vnnlib2_parse", *args], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(files: dict, repeats: int, compile_repeats: int) -> dict:
    """Every parser ``repeats`` times (``v2_compile``: ``compile_repeats``), each in a fresh process."""
    file_args = ["--v1", files["v1"], "--v2", files["v2"], "--onnx", files["onnx"]]
    rows = {}
    for parser in PARSERS:
        n = compile_repeats if parser == "v2_compile" else repeats
        runs = [_run_child(["--child", parser, *file_args]) for _ in range(n)]
        print(json.dumps(runs[-1]), flush=True)
        rows[parser] = {"time_s": statistics.median(r["time_s"] for r in runs),
                        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
                        "runs": runs}
    rows["vs_v1"] = rows["v2_compile"]["runs"][0]["vs_v1"]
    return rows


def _markdown(report: dict) -> str:
    sizes = report["instance"]
    lines = ["# VNN-LIB 1.0 vs 2.0 parsing: time and peak memory", "",
             f"`python -m benchmarks.vnnlib2_parse --boxes {sizes['boxes']} --repeats {report['repeats']} "
             f"--compile-repeats {report['compile_repeats']}` "
             f"({report['machine']['date']}, {report['machine']['platform']}, Python {report['machine']['python']}, "
             f"vnnlib {report['machine']['vnnlib']}).", "",
             f"One property in both versions: {sizes['boxes']} L_inf boxes (784 inputs, eps {EPS}) each with 9 "
             f"unsafe output polytopes (argmax robustness), i.e. {sizes['boxes']} regions / "
             f"{sizes['boxes'] * 9} DNF terms. 1.0 file {sizes['v1_mb']:.2f} MB, 2.0 file {sizes['v2_mb']:.2f} MB "
             "(2.0 indices `X[0,i]` are longer than `X_i`).", "",
             "Median of the runs; each run in a fresh process; wall and CPU time of the call alone; peak = "
             "RSS high-water mark minus the baseline after imports (the machine is shared, so wall time can "
             f"exceed CPU time). Whole benchmark: {report['wall_s']:.0f} s.", "",
             "| parser | what | runs | wall (s) | CPU (s) | peak RSS increase (MB) |",
             "|---|---|---:|---:|---:|---:|"]
    what = {"v1": "1.0 `load_vnnlib` -> Spec", "v2_official": "2.0 official parser only (`vnnlib.parse_query_string`)",
            "v2": "2.0 `load_query` (official parser + our DNF)", "v2_compile": "2.0 `compile_files` (-> Spec, with the ONNX file)"}
    for parser in PARSERS:
        row = report["results"][parser]
        lines.append(f"| `{parser}` | {what[parser]} | {len(row['runs'])} | {row['time_s']:.2f} | {row['cpu_s']:.2f} "
                     f"| {row['peak_mb']:.0f} |")
    res = report["results"]
    lines += ["", "CPU time relative to the 1.0 parser: " + ", ".join(
        f"`{p}` {res[p]['cpu_s'] / res['v1']['cpu_s']:.1f}x" for p in PARSERS[1:]) + "."]
    vs = res["vs_v1"]
    lines += ["", f"Compiled 2.0 Spec vs the 1.0 Spec: regions equal {vs['regions_equal']}, polytopes equal "
              f"{vs['polytopes_equal']}; of {vs['bounds']} box bounds {vs['bounds_equal']} are equal and "
              f"{vs['bounds_one_ulp_outward']} lie one ulp outside (the 1.0 parser takes a decimal's nearest "
              "float64, the 2.0 compiler rounds outward so the box never loses a point).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Generate the instance, measure every parser, write results.json and README.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=195, help="input boxes (regions); 195 gives a 10 MB 2.0 file")
    ap.add_argument("--repeats", type=int, default=3, help="fresh-process runs per parser (median reported)")
    ap.add_argument("--compile-repeats", type=int, default=1, help="runs of v2_compile (about 2 minutes each)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--child", choices=PARSERS, help=argparse.SUPPRESS)
    ap.add_argument("--v1", help=argparse.SUPPRESS)
    ap.add_argument("--v2", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    files = {"v1": args.v1, "v2": args.v2, "onnx": args.onnx}
    if args.child:
        print(json.dumps(child(args.child, files)))
        return 0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vnnlib2-parse-") as tmp:
        boxes = make_boxes(args.boxes)
        files = {"v1": str(Path(tmp) / "prop.vnnlib"), "v2": str(Path(tmp) / "prop.vnnlib2"),
                 "onnx": str(Path(tmp) / "mlp.onnx")}
        Path(files["v1"]).write_text(text_v1(boxes))
        Path(files["v2"]).write_text(text_v2(boxes))
        make_onnx(Path(files["onnx"]))
        sizes = {"boxes": args.boxes, "v1_mb": Path(files["v1"]).stat().st_size / 1e6,
                 "v2_mb": Path(files["v2"]).stat().st_size / 1e6}
        print(json.dumps(sizes), flush=True)
        results = measure(files, args.repeats, args.compile_repeats)
    from importlib.metadata import version

    report = {"instance": sizes, "repeats": args.repeats, "compile_repeats": args.compile_repeats,
              "results": results, "wall_s": time.monotonic() - t0,
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "vnnlib": version("vnnlib"), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    (args.out / "README.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
