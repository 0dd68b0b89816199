"""benchmarks/gpu.py on a tiny MLP, CPU against CPU: files written, bounds sound, verdicts right."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks import gpu

# h = relu(x0, x1, x0 + x1), y0 = 10 + h0 + h1 + h2, y1 = x0 - x1; x in [-1, 1]^2
W1 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
W2 = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32)
B2 = np.array([10.0, 0.0], dtype=np.float32)
HOLDS = "(assert (<= Y_0 Y_1))"      # y0 >= 10 > 2 >= y1: unreachable
VIOLATED = "(assert (>= Y_0 13.0))"  # x = (1, 1) gives y0 = 14


def write_mlp(path: Path) -> None:
    """Gemm -> Relu -> Concat with the input -> Gemm, as an ONNX file."""
    w2 = np.concatenate([W2, np.zeros((2, 2), np.float32)], axis=1)
    w2[1, 3:] = [1.0, -1.0]   # y1 = x0 - x1 read from the input copy below
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["a"], transB=1),
             helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("Concat", ["h", "x"], ["hx"], axis=1),
             helper.make_node("Gemm", ["hx", "w2", "b2"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(B2, "b2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def write_vnnlib(path: Path, output_assert: str) -> None:
    """x in [-1, 1]^2 and one output assertion."""
    lines = [f"(declare-const X_{i} Real)" for i in range(2)] + [f"(declare-const Y_{i} Real)" for i in range(2)]
    lines += [f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))" for i in range(2)] + [output_assert]
    path.write_text("\n".join(lines) + "\n")


def make_data(root: Path) -> Path:
    """A packed-data folder with two verify entries: one that holds, one that is violated."""
    fam = root / "2021_tiny"
    (fam / "onnx").mkdir(parents=True)
    (fam / "vnnlib").mkdir()
    write_mlp(fam / "onnx" / "mlp.onnx")
    write_vnnlib(fam / "vnnlib" / "holds.vnnlib", HOLDS)
    write_vnnlib(fam / "vnnlib" / "violated.vnnlib", VIOLATED)
    entries = [{"name": f"tiny_{w}", "family": "2021_tiny", "onnx": "2021_tiny/onnx/mlp.onnx",
                "vnnlib": f"2021_tiny/vnnlib/{w}.vnnlib", "truth": t, "timeout": 5, "verify": True}
               for w, t in (("holds", "unsat"), ("violated", "sat"))]
    (root / "manifest.json").write_text(json.dumps({"entries": entries}))
    return root


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_run_on_cpu_writes_sound_bounds_and_right_verdicts(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    rc = gpu.main(["run", "--data", str(data), "--out", str(out), "--device", "cpu", "--verify-timeout", "5",
                   "--points", "300", "--corners", "20"])
    assert rc == 0
    bounds = read_rows(out / "gpu_bounds.csv")
    verifies = read_rows(out / "gpu_verify.csv")
    summary = json.loads((out / "gpu_summary.json").read_text())
    assert len(bounds) == 2 * 2 * 3   # entries x (base, test) x methods
    assert all(r["error"] == "" and r["violations"] == "0" and float(r["slack"]) >= 0 for r in bounds)
    assert all(float(r["rel_diff"]) == 0.0 for r in bounds if r["role"] == "test")
    holds_crown = [r for r in bounds if r["entry"] == "tiny_holds" and r["method"] == "crown"]
    assert all(float(r["lb_min"]) > 0 for r in holds_crown)   # C y = y0 - y1 >= 8
    assert {(r["entry"], r["role"], r["result"], r["check"]) for r in verifies} == {
        ("tiny_holds", "test", "unsat", "correct"), ("tiny_holds", "base", "unsat", "correct"),
        ("tiny_violated", "test", "sat", "correct"), ("tiny_violated", "base", "sat", "correct")}
    assert summary["counts"]["soundness_violations"] == 0 and summary["counts"]["WRONG"] == 0
    assert summary["counts"]["entries"] == 2


def test_sampled_points_stay_in_the_box_and_hit_corners():
    lower, upper = np.array([-1.0, 0.1, 2.0]), np.array([1.0, 0.3, 2.0])
    pts = gpu.sample_points(lower, upper, 200, 20, seed=1)
    assert pts.shape == (200, 3) and np.all(pts >= lower) and np.all(pts <= upper)
    assert np.all((pts[:20] == lower) | (pts[:20] == upper))


def test_pack_prefers_unsat_then_the_smallest_network(tmp_path):
    fam = tmp_path / "root" / "vnncomp2021" / "tiny"
    (fam / "onnx").mkdir(parents=True)
    (fam / "vnnlib").mkdir()
    write_mlp(fam / "onnx" / "a.onnx")
    (fam / "onnx" / "big.onnx").write_bytes((fam / "onnx" / "a.onnx").read_bytes() + b"\0" * 1000)
    for w, text in (("holds", HOLDS), ("violated", VIOLATED)):
        write_vnnlib(fam / "vnnlib" / f"{w}.vnnlib", text)
    (fam / "instances.csv").write_text("onnx/a.onnx,vnnlib/violated.vnnlib,5\nonnx/big.onnx,vnnlib/holds.vnnlib,5\n"
                                       "onnx/a.onnx,vnnlib/holds.vnnlib,5\n")
    (fam / "truth.csv").write_text("onnx,vnnlib,timeout,truth\nonnx/a.onnx,vnnlib/violated.vnnlib,5,sat\n"
                                   "onnx/big.onnx,vnnlib/holds.vnnlib,5,unsat\nonnx/a.onnx,vnnlib/holds.vnnlib,5,unsat\n")
    out = tmp_path / "packed"
    entries = gpu.pack(tmp_path / "root", out)
    assert [(e["name"], e["onnx"], e["vnnlib"], e["truth"]) for e in entries] == [
        ("2021_tiny", "2021_tiny/onnx/a.onnx", "2021_tiny/vnnlib/holds.vnnlib", "unsat")]
    assert (out / "2021_tiny" / "onnx" / "a.onnx").is_file() and (out / "manifest.json").is_file()


def test_worker_kills_an_overrunning_task_and_starts_afresh(tmp_path):
    data = make_data(tmp_path / "data")
    entry = json.loads((data / "manifest.json").read_text())["entries"][0]
    worker = gpu.Worker()
    try:
        got, why = worker.run("sampled_min", (entry, data, 2_000_000, 0), 0.05)
        assert got == [] and why.startswith("killed")
        got, why = worker.run("sampled_min", (entry, data, 100, 10), 60)
        assert why is None and got[0]["cmin"][0] >= 8
    finally:
        worker.close()
