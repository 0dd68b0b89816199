"""End to end on digits: audits of true, inflated and borderline claims, evidence re-checked and tampered."""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter

import numpy as np
import pytest

from audit_helpers import mlp_claim, write_claim
from verifier.audit.check import audit_check
from verifier.audit.claim import load_claim
from verifier.audit.run import run_audit
from verifier.cli import main as cli


def _counts(report: dict, eps: float) -> Counter:
    """Per-sample verdicts at ``eps``."""
    return Counter(r["verdict"] for r in report["samples"] if r["eps"] == eps)


def test_report_numbers_equal_the_per_sample_verdicts(mlp_audit):
    """n, clean, certified, falsified, unknown and the interval are the per-sample verdicts counted."""
    report = mlp_audit["report"]
    (e,) = report["per_eps"]
    c = _counts(report, e["eps"])
    assert e["n"] == sum(c.values()) == mlp_audit["claim"].n_samples
    assert e["clean"] == e["n"] - c["misclassified"]
    assert (e["certified"], e["falsified"]) == (c["holds"], c["violated"])
    assert e["unknown"] == c["unknown"] + c["timeout"] + c["error"]
    assert e["interval"] == [c["holds"] / e["n"], (e["clean"] - c["violated"]) / e["n"]]
    assert c["holds"] > 0 and c["violated"] > 0, c   # the model is neither hopeless nor perfectly robust
    on_disk = json.loads((mlp_audit["out"] / "report.json").read_text())
    assert on_disk["per_eps"] == report["per_eps"] and on_disk["samples"] == report["samples"]


def test_evidence_kept_for_every_decided_sample(mlp_audit):
    """A certificate file per holds (or an exact-proof note), a counterexample file per violated."""
    out = mlp_audit["out"]
    for row in mlp_audit["report"]["samples"]:
        if row["verdict"] == "misclassified":
            assert row["spec"] is None and row["seconds"] is None
            continue
        assert (out / row["spec"]).is_file()
        if row["verdict"] == "violated":
            assert (out / row["counterexample"]).is_file()
        if row["verdict"] == "holds" and row["certificate"]:
            assert (out / row["certificate"]).is_file()
    assert (out / "evidence" / "model.onnx").is_file() and (out / "report.html").is_file()


def test_progress_events(mlp_audit):
    """One event per item, the last with every item done and the counts summing to the total."""
    events = mlp_audit["events"]
    assert [e.done for e in events] == list(range(1, len(events) + 1))
    last = events[-1]
    assert last.done == last.total == mlp_audit["claim"].n_samples and sum(last.counts.values()) == last.total
    assert last.eta == 0


def test_true_and_inflated_claims(mlp_audit, digits, tmp_path):
    """The same outcomes (resumed from a copy of the audit, not re-verified): a true claim is confirmed,
    an inflated one refuted."""
    out = tmp_path / "resumed"
    shutil.copytree(mlp_audit["out"], out)
    log_lines = (out / "evidence" / "outcomes.jsonl").read_text().count("\n")
    e = mlp_audit["report"]["per_eps"][0]
    n, certified, upper = e["n"], e["certified"], e["clean"] - e["falsified"]
    true = load_claim(mlp_claim(digits["folder"], "true.json", claimed_certified_accuracy=math.floor(certified / n * 1e4) / 1e4))
    inflated = load_claim(mlp_claim(digits["folder"], "inflated.json", claimed_certified_accuracy=(upper + 1) / n))
    assert run_audit(true, out, tightness_samples=0)["claim_verdict"] == "confirmed"
    assert run_audit(inflated, out, tightness_samples=0)["claim_verdict"] == "refuted"
    assert (out / "evidence" / "outcomes.jsonl").read_text().count("\n") == log_lines   # nothing re-verified


def test_borderline_claim_is_undecided_with_the_right_interval(digits, tmp_path):
    """IBP alone (plus the quick attack) leaves samples open: a claim inside the interval is undecided."""
    from verifier.config import VerifyConfig

    path = mlp_claim(digits["folder"], "border.json", eps=0.03)
    report = run_audit(load_claim(path), tmp_path, config=VerifyConfig(method="ibp"), tightness_samples=0)
    (e,) = report["per_eps"]
    assert e["unknown"] > 0, e
    lo, hi = e["certified"] / e["n"], (e["clean"] - e["falsified"]) / e["n"]
    assert e["interval"] == [lo, hi] and lo < hi
    claimed = round((lo + hi) / 2, 6)
    border = load_claim(mlp_claim(digits["folder"], "border2.json", eps=0.03, claimed_certified_accuracy=claimed))
    again = run_audit(border, tmp_path, config=VerifyConfig(method="ibp"), tightness_samples=0)
    assert again["claim_verdict"] == "undecided" and again["per_eps"][0]["interval"] == [lo, hi]


