"""Mutation check: relaxation bugs injected into the bound engine are caught by the CI tier."""
from __future__ import annotations

import pytest

from suite_helpers import answer_word, verify_row

from verifier.soundness.run import judge
from verifier.bounds.activation import LeakyReluOp
from verifier.bounds.linear import LinearOp
from verifier.bounds.smooth import SmoothOp


def _relu_upper_too_low(monkeypatch):
    """ReLU (and leaky ReLU) upper line with its slope scaled by 0.9."""
    orig = LeakyReluOp.relax

    def relax(self, node, lo, hi, alpha=None):
        ls, lb, us, ub = orig(self, node, lo, hi, alpha)
        return ls, lb, us * 0.9, ub

    monkeypatch.setattr(LeakyReluOp, "relax", relax)


def _linear_backward_drops_bias(monkeypatch):
    """CROWN through a linear layer forgets the layer's bias."""
    orig = LinearOp.backward

    def backward(self, node, A, in_bounds, relax_state):
        A_in, _ = orig(self, node, A, in_bounds, relax_state)
        return A_in, 0.0

    monkeypatch.setattr(LinearOp, "backward", backward)


def _ibp_shrinks(monkeypatch):
    """IBP of a linear layer with half the true radius."""
    orig = LinearOp.ibp

    def ibp(self, node, in_bounds):
        lo, hi = orig(self, node, in_bounds)
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        return mid - rad / 2, mid + rad / 2

    monkeypatch.setattr(LinearOp, "ibp", ibp)


def _smooth_shifted(monkeypatch):
    """Sigmoid / tanh lines shifted towards the function by 0.05."""
    orig = SmoothOp.relax

    def relax(self, node, lo, hi, alpha=None):
        ls, lb, us, ub = orig(self, node, lo, hi, alpha)
        return ls, lb + 0.05, us, ub - 0.05

    monkeypatch.setattr(SmoothOp, "relax", relax)


BUGS = {
    "relu_upper_too_low": _relu_upper_too_low,
    "linear_backward_drops_bias": _linear_backward_drops_bias,
    "ibp_shrinks": _ibp_shrinks,
    "smooth_shifted": _smooth_shifted,
}


def _first_unsound(folder, rows, check: bool):
    """The first sat-truth row the (mutated) verifier answers unsat, as (row, result), or None."""
    for row in rows:
        if row.truth != "sat":
            continue
        res = verify_row(folder, row, check=check, timeout=4.0, light_attack=True)
        if judge(row, answer_word(res), "") == "unsound":
            return row, res
    return None


def test_unmutated_verifier_has_no_unsound_answer(ci_suite, ci_rows):
    """The control, with the mutated runs' exact settings: without a bug no sat instance is answered unsat."""
    found = _first_unsound(ci_suite, ci_rows, check=False)
    assert found is None, f"{found[0].onnx}: {found[1].method}: {found[1].reason}"


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_injected_bug_gives_an_unsound_answer(bug, monkeypatch, ci_suite, ci_rows):
    """Re-check off: each injected bug yields an unsound 'holds'. Re-check on: that holds becomes unknown."""
    BUGS[bug](monkeypatch)
    found = _first_unsound(ci_suite, ci_rows, check=False)
    assert found is not None, f"bug {bug} was not caught by the CI tier"
    row, res = found
    assert res.certificate_checked is False  # labelled unchecked, as design rule 2 requires
    checked = verify_row(ci_suite, row, check=True, timeout=4.0, light_attack=True)
    assert answer_word(checked) in ("unknown", "timeout"), f"{row.onnx}: {checked.verdict}: {checked.reason}"
