"""`nnverify nap mine` and `nap verify`: files written, reports read back, one-line errors with nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest
from digits import digits, train_mlp, write_onnx

from verifier.cli import main


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """The digits as an .npz with a held-out split."""
    x, y, x_te, y_te = digits()
    path = tmp_path_factory.mktemp("cli") / "digits.npz"
    np.savez(path, x=x, y=y, x_test=x_te, y_test=y_te)
    return path


def _error(capsys, argv, *unwritten):
    """Run a command that must fail: exit status 2, one stderr line, none of ``unwritten`` created."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnverify: error:")
    assert not any(p.exists() for p in unwritten)
    return err[0]


def test_mine_then_verify(digits_net, data_file, tmp_path):
    """mine writes the NAPs file; verify --class with an eps-ball writes a report with a checked certificate."""
    naps = tmp_path / "naps.json"
    assert main(["nap", "mine", str(digits_net[0]), str(data_file), "--delta", "0.99", "--out", str(naps)]) == 0
    doc = json.loads(naps.read_text())
    assert doc["summary"]["mean_recall"] >= 0.8 and len(doc["classes"]) == 10
    _, _, x_te, y_te = digits()
    point = tmp_path / "x.npy"
    np.save(point, x_te[y_te == 0][0])
    report = tmp_path / "report.json"
    argv = ["nap", "verify", str(digits_net[0]), str(naps), "--class", "0", "--eps", "0.01", "--point", str(point),
            "--pair", "0", "1", "--timeout", "60", "--out", str(report)]
    assert main(argv) == 0
    rep = json.loads(report.read_text())
    (res,) = rep["classes"]
    assert res["label"] == 0 and res["verdict"] == "holds" and res["certificate_checked"]
    (amb,) = rep["non_ambiguity"]
    assert amb["labels"] == [0, 1] and amb["verdict"] in ("holds", "violated")


def test_mine_layers_option(digits_net, data_file, tmp_path):
    """--layers restricts the NAPs to the named layers."""
    out = tmp_path / "naps.json"
    assert main(["nap", "mine", str(digits_net[0]), str(data_file), "--layers", "relu0", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["layers"] == ["relu0"]


def test_mine_bad_input(digits_net, data_file, tmp_path, capsys):
    """Samples of the wrong size, labels out of range, missing arrays: exit 2, no NAP file."""
    x, y, _, _ = digits()
    out = tmp_path / "naps.json"
    small = tmp_path / "small.npz"
    np.savez(small, x=x[:, :32], y=y)
    assert "model takes 64 inputs" in _error(capsys, ["nap", "mine", digits_net[0], small, "--out", out], out)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x, y=y + 5)
    assert "out of range" in _error(capsys, ["nap", "mine", digits_net[0], bad, "--out", out], out)
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=x)
    assert "needs arrays x and y" in _error(capsys, ["nap", "mine", digits_net[0], empty, "--out", out], out)


def test_verify_bad_input(digits_net, naps, tmp_path, capsys):
    """A NAP file of another model, a class out of range, a point of the wrong size: exit 2, no report."""
    x, y, _, _ = digits()
    naps_file = tmp_path / "naps.json"
    naps_file.write_text(json.dumps(naps))
    report = tmp_path / "report.json"
    other = write_onnx(train_mlp(x, y, hidden=(64, 64), epochs=5, seed=3), tmp_path / "other.onnx")
    msg = _error(capsys, ["nap", "verify", other, naps_file, "--out", report], report)
    assert "another model" in msg
    msg = _error(capsys, ["nap", "verify", digits_net[0], naps_file, "--class", "10", "--out", report], report)
    assert "no pattern for class 10" in msg
    point = tmp_path / "p.npy"
    np.save(point, np.zeros(10))
    msg = _error(capsys, ["nap", "verify", digits_net[0], naps_file, "--class", "1", "--eps", "0.1", "--point", point,
                          "--out", report], report)
    assert "model takes 64 inputs" in msg
