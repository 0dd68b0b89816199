"""The runner's audit mode (``--results``): other tools' VNN-COMP result files scored against the truth."""
from __future__ import annotations

import json

from verifier.soundness import run as soundness_run


def _sat_block(x, y) -> str:
    """A VNN-COMP sat result block."""
    pairs = [f"(X_{i} {v!r})" for i, v in enumerate(x)] + [f"(Y_{j} {v!r})" for j, v in enumerate(y)]
    return "sat\n(" + "\n".join(pairs) + ")\n"


def _stem(path: str) -> str:
    """File name without folders and suffix."""
    return path.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def test_audit_scores_every_kind_of_answer(ci_suite, ci_rows, tmp_path):
    """unsat on planted -> unsound; sat on clean unsat -> wrong; bad witness -> invalid; missing -> unknown."""
    results = tmp_path / "other_tool"
    results.mkdir()
    planted = [r for r in ci_rows if r.kind == "unverifiable"]
    clean_unsat = [r for r in ci_rows if r.kind == "clean" and r.truth == "unsat"]
    clean_sat = [r for r in ci_rows if r.kind == "clean" and r.truth == "sat"]
    wit = json.loads((ci_suite / planted[1].witness).read_text())
    # naming 1: <onnx stem>__<vnnlib stem>.txt
    (results / f"{_stem(planted[0].onnx)}__{_stem(planted[0].vnnlib)}.txt").write_text("unsat\n")
    # naming 2: <vnnlib stem>.txt -- the planted witness itself: a valid falsification
    (results / f"{_stem(planted[1].vnnlib)}.txt").write_text(_sat_block(wit["x"], wit["y"]))
    # naming 3: the runner's NNNN_<onnx>__<vnnlib>.txt -- a witness outside the box
    idx = ci_rows.index(planted[2])
    bad_x = [v + 1.0 for v in json.loads((ci_suite / planted[1].witness).read_text())["x"][:planted[2].n_inputs]]
    bad_x += [0.0] * (planted[2].n_inputs - len(bad_x))
    (results / f"{idx:04d}_{_stem(planted[2].onnx)}__{_stem(planted[2].vnnlib)}.txt").write_text(_sat_block(bad_x, []))
    (results / f"{_stem(clean_unsat[0].vnnlib)}.counterexample").write_text(_sat_block([0.0] * clean_unsat[0].n_inputs, []))
    (results / f"{_stem(clean_unsat[1].vnnlib)}.txt").write_text("unsat\n")
    (results / f"{_stem(clean_sat[0].vnnlib)}.txt").write_text("timeout\n")
    rc = soundness_run.main([str(ci_suite), "--results", str(results), "--out", str(tmp_path / "out")])
    assert rc == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    by_onnx = {d["onnx"]: d for d in summary["instances_detail"]}
    assert by_onnx[planted[0].onnx]["verdict"] == "unsound"
    assert by_onnx[planted[1].onnx]["verdict"] == "falsified" and by_onnx[planted[1].onnx]["witness"] == "valid"
    assert by_onnx[planted[2].onnx]["verdict"] == "invalid-witness"
    assert by_onnx[clean_unsat[0].onnx]["verdict"] == "wrong"
    assert by_onnx[clean_unsat[1].onnx]["verdict"] == "verified"
    assert by_onnx[clean_sat[0].onnx]["verdict"] == "unknown"
    assert by_onnx[planted[3].onnx]["answer"] == "missing"
    assert summary["sound"] is False
    unv = summary["per_kind"]["unverifiable"]
    assert unv["counts"]["unsound"] == 1 and unv["counts"]["falsified"] == 1
    assert abs(unv["ratios"]["unsound"] - 1 / unv["instances"]) < 1e-3
    assert "UNSOUND" in (tmp_path / "out" / "summary.md").read_text()


def test_audit_of_honest_unknowns_passes(ci_suite, ci_rows, tmp_path):
    """A tool that only says unknown (or nothing) is sound: exit code 0."""
    results = tmp_path / "shy_tool"
    results.mkdir()
    for r in ci_rows[::2]:
        (results / f"{_stem(r.vnnlib)}.txt").write_text("unknown\n")
    summary = soundness_run.run(ci_suite, results=results, out=tmp_path / "out")
    assert summary["ok"] and summary["sound"]
    assert summary["per_kind"]["clean"]["ratios"]["unknown"] == 1.0


def test_judge_table():
    """The scoring rules in one place."""
    from verifier.soundness.generate import Row

    sat = Row("a.onnx", "a.vnnlib", 5.0, "sat", "unverifiable", "mlp", "relu", 2, "")
    unsat = Row("b.onnx", "b.vnnlib", 5.0, "unsat", "clean", "mlp", "relu", 2, "")
    assert soundness_run.judge(sat, "unsat", "") == "unsound"
    assert soundness_run.judge(sat, "sat", "valid") == "falsified"
    assert soundness_run.judge(sat, "sat", "invalid") == "invalid-witness"
    assert soundness_run.judge(unsat, "sat", "valid") == "wrong"
    assert soundness_run.judge(unsat, "unsat", "") == "verified"
    assert soundness_run.judge(unsat, "timeout", "") == "unknown"


def test_cli_runner_scores_a_lying_cli(ci_suite, ci_rows, tmp_path):
    """A fake CLI that always says unsat is caught: every planted instance is unsound, exit code 1."""
    import sys

    from suite_helpers import subset_suite

    fake = tmp_path / "liar"
    fake.write_text(f"#!{sys.executable}\n"
                    "import sys\n"
                    "args = sys.argv\n"
                    "open(args[args.index('--result-file') + 1], 'w').write('unsat\\n')\n"
                    "print('{\"result\": \"unsat\"}')\n")
    fake.chmod(0o755)
    suite = subset_suite(ci_suite, tmp_path / "suite", ("p00_mlp_relu_2", "c00_mlp_relu_2_unsat"))
    rc = soundness_run.main([str(suite), "--cli", str(fake), "--timeout", "5", "--out", str(tmp_path / "out")])
    assert rc == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [b["verdict"] for b in summary["bad"]] == ["unsound"]
    assert summary["per_kind"]["clean"]["counts"]["verified"] == 1
