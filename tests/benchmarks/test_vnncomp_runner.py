"""The VNN-COMP benchmark runner and competition scripts, driven by a fake ``nnverify`` CLI."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from verifier.shared_data import absent_reason, benchmarks_root

REPO = Path(__file__).resolve().parents[2]


def _load_runner():
    """Import benchmarks/vnncomp.py by path (``benchmarks`` is not an installed package)."""
    spec = importlib.util.spec_from_file_location("nnverify_bench_vnncomp", REPO / "benchmarks" / "vnncomp.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


vnncomp = _load_runner()

FAKE_CLI = r'''#!{python}
"""Fake nnverify: behaves as plan.json (beside it) says for the property's stem."""
import json, subprocess, sys, time
from pathlib import Path

here = Path(__file__).resolve().parent
args = sys.argv[1:]
onnx, vnnlib = args[1], args[2]
result_file = args[args.index("--result-file") + 1]
timeout = float(args[args.index("--timeout") + 1])
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps({{"argv": args, "timeout": timeout}}) + "\n")
step = json.loads((here / "plan.json").read_text()).get(Path(vnnlib).stem, {{"result": "unknown"}})
if step.get("child"):
    child = subprocess.Popen(["sleep", "60"])
    (here / "child.pid").write_text(str(child.pid))
time.sleep(step.get("sleep", 0))
word = step.get("result", "unknown")
x = step.get("witness", [1.0, 1.0])
if step.get("file", True):
    pairs = [f"(X_{{i}} {{v!r}})" for i, v in enumerate(x)] + [f"(Y_0 {{sum(x)!r}})"]
    text = word + "\n" + ("(" + "\n".join(pairs) + ")\n" if word == "sat" else "")
    Path(result_file).write_text(text)
if step.get("json", True):
    verdict = {{"sat": "violated", "unsat": "holds"}}.get(word, word)
    print(json.dumps({{"verdict": verdict, "result": step.get("json_result", word), "time": 0.25,
                      "method": step.get("method", "fake"), "reason": step.get("reason", "")}}))
