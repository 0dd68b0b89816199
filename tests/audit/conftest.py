"""Shared fixtures: the digits models (trained once per session) and one audit of the MLP."""
from __future__ import annotations

from dataclasses import replace

import pytest

from audit_helpers import mlp_claim, train_digits


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> dict:
    """Paths of the trained digits models and the audit data (see ``audit_helpers.train_digits``)."""
    return train_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def mlp_audit(digits, tmp_path_factory) -> dict:
    """One complete audit of the MLP at eps 0.05 (method auto): its claim, folder and report."""
    from verifier.audit.claim import load_claim
    from verifier.audit.run import run_audit

    claim = load_claim(mlp_claim(digits["folder"]))
    out = tmp_path_factory.mktemp("mlp_audit")
    events = []
    report = run_audit(claim, out, progress=lambda p: events.append(replace(p, counts=dict(p.counts))),
                       tightness_samples=3)
    return {"claim": claim, "out": out, "report": report, "events": events}
