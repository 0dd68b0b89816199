"""End-to-end CLI behaviour: verdicts on the bundled examples, and one-line errors for bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from verifier.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_cli(*args):
    """Run the console entry point in a subprocess (as a user would), return (code, out, err)."""
    p = subprocess.run([sys.executable, "-m", "verifier.cli", *map(str, args)], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_robust_example_holds(tmp_path):
    out = tmp_path / "res.txt"
    code, stdout, _ = run_cli("verify", EXAMPLES / "mlp.onnx", EXAMPLES / "robust.vnnlib", "--timeout", "30",
                              "--result-file", out)
    assert code == 0
    assert stdout.splitlines()[0] == "unsat"
    assert out.read_text().strip() == "unsat"


def test_fragile_example_violated_with_witness(tmp_path):
    out = tmp_path / "res.txt"
    code, stdout, _ = run_cli("verify", EXAMPLES / "mlp.onnx", EXAMPLES / "fragile.vnnlib", "--timeout", "30",
                              "--result-file", out, "--json")
    assert code == 0
    res = json.loads(stdout)
    assert res["verdict"] == "violated" and res["result"] == "sat"
    lines = out.read_text().splitlines()
    assert lines[0] == "sat"
    # 64 inputs + 10 outputs, one pair per line
    assert sum(1 for line in lines if "(X_" in line) == 64 and sum(1 for line in lines if "(Y_" in line) == 10
    # the witness re-executes on onnxruntime and violates the spec
    import onnxruntime as ort

    from verifier.spec.vnnlib import load_vnnlib

    values = {}
    for line in lines[1:]:
        name, val = line.strip().strip("()").split()
        values[name] = float(val)
    x = np.array([values[f"X_{i}"] for i in range(64)], dtype=np.float32)
    sess = ort.InferenceSession(str(EXAMPLES / "mlp.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.reshape(1, 1, 8, 8)})[0].reshape(-1)
    assert load_vnnlib(EXAMPLES / "fragile.vnnlib").violation(x, y) is not None


def _error(args):
    code, stdout, stderr = run_cli(*args)
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("nnverify: error:")]
    assert len(lines) == 1
    return lines[0]


def test_truncated_onnx_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes((EXAMPLES / "mlp.onnx").read_bytes()[:200])
    _error(["verify", bad, EXAMPLES / "robust.vnnlib", "--timeout", "10"])


def test_garbage_vnnlib_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(assert (<= X_0 ")
    _error(["verify", EXAMPLES / "mlp.onnx", bad, "--timeout", "10"])


def test_wrong_input_count_is_one_line_error(tmp_path):
    spec = tmp_path / "small.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= Y_0 0))\n")
    msg = _error(["verify", EXAMPLES / "mlp.onnx", spec, "--timeout", "10"])
    assert "inputs" in msg


def test_unsupported_op_lists_every_op(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    nodes = [helper.make_node("Atan", ["x"], ["a"], name="atan_1"), helper.make_node("Hardmax", ["a"], ["y"], name="hm_1")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "unsup.onnx"
    onnx.save(model, path)
    spec = tmp_path / "p.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                    "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n(assert (<= Y_0 0))\n")
    msg = _error(["verify", path, spec, "--timeout", "10"])
    assert "Atan" in msg and "Hardmax" in msg


def test_bounds_command_prints_every_polytope(capsys):
    assert main(["bounds", str(EXAMPLES / "mlp.onnx"), str(EXAMPLES / "robust.vnnlib"), "--method", "crown"]) == 0
    out = capsys.readouterr().out
    assert out.count("polytope") == 9 and "refuted" in out
