"""Generator units: the bump gadget, block-diagonal merging, VNN-LIB text, and the hiddenness check."""
from __future__ import annotations

import numpy as np
import pytest

from verifier.soundness.generate import AttackBudget, Planted, _outputs, box, plant, vnnlib_text
from verifier.soundness.networks import Bump, CnnSpec, MlpSpec, cnn_model, mlp_model
from verifier.spec.vnnlib import parse_vnnlib

NETS = {
    "mlp_relu_block_diagonal": MlpSpec(3, (8, 8, 6), 3),
    "mlp_relu_branch": MlpSpec(3, (8,), 3),
    "mlp_sigmoid_bn_branch": MlpSpec(3, (8, 8), 3, "sigmoid", batchnorm=True),
    "cnn_tanh_avgpool": CnnSpec(image=(1, 4, 4), channels=2, hidden=6, activation="tanh", pool="avg"),
}


def _build(net, bump):
    """The model of ``net`` with seed 3."""
    return cnn_model(net, 3, bump) if isinstance(net, CnnSpec) else mlp_model(net, 3, bump)


@pytest.mark.parametrize("name", sorted(NETS))
def test_bump_adds_height_at_center_and_nothing_outside(name):
    """bumped(x) = g(x) + height * e_out * bump(x): exactly height at x*, zero outside the L1 ball."""
    net = NETS[name]
    rng = np.random.default_rng(0)
    center = rng.uniform(0.2, 0.8, net.n_inputs).astype(np.float32).astype(np.float64)
    bump = Bump(center, slope=100.0, height=2.5, output=1)
    base, bumped = _build(net, None), _build(net, bump)
    far = center + rng.choice([-1.0, 1.0], (20, net.n_inputs)) * 0.05  # L1 distance >= 0.05 > 1 / slope
    np.testing.assert_allclose(_outputs(bumped, far), _outputs(base, far), atol=1e-5)
    diff = _outputs(bumped, center[None])[0] - _outputs(base, center[None])[0]
    np.testing.assert_allclose(diff, [0.0, 2.5, 0.0], atol=1e-5)
    near = center.copy()
    near[0] += 0.5 / bump.slope  # half way out: bump = 0.5
    np.testing.assert_allclose((_outputs(bumped, near[None]) - _outputs(base, near[None]))[0, 1], 1.25, atol=1e-4)


def test_vnnlib_text_round_trips_through_the_parser():
    """Box and unsafe polytopes as written: one polytope per wrong class, Y_t - Y_w <= 0."""
    lo, hi = box(np.array([0.25, -0.5]), 0.1, image=False)
    spec = parse_vnnlib(vnnlib_text(lo, hi, 3, 2, [0, 1]))
    (region,) = spec.regions
    np.testing.assert_array_equal(region.lower, lo)
    np.testing.assert_array_equal(region.upper, hi)
    assert len(region.unsafe) == 2
    assert region.unsafe[0].satisfied_by(np.array([1.0, 0.0, 1.0]))   # Y_2 <= Y_0
    assert not region.unsafe[0].satisfied_by(np.array([0.0, 0.0, 1.0]))
    single = parse_vnnlib(vnnlib_text(lo, hi, 3, 2, [1])).regions[0].unsafe
    assert len(single) == 1


def test_image_box_is_clipped_and_float32_exact():
    """Image boxes stay in [0, 1]; every bound is a float32 value."""
    lo, hi = box(np.array([0.01, 0.5, 0.995]), 0.02, image=True)
    assert lo[0] == 0.0 and hi[2] == 1.0
    assert np.array_equal(lo, lo.astype(np.float32).astype(np.float64))


def test_hiddenness_check_rejects_a_wide_bump(tmp_path):
    """A bump as wide as the box is found by the attack, so the instance is dropped."""
    recipe = Planted("wide", MlpSpec(2, (8, 8), 3), eps=0.05, radius=2.0, seed=1)
    row, notes = plant(recipe, tmp_path, 5.0, AttackBudget(restarts=10, steps=20, samples=2000), attempts=2)
    assert row is None
    assert any("attack finds a violation" in n for n in notes), notes
    assert not list((tmp_path / "onnx").glob("*.onnx"))


def test_narrow_bump_is_kept_with_a_witness(tmp_path):
    """The same recipe with a narrow bump passes the check and writes a validated witness."""
    recipe = Planted("narrow", MlpSpec(2, (8, 8), 3), eps=0.05, radius=1e-4, seed=1)
    row, _ = plant(recipe, tmp_path, 5.0, AttackBudget(restarts=10, steps=20, samples=2000), attempts=2)
    assert row is not None and row.truth == "sat" and row.kind == "unverifiable"
    assert (tmp_path / row.witness).is_file()
