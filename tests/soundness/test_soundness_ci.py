"""The CI tier: its planted witnesses hold on onnxruntime, and the real verifier never answers wrongly on it."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from suite_helpers import REPO, subset_suite

from verifier.soundness import run as soundness_run
from verifier.soundness import runner


def _witness_text(data: dict) -> str:
    """A VNN-COMP sat block from a witness record."""
    pairs = [f"(X_{i} {v!r})" for i, v in enumerate(data["x"])] + [f"(Y_{j} {v!r})" for j, v in enumerate(data["y"])]
    return "sat\n(" + "\n".join(pairs) + ")\n"


def test_ci_tier_counts_and_balance(ci_suite, ci_rows):
    """About a dozen planted instances and a dozen clean ones, clean balanced sat / unsat."""
    kinds = [r.kind for r in ci_rows]
    assert kinds.count("unverifiable") >= 10
    clean = [r for r in ci_rows if r.kind == "clean"]
    assert len(clean) >= 10
    assert sum(r.truth == "sat" for r in clean) == sum(r.truth == "unsat" for r in clean)
    assert all(r.truth == "sat" for r in ci_rows if r.kind == "unverifiable")
    assert {r.arch for r in ci_rows} == {"mlp", "cnn"}
    assert {"relu", "sigmoid", "tanh"} <= {r.activation for r in ci_rows}
    assert min(r.n_inputs for r in ci_rows) == 2 and max(r.n_inputs for r in ci_rows) >= 64
    listed = [tuple(r[:2]) for r in csv.reader((ci_suite / "instances.csv").open(newline="")) if r]
    assert listed == [(r.onnx, r.vnnlib) for r in ci_rows]


def test_every_sat_instance_has_a_witness_valid_on_onnxruntime(ci_suite, ci_rows):
    """Planted (and MILP) witnesses: inside the box exactly, violating the property on onnxruntime."""
    sat = [r for r in ci_rows if r.truth == "sat"]
    assert sat and all(r.witness for r in sat)
    for row in sat:
        data = json.loads((ci_suite / row.witness).read_text())
        status, detail = runner.check_witness(ci_suite / row.onnx, ci_suite / row.vnnlib, _witness_text(data))
        assert status == "valid", f"{row.onnx}: {detail}"
        if row.kind == "unverifiable":
            assert data["margin"] < 0 and data["bump_height"] > data["margin_g"] > 0


def test_generation_is_deterministic(ci_suite, tmp_path):
    """The same seed gives byte-identical models, properties and witnesses (one planted recipe)."""
    from verifier.soundness.generate import AttackBudget, ci_recipes, plant, single_thread

    recipe = ci_recipes(0)[0][1]
    with single_thread():  # as generate() runs it
        row, _ = plant(recipe, tmp_path, 5.0, AttackBudget())
    assert row is not None
    for rel in (row.onnx, row.vnnlib, row.witness):
        assert (tmp_path / rel).read_bytes() == (ci_suite / rel).read_bytes()


def test_real_verifier_is_sound_on_ci_tier(ci_rows, baseline_answers):
    """No unsat on a sat instance, no sat on an unsat one, every sat witness onnxruntime-confirmed."""
    bad, words = [], [w for w, _ in baseline_answers]
    assert "error" not in words, [(r.onnx, res.reason) for r, (w, res) in zip(ci_rows, baseline_answers) if w == "error"]
    assert "sat" in words and "unsat" in words, words  # the run did decide something
    for row, (word, res) in zip(ci_rows, baseline_answers):
        verdict = soundness_run.judge(row, word, "")
        if verdict in ("unsound", "wrong"):
            bad.append(f"{row.onnx}: {word} ({res.method}: {res.reason})")
        if word == "sat":
            assert res.counterexample is not None and res.counterexample.margin <= 0
    assert not bad, bad


def test_cli_runner_end_to_end(ci_suite, tmp_path):
    """``run`` drives the real ``nnverify`` CLI (one process per instance) on three instances."""
    cli = REPO / ".venv" / "bin" / "nnverify"
    if not cli.exists():
        pytest.skip(f"{cli} is not installed")
    suite = subset_suite(ci_suite, tmp_path / "suite", ("p01_mlp_relu_5", "c04_mlp_relu_3_unsat", "c04_mlp_relu_3_sat"))
    summary = soundness_run.run(suite, cli=str(cli), timeout=8, out=tmp_path / "out", grace=5)
    assert summary["instances"] == 3 and summary["ok"], summary["bad"]
    answers = [d["answer"] for d in summary["instances_detail"]]
    assert all(a in runner.WORDS for a in answers), answers
    assert (tmp_path / "out" / "summary.md").read_text().startswith("# Soundness suite")
    clean = summary["per_kind"]["clean"]
    assert clean["instances"] == 2 and clean["truth"] == {"sat": 1, "unsat": 1}
    assert np.isclose(sum(v for k, v in clean["ratios"].items() if k in ("verified", "falsified", "unknown")), 1.0)