def test_audit_check_accepts_the_kept_evidence(mlp_audit):
    """Every certificate passes the independent checker, every counterexample re-runs on onnxruntime."""
    result = audit_check(mlp_audit["out"] / "report.json")
    e = mlp_audit["report"]["per_eps"][0]
    assert result.ok, result.failures
    assert result.certificates + len(result.unchecked) == e["certified"] and result.counterexamples == e["falsified"]


def _copy(mlp_audit, tmp_path):
    """A copy of the audit folder to tamper with."""
    dst = tmp_path / "copy"
    shutil.copytree(mlp_audit["out"], dst)
    return dst


def test_tampered_certificate_is_rejected(mlp_audit, tmp_path):
    """A certificate with one proof removed no longer covers the property: audit-check rejects it."""
    out = _copy(mlp_audit, tmp_path)
    row = next(r for r in mlp_audit["report"]["samples"] if r["certificate"])
    cert = json.loads((out / row["certificate"]).read_text())
    cert["proofs"] = cert["proofs"][1:]
    (out / row["certificate"]).write_text(json.dumps(cert))
    result = audit_check(out / "report.json")
    assert not result.ok and any(row["key"] in f and "certificate REJECTED" in f for f in result.failures)


def test_certificate_of_another_sample_is_rejected(mlp_audit, tmp_path):
    """Swapping in the certificate of another sample fails on the property's hash."""
    out = _copy(mlp_audit, tmp_path)
    a, b = [r for r in mlp_audit["report"]["samples"] if r["certificate"]][:2]
    shutil.copyfile(out / b["certificate"], out / a["certificate"])
    result = audit_check(out / "report.json")
    assert not result.ok and any(a["key"] in f for f in result.failures)


def test_tampered_counterexample_and_counts_are_rejected(mlp_audit, tmp_path):
    """A counterexample moved out of the ball, and a report whose count was raised, are both caught."""
    out = _copy(mlp_audit, tmp_path)
    row = next(r for r in mlp_audit["report"]["samples"] if r["counterexample"])
    cex = json.loads((out / row["counterexample"]).read_text())
    cex["x"][0] += 1.0
    (out / row["counterexample"]).write_text(json.dumps(cex))
    report = json.loads((out / "report.json").read_text())
    report["per_eps"][0]["certified"] += 1
    (out / "report.json").write_text(json.dumps(report))
    failures = audit_check(out / "report.json").failures
    assert any(row["key"] in f and "outside the eps-ball" in f for f in failures)
    assert any("differ from the per-sample verdicts" in f for f in failures)


def test_property_file_must_be_the_claimed_one(mlp_audit, tmp_path):
    """A property for a smaller eps in place of the claimed one is caught before its certificate is looked at."""
    out = _copy(mlp_audit, tmp_path)
    row = next(r for r in mlp_audit["report"]["samples"] if r["certificate"])
    spec = out / row["spec"]
    spec.write_text(spec.read_text().replace("(assert (>= X_0 ", "(assert (>= X_0 0.0001 + ", 1))
    failures = audit_check(out / "report.json").failures
    assert any(row["key"] in f and "not the claimed eps-ball property" in f for f in failures)


def test_cli_audit_and_audit_check(digits, tmp_path, capsys):
    """`nnverify audit` prints a summary and writes the report; `audit-check` accepts it (exit 0)."""
    np.savez(digits["folder"] / "digits10.npz", x=digits["x"][:10], y=digits["y"][:10])
    path = write_claim(digits["folder"], "cli-cnn.json", model="cnn-ibp.onnx", data="digits10.npz", eps=[0.02, 0.05],
                       clip=[0, 1], claimed_certified_accuracy=[0.5, 0.3], timeout_per_sample=5)
    out = tmp_path / "cli"
    assert cli(["audit", str(path), "--out", str(out), "--tightness-samples", "2"]) == 0
    captured = capsys.readouterr()
    assert "claim: " in captured.out and "eps 0.05:" in captured.out
    assert "audit [" in captured.err and "ETA" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["claim_verdict"] in ("confirmed", "refuted", "undecided") and len(report["per_eps"]) == 2
    assert [b["eps"] for b in report["tightness"]["per_eps"]] == [0.02, 0.05]
    assert cli(["audit-check", str(out / "report.json")]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


@pytest.mark.parametrize("bad", ["missing.json"])
def test_audit_check_of_a_missing_report(bad, tmp_path):
    """A report path that does not exist is a failure, not a crash."""
    result = audit_check(tmp_path / bad)
    assert not result.ok and "unreadable" in result.failures[0]
