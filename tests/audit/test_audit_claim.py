"""Claims: every bad claim is refused with a clear error before any verification starts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from audit_helpers import mlp_claim, write_claim
from verifier.audit.claim import ClaimError, load_claim
from verifier.audit.data import load_dataset
from verifier.cli import main as cli

BAD = {   # case -> (claim overrides, words the error must contain)
    "negative eps": ({"eps": [0.01, -0.02]}, "eps must be >= 0"),
    "eps not a number": ({"eps": "0.1"}, "eps must be a finite number"),
    "claimed above 1": ({"claimed_certified_accuracy": 1.2}, "claimed_certified_accuracy must be a fraction in [0, 1]"),
    "claimed below 0": ({"claimed_certified_accuracy": -0.1}, "claimed_certified_accuracy must be a fraction in [0, 1]"),
    "claimed clean above 1": ({"claimed_clean_accuracy": 80}, "claimed_clean_accuracy must be a fraction in [0, 1]"),
    "claims per eps mismatch": ({"eps": [0.01, 0.02], "claimed_certified_accuracy": [0.5, 0.4, 0.3]},
                                "3 values for 2 eps"),
    "missing model": ({"model": "nope.onnx"}, "model file 'nope.onnx' not found"),
    "missing data": ({"data": "nope.npz"}, "data file 'nope.npz' not found"),
    "l2 norm": ({"norm": "l2"}, "norm 'l2' is not supported"),
    "unknown field": ({"epsilon": 0.1}, "unknown claim field(s): epsilon"),
    "bad clip": ({"clip": [1, 0]}, "clip must have lo < hi"),
    "zero std": ({"std": [0.0]}, "std must be > 0"),
    "mean length": ({"mean": [0.1, 0.2, 0.3]}, "mean has 3 values"),
    "bad timeout": ({"timeout_per_sample": 0}, "timeout_per_sample must be > 0"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_claim_field_is_refused(case, digits):
    """Each malformed field raises ClaimError naming it."""
    overrides, words = BAD[case]
    path = mlp_claim(digits["folder"], f"bad-{case.replace(' ', '-')}.json", **overrides)
    with pytest.raises(ClaimError) as err:
        load_claim(path)
    assert words in str(err.value)


def test_data_shape_not_fitting_the_model(digits, tmp_path):
    """7x7 samples for a 64-input model: the error names both shapes."""
    np.savez(tmp_path / "small.npz", x=np.zeros((4, 7, 7), np.float32), y=np.zeros(4, np.int64))
    (tmp_path / "mlp.onnx").write_bytes(digits["mlp"].read_bytes())
    with pytest.raises(ClaimError, match=r"sample has shape \[7, 7\] \(49 values\) but the model's input \[64\] takes 64"):
        load_claim(mlp_claim(tmp_path, data="small.npz"))


def test_labels_outside_the_outputs(digits, tmp_path):
    """A label 12 for a 10-class model is named with its sample."""
    y = digits["y"].copy()
    y[3] = 12
    np.savez(tmp_path / "d.npz", x=digits["x"], y=y)
    (tmp_path / "mlp.onnx").write_bytes(digits["mlp"].read_bytes())
    with pytest.raises(ClaimError, match=r"label 12 of sample 3 is outside the model's outputs 0..9"):
        load_claim(mlp_claim(tmp_path, data="d.npz"))


def test_data_outside_the_clip_range(digits, tmp_path):
    """Samples must lie in the clip range, else the clipped ball would not contain them."""
    x = digits["x"].copy()
    x[2, 0, 0] = 1.5
    np.savez(tmp_path / "d.npz", x=x, y=digits["y"])
    (tmp_path / "mlp.onnx").write_bytes(digits["mlp"].read_bytes())
    with pytest.raises(ClaimError, match=r"sample 2 has values in \[0, 1.5\], outside clip \[0, 1\]"):
        load_claim(mlp_claim(tmp_path, data="d.npz"))


@pytest.mark.parametrize("what", ["model", "data", "claim"])
def test_unreadable_files(what, digits, tmp_path):
    """Garbage in place of the model, the data or the claim itself: a one-line ClaimError."""
    (tmp_path / "mlp.onnx").write_bytes(digits["mlp"].read_bytes())
    (tmp_path / "digits.npz").write_bytes(digits["data"].read_bytes())
    path = mlp_claim(tmp_path)
    target = {"model": tmp_path / "mlp.onnx", "data": tmp_path / "digits.npz", "claim": path}[what]
    target.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ClaimError) as err:
        load_claim(path)
    assert {"model": "mlp.onnx", "data": "not a readable .npz", "claim": "cannot read it"}[what] in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_claim_file(tmp_path):
    """A claim path that does not exist."""
    with pytest.raises(ClaimError, match="cannot read it"):
        load_claim(tmp_path / "absent.json")


def test_cli_refuses_a_bad_claim_before_any_job(digits, tmp_path, capsys):
    """Exit code 2, one line on stderr, and nothing written to the output folder."""
    path = mlp_claim(digits["folder"], "cli-bad.json", eps=-1)
    out = tmp_path / "out"
    assert cli(["audit", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("nnverify: error: eps must be >= 0")
    assert not out.exists()


def test_good_claim_loads(digits):
    """Defaults and resolution: eps list, one claim per eps, model facts, samples reshaped later."""
    claim = load_claim(mlp_claim(digits["folder"], "good.json", eps=[0.01, 0.02], claimed_certified_accuracy=0.7))
    assert claim.eps == (0.01, 0.02) and claim.claimed_certified_accuracy == (0.7, 0.7)
    assert claim.input_shape == (64,) and claim.n_outputs == 10 and claim.sample_shape == (8, 8)
    assert claim.n_samples == len(digits["y"]) and claim.model == digits["mlp"].resolve()
    assert len(claim.model_sha256) == 64 and claim.written["eps"] == [0.01, 0.02]


def test_folder_dataset_with_labels_file(tmp_path):
    """A folder of .npy samples in natural order, labels from labels.npy."""
    for i in (0, 1, 2, 10):
        np.save(tmp_path / f"s{i}.npy", np.full((2, 2), i, np.float32))
    np.save(tmp_path / "labels.npy", np.array([3, 1, 4, 1]))
    x, y = load_dataset(tmp_path)
    assert x[:, 0, 0].tolist() == [0, 1, 2, 10] and y.tolist() == [3, 1, 4, 1]


def test_folder_dataset_with_labels_in_names(tmp_path):
    """Without labels.npy, <anything>_<label>.npy; a file without a label is an error."""
    for i, label in enumerate([7, 2, 9]):
        np.save(tmp_path / f"{i:03d}_{label}.npy", np.full(3, i, np.float64))
    x, y = load_dataset(tmp_path)
    assert x[:, 0].tolist() == [0, 1, 2] and y.tolist() == [7, 2, 9]
    np.save(tmp_path / "stray.npy", np.zeros(3))
    with pytest.raises(ValueError, match="stray.npy is not named <anything>_<label>.npy"):
        load_dataset(tmp_path)


def test_folder_dataset_claim(digits, tmp_path):
    """A claim over a folder dataset loads and reshapes 8x8 samples for the 64-input model."""
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(5):
        np.save(folder / f"{i}_{int(digits['y'][i])}.npy", digits["x"][i])
    (tmp_path / "mlp.onnx").write_bytes(digits["mlp"].read_bytes())
    claim = load_claim(mlp_claim(tmp_path, data="samples"))
    assert claim.n_samples == 5 and claim.y.tolist() == digits["y"][:5].tolist()


def test_claim_json_must_be_an_object(tmp_path):
    """A JSON list is not a claim."""
    (tmp_path / "c.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ClaimError, match="a claim is a JSON object"):
        load_claim(tmp_path / "c.json")


def test_required_fields(tmp_path):
    """The required fields are named when absent."""
    path = write_claim(tmp_path, model="m.onnx", eps=0.1)
    with pytest.raises(ClaimError, match="lacks required field\\(s\\): data, claimed_certified_accuracy"):
        load_claim(path)
