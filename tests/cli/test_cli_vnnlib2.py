"""The VNN-LIB 2.0 verifier interface of the ``nnverify`` script (run as a subprocess)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from query_nets import box, mlp, query  # noqa: E402

from verifier.cli import _query_text
from verifier.result import Result, Verdict

NNVERIFY = [sys.executable, "-m", "verifier.cli"]
NET = "(declare-network f (declare-input X real [1,2]) (declare-output Y real [1,1]))"


def nnverify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(NNVERIFY + list(args), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("q2")
    model = mlp(d / "s.onnx", [(np.array([[1.0, 1.0]]), np.zeros(1))], 2)      # y = x0 + x1
    for name, c in (("holds", 2.5), ("violated", 1.5)):
        (d / f"{name}.vnnlib").write_text(query(NET, box("X", ["0,0", "0,1"], 0.0, 1.0), f"(>= Y[0,0] {c!r})"))
    return d, model


def test_unsat_and_certificate_check(files, tmp_path):
    d, model = files
    cert = tmp_path / "cert.json"
    out = nnverify("verify", str(d / "holds.vnnlib"), "--network", f"f={model}", "--timeout", "30",
                   "--certificate", str(cert))
    assert out.returncode == 0 and out.stdout == "unsat\n", out.stderr
    ok = nnverify("check", str(d / "holds.vnnlib"), str(cert), "--network", f"f={model}")
    assert ok.returncode == 0 and ok.stdout.startswith("ok"), ok.stdout
    other = nnverify("check", str(d / "violated.vnnlib"), str(cert), "--network", f"f={model}")
    assert other.returncode == 1 and "REJECTED" in other.stdout


def test_sat_prints_every_declared_variable_in_order(files, tmp_path):
    d, model = files
    record = tmp_path / "cex.json"
    out = nnverify("verify", str(d / "violated.vnnlib"), "--network", f"f={model}", "--timeout", "30",
                   "--counterexample", str(record))
    lines = out.stdout.splitlines()
    assert lines[0] == "sat" and [line.split("=")[0] for line in lines[1:]] == ["X[0,0]", "X[0,1]", "Y[0,0]"]
    x0, x1, y = (float(line.split("=")[1]) for line in lines[1:])
    assert 0 <= x0 <= 1 and 0 <= x1 <= 1 and y >= 1.5 and abs(y - (x0 + x1)) < 1e-6
    saved = json.loads(record.read_text())["query"]
    assert saved["version"] == "2.0" and list(saved["networks"]) == ["f"]
    assert saved["witness"] == dict(line.split("=") for line in lines[1:])


def test_model_and_query_positionals_bind_the_single_network(files):
    d, model = files
    out = nnverify("verify", model, str(d / "holds.vnnlib"), "--timeout", "30")
    assert out.stdout == "unsat\n", out.stderr


def test_bad_network_binding_is_a_clear_error(files):
    d, model = files
    out = nnverify("verify", str(d / "holds.vnnlib"), "--network", f"g={model}", "--timeout", "30")
    assert out.stdout == "unknown\n" and out.returncode == 2 and "does not declare" in out.stderr
    out = nnverify("verify", str(d / "holds.vnnlib"), "--network", "f", "--timeout", "30")
    assert out.returncode == 2 and "NAME=PATH" in out.stderr


def test_timeout_word_is_timed_out():
    assert _query_text(Result(Verdict.TIMEOUT), None) == "timed-out\n"
    assert _query_text(Result(Verdict.ERROR), None) == "unknown\n"


@pytest.mark.parametrize("option, expected", [
    ("--vnnlib-versions", ["1.0", "2.0"]),
    ("--onnx-element-types", ["real"]),
    ("--hidden-nodes", ["true"]),
    ("--multiple-networks", ["true"]),
])
def test_supports(option, expected):
    out = nnverify("supports", option)
    assert out.returncode == 0 and out.stdout.split() == expected


def test_supports_lists_the_loader_ops():
    ops = nnverify("supports", "--onnx-operators").stdout.split()
    assert {"Gemm", "Relu", "Conv", "MatMul"} <= set(ops) and ops == sorted(ops)


def test_global_name_and_version():
    assert nnverify("--name").stdout.strip() == "nnverify"
    assert nnverify("--version").stdout.strip()
