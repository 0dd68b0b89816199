"""Report aggregation: counts, the certified interval and the claim verdict, from synthetic outcomes."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from verifier.audit.claim import Claim
from verifier.audit.plan import AuditItem, item_key
from verifier.audit.report import build_report, claim_verdict


def _claim(eps=(0.1,), claimed=(0.7,)) -> Claim:
    """A claim over 10 two-value samples (files are not read by the report)."""
    from pathlib import Path

    return Claim(Path("/m.onnx"), Path("/d.npz"), tuple(eps), tuple(claimed), input_shape=(2,), n_outputs=3,
                 model_sha256="0" * 64, x=np.zeros((10, 2)), y=np.zeros(10, np.int64))


def _items(claim: Claim, wrong: set[int]) -> list[AuditItem]:
    """Items of every (eps, sample); ``wrong`` samples misclassified."""
    return [AuditItem(item_key(k, i), i, k, e, 0, 1 if i in wrong else 0, i in wrong, None if i in wrong else "spec")
            for k, e in enumerate(claim.eps) for i in range(10)]


def _outcomes(items, verdicts: list[str]) -> dict:
    """Outcomes for the correctly classified items, in order, with the given verdicts."""
    todo = [it for it in items if not it.misclassified]
    return {it.key: {"verdict": v, "seconds": 0.5 + i, "certificate": "c" if v == "holds" else None,
                     "counterexample": "x" if v == "violated" else None} for i, (it, v) in enumerate(zip(todo, verdicts))}


# 10 samples, 1 misclassified, 7 holds, 1 violated, 1 timeout: interval [0.7, 0.8]
VERDICTS = ["holds"] * 7 + ["violated", "timeout"]


@pytest.mark.parametrize("claimed, verdict", [(0.7, "confirmed"), (0.65, "confirmed"), (0.75, "undecided"),
                                              (0.8, "undecided"), (0.81, "refuted"), (1.0, "refuted"), (0.0, "confirmed")])
def test_claim_verdict_at_the_interval_edges(claimed, verdict):
    """Confirmed iff certified/n >= claim; refuted iff (clean - falsified)/n < claim; decimals exact."""
    claim = _claim(claimed=(claimed,))
    items = _items(claim, {9})
    report = build_report(claim, items, _outcomes(items, VERDICTS))
    (e,) = report["per_eps"]
    assert (e["n"], e["clean"], e["certified"], e["falsified"], e["unknown"]) == (10, 9, 7, 1, 1)
    assert e["interval"] == [0.7, 0.8] and e["claim_verdict"] == verdict == report["claim_verdict"]
    assert e["time_per_sample"]["samples"] == 9 and e["time_per_sample"]["max"] == 8.5


def test_decimal_claims_compare_exactly():
    """0.7 * 10 is 7.000000000000001 in floats; the claim 0.7 still equals 7/10."""
    assert claim_verdict(7, 7, 10, 0.7) == "confirmed"
    assert claim_verdict(2, 10, 3, 0.67) == "undecided"
    assert claim_verdict(1, 1, 3, 0.34) == "refuted"


def test_pending_items_keep_the_claim_open():
    """A partial report: pending samples widen the interval like unknown ones, the report says partial."""
    claim = _claim(claimed=(0.5,))
    items = _items(claim, set())
    report = build_report(claim, items, _outcomes(items, ["holds"] * 3 + ["violated"]))
    (e,) = report["per_eps"]
    assert e["pending"] == 6 and e["unknown"] == 0 and e["interval"] == [0.3, 0.9]
    assert e["claim_verdict"] == "undecided" and report["complete"] is False
    assert [r["verdict"] for r in report["samples"]][:5] == ["holds", "holds", "holds", "violated", "pending"]


def test_several_eps_overall_verdict():
    """Refuted if any eps is refuted, confirmed only if all are."""
    claim = _claim(eps=(0.1, 0.2), claimed=(0.7, 0.9))
    items = _items(claim, {9})
    outcomes = _outcomes(items, VERDICTS + VERDICTS)
    report = build_report(claim, items, outcomes)
    assert [e["claim_verdict"] for e in report["per_eps"]] == ["confirmed", "refuted"]
    assert report["claim_verdict"] == "refuted"
    assert build_report(replace(claim, claimed_certified_accuracy=(0.7, 0.6)), items, outcomes)["claim_verdict"] == "confirmed"
    assert build_report(replace(claim, claimed_certified_accuracy=(0.7, 0.75)), items, outcomes)["claim_verdict"] == "undecided"


def test_outcomes_as_an_aligned_list_and_clean_claim():
    """Outcomes may come as a list aligned with the items (None = pending / misclassified)."""
    claim = replace(_claim(claimed=(0.7,)), claimed_clean_accuracy=0.95)
    items = _items(claim, {9})
    by_key = _outcomes(items, VERDICTS)
    report = build_report(claim, items, [by_key.get(it.key) for it in items])
    assert report["per_eps"][0]["certified"] == 7
    assert report["clean_claim"] == {"claimed": 0.95, "measured": 0.9, "verdict": "refuted"}


def test_unknown_verdict_word_is_an_error():
    """An outcome with a verdict outside the five words is refused."""
    claim = _claim()
    items = _items(claim, set())
    with pytest.raises(ValueError, match="'proved' is not one of"):
        build_report(claim, items, {items[0].key: {"verdict": "proved", "seconds": 1}})
