"""Planning: per-sample properties (box, normalisation, label), misclassified samples, torch-free modules."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from audit_helpers import mlp_claim
from verifier.audit.claim import load_claim
from verifier.audit.plan import denormalise, input_box, normalise, plan_items
from verifier.spec.vnnlib import parse_vnnlib


def test_items_cover_every_sample_and_eps(digits):
    """One item per (eps, sample), eps-major; predictions from onnxruntime; misclassified carry no property."""
    claim = load_claim(mlp_claim(digits["folder"], "plan.json", eps=[0.01, 0.03]))
    items = plan_items(claim)
    assert [(it.eps_index, it.sample) for it in items] == [(k, i) for k in range(2) for i in range(claim.n_samples)]
    assert len({it.key for it in items}) == len(items)
    for it in items:
        assert it.label == int(claim.y[it.sample])
        assert it.misclassified == (it.prediction != it.label)
        assert (it.vnnlib_text is None) == it.misclassified


def test_property_is_the_normalised_clipped_ball(digits):
    """The box contains the exact ball in pixel space (clipped), mapped through (x - mean) / std; one
    unsafe disjunct per other class, Y_j >= Y_label."""
    claim = load_claim(mlp_claim(digits["folder"], "plan2.json", eps=0.1))
    item = next(it for it in plan_items(claim) if not it.misclassified)
    spec = parse_vnnlib(item.vnnlib_text)
    (region,) = spec.regions
    x = claim.x[item.sample].reshape(-1)
    lo_pix = denormalise(region.lower, claim.mean, claim.std, claim.input_shape)
    hi_pix = denormalise(region.upper, claim.mean, claim.std, claim.input_shape)
    assert np.all(region.lower <= normalise(np.maximum(x - 0.1, 0), claim.mean, claim.std, claim.input_shape))
    assert np.all(region.upper >= normalise(np.minimum(x + 0.1, 1), claim.mean, claim.std, claim.input_shape))
    np.testing.assert_allclose(lo_pix, np.maximum(x - 0.1, 0), atol=1e-12)
    np.testing.assert_allclose(hi_pix, np.minimum(x + 0.1, 1), atol=1e-12)
    assert len(region.unsafe) == 9
    for poly in region.unsafe:   # Y_label - Y_j <= 0
        assert poly.A.shape == (1, 10) and poly.A[0, item.label] == 1 and poly.A[0].sum() == 0 and poly.b[0] == 0


def test_input_box_is_outward_and_exact_at_eps_zero():
    """Every side moves one ulp out after rounding; eps 0 is the point itself; per-channel mean/std."""
    x = np.array([0.1, 0.7, 0.0, 1.0])
    lo, hi = input_box(x, 0.2, (0.0, 1.0), None, None, (4,))
    assert lo[0] == 0.0 and hi[3] == 1.0 and lo[1] < 0.5 and lo[1] == np.nextafter(0.7 - 0.2, -1)
    lo0, hi0 = input_box(x, 0.0, (0.0, 1.0), None, None, (4,))
    assert np.array_equal(lo0, x) and np.array_equal(hi0, x)
    lo2, _ = input_box(x, 0.0, None, [0.5, 0.0], [0.5, 1.0], (2, 2))   # two channels of two values
    np.testing.assert_allclose(lo2, [(0.1 - 0.5) / 0.5, (0.7 - 0.5) / 0.5, 0.0, 1.0], atol=1e-12)


def test_planning_and_reporting_need_no_torch(digits, tmp_path):
    """claim, plan, report (JSON + HTML), and the run / check / props modules import with torch unimportable."""
    script = f"""
import sys
sys.modules["torch"] = None
from verifier.audit.claim import load_claim
from verifier.audit.plan import plan_items
from verifier.audit.report import build_report, write_report
import verifier.audit.check, verifier.audit.data, verifier.audit.html, verifier.audit.props, verifier.audit.run
claim = load_claim({str(mlp_claim(digits["folder"], "torchfree.json"))!r})
items = plan_items(claim)
write_report(build_report(claim, items, {{}}), {str(tmp_path)!r})
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None and m.split(".")[0] == "torch"]
print(len(items))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == len(digits["y"])
    assert (tmp_path / "report.html").is_file()