sys.exit(step.get("rc", 0))
'''


def make_cli(tmp_path: Path, plan: dict) -> Path:
    """Write the fake CLI and its plan; return the executable's path."""
    cli_dir = tmp_path / "cli"
    cli_dir.mkdir(exist_ok=True)
    (cli_dir / "plan.json").write_text(json.dumps(plan))
    cli = cli_dir / "nnverify"
    cli.write_text(FAKE_CLI.format(python=sys.executable))
    cli.chmod(0o755)
    return cli


SUM_SPEC = """; y = x0 + x1 on [0, 1]^2; unsafe when y >= 1.5
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(assert (>= X_0 0.0))
(assert (<= X_0 1.0))
(assert (>= X_1 0.0))
(assert (<= X_1 1.0))
(assert (>= Y_0 1.5))
"""


def write_sum_net(path: Path) -> None:
    """A real ONNX model y = x0 + x1 (input [1, 2], output [1, 1])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    weight = numpy_helper.from_array(np.ones((2, 1), dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "sum",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_family(root: Path, name: str, rows: list[tuple], header: bool = False) -> Path:
    """A benchmark folder: rows of (property stem, timeout, truth, abcrown word, abcrown seconds).

    Every row uses the same real network (y = x0 + x1) and property (y >= 1.5 on [0, 1]^2).
    """
    folder = root / name
    (folder / "onnx").mkdir(parents=True)
    (folder / "vnnlib").mkdir()
    write_sum_net(folder / "onnx" / "net.onnx")
    lines = ["onnx,vnnlib,timeout_s"] if header else []
    truth = ["onnx,vnnlib,timeout,truth,votes_sat,votes_unsat,abcrown_2021,abcrown_2021_s,nnenum_2021,nnenum_2021_s"]
    for stem, timeout, word, ref, ref_s in rows:
        (folder / "vnnlib" / f"{stem}.vnnlib").write_text(SUM_SPEC)
        lines.append(f"onnx/net.onnx,vnnlib/{stem}.vnnlib,{timeout}")
        truth.append(f"onnx/net.onnx,vnnlib/{stem}.vnnlib,{timeout},{word},0,0,{ref},{ref_s},,")
    (folder / "instances.csv").write_text("\n".join(lines) + "\n")
    (folder / "truth.csv").write_text("\n".join(truth) + "\n")
    return folder


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV with a header."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


ROWS = [("p_unsat", 60, "unsat", "unsat", 2.0), ("p_sat", 60, "sat", "sat", 1.0),
        ("p_unknown", 60, "unsat", "unknown", 60.0), ("p_err", 60, "unknown", "", "")]
PLAN = {"p_unsat": {"result": "unsat", "method": "crown"}, "p_sat": {"result": "sat", "method": "attack"},
        "p_unknown": {"result": "unknown", "reason": "bounds too loose"},
        "p_err": {"result": "error", "file": False, "json": False, "rc": 3}}


def test_header_is_detected(tmp_path):
    """instances.csv with and without a header row read the same."""
    plain = vnncomp.read_instances(make_family(tmp_path, "a", ROWS))
    headed = vnncomp.read_instances(make_family(tmp_path, "b", ROWS, header=True))
    assert [(i.onnx, i.vnnlib, i.timeout) for i in plain] == [(i.onnx, i.vnnlib, i.timeout) for i in headed]
    assert len(plain) == 4 and plain[0].vnnlib == "vnnlib/p_unsat.vnnlib" and plain[0].timeout == 60.0


def test_malformed_instances_row_is_an_error(tmp_path):
    """A row without a numeric timeout (after the header) fails loudly."""
    folder = make_family(tmp_path, "bad", ROWS[:1])
    (folder / "instances.csv").write_text("onnx/net.onnx,vnnlib/p_unsat.vnnlib,60\nonnx/net.onnx,oops\n")
    with pytest.raises(ValueError, match="row 2"):
        vnncomp.read_instances(folder)


def test_family_run_writes_results_summary_and_plot(tmp_path):
    """results.csv, per-instance result files, summary.json counts/references/machine, cactus PNG."""
    folder = make_family(tmp_path, "fam", ROWS)
    cli = make_cli(tmp_path, PLAN)
    out = tmp_path / "out"
    assert vnncomp.main([str(folder), "--cli", str(cli), "--out", str(out), "--grace", "2"]) == 0
    rows = {r["vnnlib"]: r for r in read_csv(out / "results.csv")}
    assert rows["vnnlib/p_unsat.vnnlib"]["result"] == "unsat"
    assert rows["vnnlib/p_unsat.vnnlib"]["check"] == "correct"
    assert rows["vnnlib/p_unsat.vnnlib"]["method"] == "crown"
    assert float(rows["vnnlib/p_unsat.vnnlib"]["tool_time_s"]) == 0.25
    assert rows["vnnlib/p_sat.vnnlib"]["check"] == "correct"
    assert rows["vnnlib/p_sat.vnnlib"]["witness"] == "valid"
    assert rows["vnnlib/p_unknown.vnnlib"]["reason"] == "bounds too loose"
    assert rows["vnnlib/p_err.vnnlib"]["result"] == "error" and "exit 3" in rows["vnnlib/p_err.vnnlib"]["reason"]
    sat_file = out / "results" / f"{rows['vnnlib/p_sat.vnnlib']['id']}.txt"
    assert sat_file.read_text().startswith("sat\n") and "X_0" in sat_file.read_text()
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]
    assert (counts["solved"], counts["sat"], counts["unsat"], counts["unknown"], counts["error"]) == (2, 1, 1, 1, 1)
    assert counts["WRONG"] == 0 and counts["timeout"] == 0
    assert summary["reference"]["abcrown_2021"]["solved"] == 2
    assert summary["reference"]["abcrown_2021"]["solved_total_s"] == 3.0
    assert summary["reference"]["nnenum_2021"]["solved"] == 0
    for key in ("platform", "cpu_count", "torch_threads", "git_commit", "date"):
        assert key in summary["machine"]
    assert (out / "cactus.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wrong_answer_is_flagged_and_exit_code_is_1(tmp_path, capsys):
    """sat where the truth is unsat -> WRONG row, loud message, exit code 1."""
    folder = make_family(tmp_path, "fam", ROWS[:2])
    cli = make_cli(tmp_path, {"p_unsat": {"result": "sat"}, "p_sat": {"result": "sat"}})
    out = tmp_path / "out"
    assert vnncomp.main([str(folder), "--cli", str(cli), "--out", str(out)]) == 1
    rows = {r["vnnlib"]: r for r in read_csv(out / "results.csv")}
    assert rows["vnnlib/p_unsat.vnnlib"]["check"] == "WRONG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["WRONG"] == 1 and summary["counts"]["solved"] == 1
    assert summary["wrong"] == [rows["vnnlib/p_unsat.vnnlib"]["id"]]
    assert "WRONG ANSWER" in capsys.readouterr().err


def test_sat_witnesses_are_rerun_on_onnxruntime(tmp_path, capsys):
    """A sat whose witness is outside the box or not unsafe on onnxruntime is WRONG, even without truth."""
    rows = [("p_good", 60, "unknown", "", ""), ("p_low", 60, "unknown", "", ""),
            ("p_out", 60, "unknown", "", ""), ("p_short", 60, "unknown", "", "")]
    folder = make_family(tmp_path, "fam", rows)
    cli = make_cli(tmp_path, {"p_good": {"result": "sat", "witness": [0.75, 1.0]},
                              "p_low": {"result": "sat", "witness": [0.1, 0.1]},
                              "p_out": {"result": "sat", "witness": [2.0, 0.0]},
                              "p_short": {"result": "sat", "witness": [1.0]}})
    out = tmp_path / "out"
    assert vnncomp.main([str(folder), "--cli", str(cli), "--out", str(out)]) == 1
    got = {Path(r["vnnlib"]).stem: r for r in read_csv(out / "results.csv")}
    assert (got["p_good"]["witness"], got["p_good"]["check"]) == ("valid", "unconfirmed")
    for stem, why in (("p_low", "violates no unsafe polytope"), ("p_out", "outside every input box"),
                      ("p_short", "1 inputs")):
        assert (got[stem]["witness"], got[stem]["check"]) == ("invalid", "WRONG")
        assert why in got[stem]["reason"]
    assert "invalid witness" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["witness"] == {"valid": 1, "invalid": 3, "unchecked": 0}
    assert summary["counts"]["solved"] == 1
    vnncomp.main([str(folder), "--cli", str(cli), "--out", str(tmp_path / "off"), "--no-witness-check"])
    assert {r["witness"] for r in read_csv(tmp_path / "off" / "results.csv")} == {""}


def test_witness_parsing():
    """(X_i v)/(Y_j v) pairs in any layout; gaps in the numbering or no inputs are errors."""
    assert vnncomp.parse_witness("sat\n((X_1 2.5) (X_0 -1e-3)\n (Y_0 4))") == ([-1e-3, 2.5], [4.0])
    for bad in ("sat\n((X_0 1) (X_2 3))", "sat\n((Y_0 1))", "sat\n"):
        with pytest.raises(ValueError):
            vnncomp.parse_witness(bad)


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_overrunning_cli_and_its_children_are_killed(tmp_path):
    """A CLI that sleeps past timeout + grace is killed with its process group -> timeout."""
    folder = make_family(tmp_path, "fam", [("p_slow", 1, "unsat", "unsat", 1.0)])
    cli = make_cli(tmp_path, {"p_slow": {"result": "unsat", "sleep": 30, "child": True}})
    config = vnncomp.RunnerConfig(cli=str(cli), grace=0.5)
    start = time.monotonic()
    summary = vnncomp.run_family(folder, config, tmp_path / "out")
    assert time.monotonic() - start < 15
    row = read_csv(tmp_path / "out" / "results.csv")[0]
    assert row["result"] == "timeout" and "killed" in row["reason"]
    assert 1.0 <= float(row["time_s"]) < 5.0
    assert summary["counts"]["timeout"] == 1 and summary["counts"]["solved"] == 0
    child = int((tmp_path / "cli" / "child.pid").read_text())
    deadline = time.monotonic() + 3
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_timeout_scale_cap_filter_and_limit(tmp_path):
    """--timeout-scale/--max-timeout set the --timeout passed; --filter/--limit pick instances."""
    rows = [("p_a", 100, "unsat", "", ""), ("p_b", 10, "unsat", "", ""), ("q_c", 10, "unsat", "", "")]
    folder = make_family(tmp_path, "fam", rows)
    cli = make_cli(tmp_path, {})
    vnncomp.main([str(folder), "--cli", str(cli), "--out", str(tmp_path / "out"), "--timeout-scale", "0.5",
                  "--max-timeout", "20", "--filter", r"p_\w", "--limit", "2"])
    calls = [json.loads(line) for line in (tmp_path / "cli" / "calls.jsonl").read_text().splitlines()]
    assert [Path(c["argv"][2]).stem for c in calls] == ["p_a", "p_b"]
    assert [c["timeout"] for c in calls] == [20.0, 5.0]
    assert calls[0]["argv"][0] == "verify" and "--json" in calls[0]["argv"]


def test_json_fallback_mismatch_and_missing_cli(tmp_path):
    """No result file -> word from JSON; file/JSON disagreement noted; absent CLI -> error."""
    folder = make_family(tmp_path, "fam", ROWS[:2])
    plan = {"p_unsat": {"result": "unsat", "file": False}, "p_sat": {"result": "sat", "json_result": "unknown"}}
    cli = make_cli(tmp_path, plan)
    vnncomp.run_family(folder, vnncomp.RunnerConfig(cli=str(cli)), tmp_path / "out")
    rows = {r["vnnlib"]: r for r in read_csv(tmp_path / "out" / "results.csv")}
    assert rows["vnnlib/p_unsat.vnnlib"]["result"] == "unsat"
    assert "no result file" in rows["vnnlib/p_unsat.vnnlib"]["reason"]
    assert rows["vnnlib/p_sat.vnnlib"]["result"] == "sat" and "MISMATCH" in rows["vnnlib/p_sat.vnnlib"]["reason"]
    missing = vnncomp.RunnerConfig(cli=str(tmp_path / "no-such-cli"))
    summary = vnncomp.run_family(folder, missing, tmp_path / "out2")
    assert summary["counts"]["error"] == 2


def test_compare_two_runs(tmp_path, capsys):
    """--compare lists newly solved / lost / flipped instances; a flip gives exit code 1."""
    folder = make_family(tmp_path, "fam", ROWS[:3])
    cli = make_cli(tmp_path, {"p_unsat": {"result": "unsat"}, "p_sat": {"result": "unknown"},
                              "p_unknown": {"result": "unsat"}})
    old = tmp_path / "old"
    vnncomp.main([str(folder), "--cli", str(cli), "--out", str(old)])
    make_cli(tmp_path, {"p_unsat": {"result": "unknown"}, "p_sat": {"result": "sat"}, "p_unknown": {"result": "sat"}})
    new = tmp_path / "new"
    code = vnncomp.main([str(folder), "--cli", str(cli), "--out", str(new), "--compare", str(old / "results.csv")])
    assert code == 1   # p_unknown is WRONG (sat vs truth unsat) and flipped
    diff = vnncomp.compare(vnncomp.read_results_csv(old / "results.csv"),
                           vnncomp.read_results_csv(new / "results.csv"))
    assert [i.split("_", 1)[1] for i in diff["newly_solved"]] == ["net__p_sat"]
    assert sorted(i.split("_", 1)[1] for i in diff["lost"]) == ["net__p_unknown", "net__p_unsat"]
    assert len(diff["flipped"]) == 1 and "unsat -> sat" in diff["flipped"][0]
    assert "ANSWER FLIPS" in (new / "compare.md").read_text()
    assert vnncomp.main([str(new / "results.csv"), "--compare", str(old / "results.csv")]) == 1


def test_all_families_writes_combined_table(tmp_path):
    """--all-families runs each folder holding instances.csv and writes one markdown table."""
    root = tmp_path / "root"
    make_family(root, "alpha", ROWS[:1])
    make_family(root, "beta", ROWS[1:2])
    (root / "not_a_family").mkdir()
    cli = make_cli(tmp_path, PLAN)
    out = tmp_path / "out"
    assert vnncomp.main(["--all-families", str(root), "--cli", str(cli), "--out", str(out)]) == 0
    table = (out / "summary.md").read_text()
    assert "| alpha | 1 | 1 |" in table and "| beta | 1 | 1 |" in table and "**total** | 2 | 2 |" in table
    assert (out / "alpha" / "results.csv").is_file() and (out / "beta" / "cactus.png").is_file()
    assert len(json.loads((out / "summary.json").read_text())) == 2


def _script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one of the vnncomp/ scripts."""
    return subprocess.run(["bash", str(REPO / "vnncomp" / name), *args], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **(env or {})})


def test_competition_scripts(tmp_path):
    """Version check, prepare's file check, run_instance's CLI call and its 'error' fallback."""
    folder = make_family(tmp_path, "fam", ROWS[:2])
    onnx, vnnlib = str(folder / "onnx" / "net.onnx"), str(folder / "vnnlib" / "p_sat.vnnlib")
    for name in ("install_tool.sh", "prepare_instance.sh", "run_instance.sh"):
        assert _script(name, "v2").returncode == 1
    cli = make_cli(tmp_path, {"p_sat": {"result": "sat"}, "p_unsat": {"result": "error", "file": False, "rc": 2}})
    env = {"NNVERIFY_CLI": str(cli)}
    assert _script("prepare_instance.sh", "v1", "fam", onnx, vnnlib, env=env).returncode == 0
    assert _script("prepare_instance.sh", "v1", "fam", onnx, vnnlib + ".missing", env=env).returncode != 0
    result = tmp_path / "res.txt"
    assert _script("run_instance.sh", "v1", "fam", onnx, vnnlib, str(result), "42", env=env).returncode == 0
    assert result.read_text().splitlines()[0] == "sat"
    call = json.loads((tmp_path / "cli" / "calls.jsonl").read_text().splitlines()[-1])
    assert call["argv"] == ["verify", onnx, vnnlib, "--timeout", "42", "--result-file", str(result)]
    other = str(folder / "vnnlib" / "p_unsat.vnnlib")
    _script("run_instance.sh", "v1", "fam", onnx, other, str(result), "42", env=env)
    assert result.read_text().strip() == "error"


TEST_FAMILY = benchmarks_root() / "vnncomp2021" / "test"
# The counterexample nnverify reported for test_sat.onnx / test_prop.vnnlib (float32 point in the box).
TEST_SAT_X = [-0.29855284094810486, -0.009549296461045742, 0.4933803379535675, 0.5, 0.30000001192092896]


@pytest.mark.skipif(not TEST_FAMILY.is_dir(), reason=absent_reason(TEST_FAMILY))
def test_real_family_files_and_witness_check():
    """VNN-COMP 2021 'test': header-less instances.csv joins truth.csv; real witnesses check out."""
    instances = vnncomp.read_instances(TEST_FAMILY)
    truth = vnncomp.read_truth(TEST_FAMILY / "truth.csv")
    assert len(instances) == 5 and all(i.key in truth for i in instances)
    assert truth[instances[3].key].truth == "sat" and "abcrown_2021" in truth[instances[3].key].references
    onnx_sat, onnx_unsat = TEST_FAMILY / "onnx" / "test_sat.onnx", TEST_FAMILY / "onnx" / "test_unsat.onnx"
    prop = TEST_FAMILY / "vnnlib" / "test_prop.vnnlib"

    def block(x):
        """A sat result block with inputs only."""
        return "sat\n(" + "\n".join(f"(X_{i} {v!r})" for i, v in enumerate(x)) + ")\n"

    assert vnncomp.check_witness(onnx_sat, prop, block(TEST_SAT_X))[0] == "valid"
    outside = TEST_SAT_X[:3] + [0.6, TEST_SAT_X[4]]
    assert vnncomp.check_witness(onnx_sat, prop, block(outside))[0] == "invalid"
    status, detail = vnncomp.check_witness(onnx_unsat, prop, block(TEST_SAT_X))
    assert status == "invalid" and "violates no unsafe polytope" in detail
    # x0 on the box edge, which float32 cannot represent: the network sees the rounding (outside)
    edge = [-0.29855281193475053] + TEST_SAT_X[1:]
    assert float(np.float32(edge[0])) > edge[0]
    status, detail = vnncomp.check_witness(onnx_sat, prop, block(edge))
    assert status == "valid" and detail.startswith("input rounded"), detail
