"""Locating the shared benchmarks: NNVERIFY_BENCHMARKS first, else ../shared/benchmarks beside the checkout."""
from __future__ import annotations

from pathlib import Path

from verifier.shared_data import absent_reason, benchmarks_root

CHECKOUT = Path(__file__).resolve().parents[1]


def test_default_is_shared_beside_the_checkout(monkeypatch):
    monkeypatch.delenv("NNVERIFY_BENCHMARKS", raising=False)
    assert benchmarks_root() == CHECKOUT.parent / "shared" / "benchmarks"


def test_environment_overrides_the_location(monkeypatch, tmp_path):
    monkeypatch.setenv("NNVERIFY_BENCHMARKS", str(tmp_path))
    assert benchmarks_root() == tmp_path


def test_empty_environment_value_is_ignored(monkeypatch):
    monkeypatch.setenv("NNVERIFY_BENCHMARKS", "")
    assert benchmarks_root() == CHECKOUT.parent / "shared" / "benchmarks"


def test_absent_reason_names_the_path_and_the_override(tmp_path):
    reason = absent_reason(tmp_path / "vnncomp2021")
    assert str(tmp_path / "vnncomp2021") in reason and "NNVERIFY_BENCHMARKS" in reason
