"""Shared fixtures: the CI tier generated once per session, and the real verifier's answers on it."""
from __future__ import annotations

from pathlib import Path

import pytest

from suite_helpers import answer_word, verify_row


@pytest.fixture(scope="session")
def ci_suite(tmp_path_factory) -> Path:
    """The CI tier (deterministic, seed 0) written into a session tmp dir."""
    from verifier.soundness.generate import generate

    out = tmp_path_factory.mktemp("soundness_ci")
    generate(out, "ci", seed=0)
    return out


@pytest.fixture(scope="session")
def ci_rows(ci_suite):
    """The CI tier's truth.csv rows."""
    from verifier.soundness.generate import read_rows

    return read_rows(ci_suite)


@pytest.fixture(scope="session")
def baseline_answers(ci_suite, ci_rows):
    """The unmodified verifier's (word, Result) on every CI instance, certificates checked."""
    out = []
    for row in ci_rows:
        res = verify_row(ci_suite, row)
        out.append((answer_word(res), res))
    return out
