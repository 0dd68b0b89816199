"""`nnverify explain`: writes explain.json and explain.png; bad input is one line, exit 2, nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest
from digits import TRIGGER, digits, with_trigger

from verifier.cli import main


@pytest.fixture(scope="module")
def input_file(tmp_path_factory):
    """A triggered held-out 7 as .npy (shape 8 x 8: any shape with the model's size is accepted)."""
    _, _, x_te, y_te = digits()
    path = tmp_path_factory.mktemp("explain_cli") / "x.npy"
    np.save(path, with_trigger(x_te[y_te == 7][:1])[0].reshape(8, 8))
    return path


def test_explain_writes_json_and_png(trigger_net, input_file, tmp_path):
    """The map lands in --out; the trigger patch ranks first."""
    out = tmp_path / "map"
    argv = ["explain", str(trigger_net[0]), str(input_file), "--label", "0", "--patch", "2", "--eps", "1",
            "--clip", "0", "1", "--grid", "8", "8", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "explain.json").read_text())
    assert doc["label"] == 0 and doc["eps"] == 1.0 and doc["clip"] == [0.0, 1.0]
    assert sorted(doc["patches"][doc["ranking"][0]]["indices"]) == sorted(TRIGGER)
    assert (out / "explain.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("change,message", [
    ({"--label": "10"}, "label 10 is out of range"),
    ({"--patch": "9"}, "larger than the input"),
    ({"--grid": ["4", "4"]}, "does not fit"),
    ({"input": "small"}, "the input has 60 values, the model takes 64"),
])
def test_bad_input_is_one_line_and_writes_nothing(trigger_net, input_file, tmp_path, capsys, change, message):
    """Label out of range, patch larger than the input, wrong grid, wrong input size: exit 2, no output dir."""
    out = tmp_path / "map"
    small = tmp_path / "small.npy"
    np.save(small, np.zeros(60))
    opts = {"--label": "0", "--patch": "2", "--eps": "0.5", "--grid": ["8", "8"]}
    opts.update({k: v for k, v in change.items() if k != "input"})
    argv = ["explain", str(trigger_net[0]), str(small if "input" in change else input_file), "--out", str(out)]
    for k, v in opts.items():
        argv += [k, *v] if isinstance(v, list) else [k, v]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()
