"""Verified attribution maps: every bound sound by sampling, the planted trigger ranks first, layouts, files."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from digits import TRIGGER, digits, predict, with_trigger, write_conv_onnx

from verifier.explain import ExplainError, explain, patches, save


def margins(layers, xs, label):
    """min_j (y_label - y_j) by an independent float64 numpy pass over the trained weights."""
    h = np.asarray(xs, dtype=np.float64)
    for k, (w, b) in enumerate(layers):
        h = h @ w.T.astype(np.float64) + b.astype(np.float64)
        if k < len(layers) - 1:
            h = np.maximum(h, 0)
    return h[:, label] - np.delete(h, label, axis=1).max(1)


def samples(lo, hi, idx, rng, n=2000):
    """Points of the box [lo, hi] varying only on ``idx``: uniform, every corner (up to 2^6), random corners."""
    k = len(idx)
    u = rng.random((n, k))
    corners = np.array(np.meshgrid(*[[0, 1]] * k)).reshape(k, -1).T if k <= 6 else rng.integers(0, 2, (64, k))
    flips = np.concatenate([u, corners, rng.integers(0, 2, (n // 4, k))]).astype(np.float64)
    xs = np.tile(lo, (len(flips), 1))
    xs[:, idx] = lo[idx] + flips * (hi[idx] - lo[idx])
    return xs


@pytest.fixture(scope="module")
def triggered(trigger_net):
    """A held-out 7 with the trigger planted (the net says 0), and its map with the complement bounds."""
    _, _, x_te, y_te = digits()
    x = with_trigger(x_te[y_te == 7][:1])[0].astype(np.float64)
    assert predict(trigger_net[1], x[None])[0] == 0
    return x, explain(str(trigger_net[0]), x, 0, 2, 1.0, clip=(0, 1), grid=(8, 8), complement=True)


def test_planted_trigger_patch_ranks_first(triggered):
    """Perturbing the bright corner can remove the trigger: its guaranteed margin is the lowest."""
    _, res = triggered
    first = res["patches"][res["ranking"][0]]
    assert sorted(first["indices"]) == sorted(TRIGGER)
    assert first["rank"] == 1
    assert first["margin_lower"] < min(p["margin_lower"] for p in res["patches"] if p is not first)


@pytest.mark.parametrize("method,eps", [("crown", 1.0), ("crown", 0.3), ("alpha", 0.3)])
def test_patch_bounds_are_sound_by_sampling(trigger_net, triggered, method, eps):
    """No perturbation inside any patch (uniform, all corners, random corners) beats its margin_lower;
    margin_upper is reached and not below it."""
    x, _ = triggered
    res = explain(str(trigger_net[0]), x, 0, 2, eps, clip=(0, 1), grid=(8, 8), method=method)
    rng = np.random.default_rng(0)
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    for p in res["patches"]:
        idx = np.asarray(p["indices"])
        box_lo, box_hi = x.copy(), x.copy()
        box_lo[idx], box_hi[idx] = lo[idx], hi[idx]
        m = margins(trigger_net[1], samples(box_lo, box_hi, idx, rng), 0)
        assert m.min() >= p["margin_lower"] - 1e-9, (p["id"], m.min(), p["margin_lower"])
        assert p["margin_lower"] <= p["margin_upper"] + 1e-9
        assert p["drop_upper"] == pytest.approx(res["margin"] - p["margin_lower"])


def test_complement_bounds_are_sound_by_sampling(trigger_net, triggered):
    """With everything but the patch perturbed (and with everything perturbed) no sample beats the bound."""
    x, res = triggered
    rng = np.random.default_rng(1)
    lo, hi = np.clip(x - 1.0, 0, 1), np.clip(x + 1.0, 0, 1)
    everything = np.arange(64)
    m_all = margins(trigger_net[1], samples(lo, hi, everything, rng, 20000), 0)
    assert m_all.min() >= res["margin_lower_all"] - 1e-9
    for p in res["patches"][::3]:
        idx = np.asarray(p["indices"])
        rest = np.setdiff1d(everything, idx)
        box_lo, box_hi = lo.copy(), hi.copy()
        box_lo[idx], box_hi[idx] = x[idx], x[idx]
        m = margins(trigger_net[1], samples(box_lo, box_hi, rest, rng, 5000), 0)
        assert m.min() >= p["complement_margin_lower"] - 1e-9


def test_features_layout_groups_consecutive_inputs(trigger_net):
    """Without --grid a flat input is cut into groups of K consecutive features; bounds sound by sampling."""
    _, _, x_te, y_te = digits()
    x = x_te[y_te == 4][0].astype(np.float64)
    res = explain(str(trigger_net[0]), x, 4, 5, 0.2)
    assert res["layout"] == {"kind": "features", "shape": [64]}
    assert [p["indices"] for p in res["patches"]] == [list(range(s, min(s + 5, 64))) for s in range(0, 64, 5)]
    rng = np.random.default_rng(2)
    for p in res["patches"]:
        idx = np.asarray(p["indices"])
        lo, hi = x.copy(), x.copy()
        lo[idx] -= 0.2
        hi[idx] += 0.2
        assert margins(trigger_net[1], samples(lo, hi, idx, rng, 500), 4).min() >= p["margin_lower"] - 1e-9


def test_image_layout_for_4d_input(tmp_path):
    """A 4-D input [1, 1, 8, 8]: K x K squares (edge patches smaller) tile the image; sound by sampling."""
    path = write_conv_onnx(tmp_path / "conv.onnx")
    x = digits()[2][0].astype(np.float64)
    res = explain(str(path), x, 3, 3, 0.2, clip=(0, 1))
    assert res["layout"] == {"kind": "image", "shape": [1, 8, 8]}
    cover = np.sort(np.concatenate([p["indices"] for p in res["patches"]]))
    assert len(res["patches"]) == 9 and np.array_equal(cover, np.arange(64))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for p in res["patches"]:
        idx = np.asarray(p["indices"])
        lo, hi = x.copy(), x.copy()
        lo[idx], hi[idx] = np.clip(x[idx] - 0.2, 0, 1), np.clip(x[idx] + 0.2, 0, 1)
        for xs in samples(lo, hi, idx, rng, 300):
            y = sess.run(None, {"input": xs.astype(np.float32).reshape(1, 1, 8, 8)})[0][0].astype(np.float64)
            assert y[3] - np.delete(y, 3).max() >= p["margin_lower"] - 1e-4   # onnxruntime computes in float32


def test_patches_partition():
    """Grid patches are row-major K x K squares; a patch larger than the input is an error."""
    layout, parts = patches((64,), 3, grid=(8, 8))
    assert layout["kind"] == "grid" and len(parts) == 9
    assert list(parts[0]) == [0, 1, 2, 8, 9, 10, 16, 17, 18] and list(parts[-1]) == [54, 55, 62, 63]
    with pytest.raises(ExplainError, match="larger than the input"):
        patches((64,), 9, grid=(8, 8))
    with pytest.raises(ExplainError, match="larger than the input"):
        patches((64,), 65)
    with pytest.raises(ExplainError, match="does not fit"):
        patches((64,), 2, grid=(8, 7))
    with pytest.raises(ExplainError, match="flat inputs"):
        patches((1, 8, 8), 2, grid=(8, 8))


def test_bad_explain_input(trigger_net):
    """Input size, label range, eps, clip: one-line ExplainErrors."""
    path, x = str(trigger_net[0]), digits()[2][0]
    with pytest.raises(ExplainError, match="input has 63 values, the model takes 64"):
        explain(path, x[:63], 0, 2, 0.1)
    with pytest.raises(ExplainError, match="label 10 is out of range"):
        explain(path, x, 10, 2, 0.1)
    with pytest.raises(ExplainError, match="eps"):
        explain(path, x, 0, 2, -0.1)
    with pytest.raises(ExplainError, match="outside the clip range"):
        explain(path, x + 2, 0, 2, 0.1, clip=(0, 1))


def test_files_written(triggered, tmp_path):
    """explain.json has the documented fields; explain.png is a PNG."""
    x, res = triggered
    js, png = save(res, x, tmp_path / "out")
    doc = json.loads(js.read_text())
    assert doc["label"] == 0 and doc["eps"] == 1.0 and len(doc["patches"]) == 16
    fields = {"indices", "margin_lower", "margin_upper", "drop_upper", "rank", "complement_margin_lower"}
    assert fields <= set(doc["patches"][0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
