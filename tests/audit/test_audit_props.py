"""MNIST images and labels recovered from mnist_fc eps-ball properties, and the audit-data helper."""
from __future__ import annotations

import re

import numpy as np
import pytest

from verifier.audit.props import dataset_from_properties, parse_name, read_property, recover_image
from verifier.cli import main as cli
from verifier.shared_data import absent_reason, benchmarks_root

MNISTFC = benchmarks_root() / "vnncomp2021" / "mnistfc"
needs_mnistfc = pytest.mark.skipif(not (MNISTFC / "vnnlib").is_dir(), reason=absent_reason(MNISTFC / "vnnlib"))


def _box32(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The mnist_fc generator's box: float32 arithmetic, clipped to [0, 1]."""
    x32, e = x.astype(np.float32), np.float32(eps)
    return (np.maximum(x32 - e, np.float32(0)).astype(np.float64), np.minimum(x32 + e, np.float32(1)).astype(np.float64))


@pytest.mark.parametrize("eps", [0.005, 0.01, 0.03, 0.05, 0.1, 0.3, 0.45])
def test_recovery_round_trips_on_grey_levels(eps):
    """Random k/255 images (with 0 and 1 pixels, i.e. clipped sides): recovered exactly from their box."""
    rng = np.random.default_rng(int(eps * 1000))
    x = (rng.integers(0, 256, 784) / 255).astype(np.float32).astype(np.float64)
    x[:20], x[20:40] = 0.0, 1.0
    lo, hi = _box32(x, eps)
    got = recover_image(lo, hi, eps)
    assert np.array_equal(got, x)
    assert all(np.array_equal(b, c) for b, c in zip(_box32(got, eps), (lo, hi)))


def test_recovery_of_off_grid_values_reproduces_the_box():
    """Arbitrary float32 pixels: the recovered image re-boxes to the same box (float32 and float64 rules)."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 500).astype(np.float32).astype(np.float64)
    lo, hi = _box32(x, 0.03)
    assert all(np.array_equal(b, c) for b, c in zip(_box32(recover_image(lo, hi, 0.03), 0.03), (lo, hi)))
    lo64, hi64 = np.maximum(x - 0.03, 0), np.minimum(x + 0.03, 1)
    got = recover_image(lo64, hi64, 0.03)
    assert np.array_equal(np.maximum(got - 0.03, 0), lo64) and np.array_equal(np.minimum(got + 0.03, 1), hi64)


def test_a_box_covering_the_whole_range_is_refused():
    """With 2 eps >= 1 a mid-grey pixel's box is [0, 1]: it says nothing about the pixel."""
    with pytest.raises(ValueError, match="pixel 1: the box is the whole range"):
        recover_image(np.array([0.0, 0.0]), np.array([0.6, 1.0]), 0.6)


def test_property_names():
    """prop_<index>_<eps>.vnnlib."""
    assert parse_name("a/prop_12_0.05.vnnlib") == (12, 0.05)
    with pytest.raises(ValueError, match="not named prop_<index>_<eps>.vnnlib"):
        parse_name("robust.vnnlib")


@needs_mnistfc
def test_every_shared_property_recovers_its_image_and_label():
    """All 30 files: exact float32 round trip of the box, grey levels k/255, label as the comment says,
    the same image at eps 0.03 and 0.05."""
    files = sorted((MNISTFC / "vnnlib").glob("prop_*.vnnlib"))
    assert len(files) == 30
    images = {}
    for f in files:
        image, label, index, eps = read_property(f)
        spec_text = f.read_text()
        assert label == int(re.search(r"label: (\d+)", spec_text).group(1))
        lo = np.array([float(v) for _, v in sorted((int(i), v) for i, v in re.findall(r">= X_(\d+) ([-\d.e]+)\)", spec_text))])
        hi = np.array([float(v) for _, v in sorted((int(i), v) for i, v in re.findall(r"<= X_(\d+) ([-\d.e]+)\)", spec_text))])
        re_lo, re_hi = _box32(image, eps)
        assert np.array_equal(re_lo, lo) and np.array_equal(re_hi, hi), f.name
        assert np.array_equal(image, (np.round(image * 255) / 255).astype(np.float32))   # 8-bit grey levels
        if index in images:
            assert np.array_equal(images[index], image)
        images[index] = image
    assert len(images) == 15


@needs_mnistfc
def test_audit_data_command_and_the_mnist_network(tmp_path, capsys):
    """`nnverify audit-data mnist-props` writes a 15-image dataset the 256x2 network classifies correctly."""
    from verifier.audit.claim import claim_from_dict
    from verifier.audit.plan import plan_items

    out = tmp_path / "mnist.npz"
    assert cli(["audit-data", "mnist-props", str(MNISTFC), "--out", str(out), "--eps", "0.03"]) == 0
    assert "15 samples of shape [28, 28]" in capsys.readouterr().out
    data = np.load(out)
    assert data["x"].shape == (15, 28, 28) and data["index"].tolist() == list(range(15))
    assert data["y"].tolist() == dataset_from_properties(MNISTFC)["y"].tolist()
    claim = claim_from_dict({"model": str(MNISTFC / "onnx" / "mnist-net_256x2.onnx"), "data": str(out), "eps": 0.03,
                             "clip": [0, 1], "claimed_certified_accuracy": 0.5}, tmp_path)
    items = plan_items(claim)
    assert not any(it.misclassified for it in items)


def test_audit_data_errors_are_one_line(tmp_path, capsys):
    """A folder without properties: exit 2 and one line."""
    assert cli(["audit-data", "mnist-props", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnverify: error:") and "\n" not in err
