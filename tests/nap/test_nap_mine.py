"""NAP mining on the digits: held-out recall, the file format, layer selection, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from digits import digits

from verifier.certificate import sha256_file
from verifier.nap import NapError, load_naps, mine, save_naps
from verifier.nap.pattern import as_model, forward, matches


def test_mined_naps_reach_recall_on_heldout_digits(naps):
    """Every class's NAP matches >= 80% of its held-out samples (the acceptance figure)."""
    recalls = [e["recall"] for e in naps["classes"]]
    assert len(recalls) == 10
    assert min(recalls) >= 0.8, recalls
    assert naps["summary"]["mean_recall"] >= 0.8


def test_recall_and_precision_are_what_they_say(digits_net, naps):
    """Recomputed from the activations of the held-out split, the file's figures agree."""
    _, _, x_te, y_te = digits()
    doc, table = load_naps(naps, str(digits_net[0]))
    logits, pre = forward(as_model(str(digits_net[0])).graph, x_te, doc["layers"])
    for entry in naps["classes"]:
        c = entry["label"]
        hit = matches(table[c], pre)
        assert entry["recall"] == pytest.approx(hit[y_te == c].mean())
        assert entry["precision"] == pytest.approx((y_te[hit] == c).mean())
        assert entry["size"] == table[c].size > 0


def test_nap_states_hold_for_delta_of_the_class(digits_net, naps):
    """Each fixed neuron is in its state for >= delta of the class's training samples, and no neuron is both."""
    x, y, _, _ = digits()
    _, table = load_naps(naps, str(digits_net[0]))
    _, pre = forward(as_model(str(digits_net[0])).graph, x, naps["layers"])
    for c, nap in table.items():
        for node, index, sign in nap.constraints():
            z = pre[node][y == c, index]
            share = (z > 0).mean() if sign > 0 else (z <= 0).mean()
            assert share >= 0.99
        assert len({(n, k) for n, k, _ in nap.constraints()}) == nap.size


def test_file_names_the_model_and_round_trips(digits_net, naps, tmp_path):
    """The file carries the model's sha256 and reloads unchanged."""
    assert naps["model_sha256"] == sha256_file(digits_net[0])
    save_naps(naps, tmp_path / "naps.json")
    doc, table = load_naps(tmp_path / "naps.json", str(digits_net[0]))
    assert doc == json.loads(json.dumps(naps))
    assert sorted(table) == list(range(10))


def test_layers_by_name_or_position(digits_net):
    """--layers takes relu node names or positions; only those layers enter the NAPs."""
    x, y, x_te, y_te = digits()
    by_pos = mine(str(digits_net[0]), x, y, 0.99, layers=["1"], heldout=(x_te, y_te))
    by_name = mine(str(digits_net[0]), x, y, 0.99, layers=["relu1"], heldout=(x_te, y_te))
    assert by_pos["layers"] == by_name["layers"] == ["relu1"]
    assert all(set(e["on"]) | set(e["off"]) <= {"relu1"} for e in by_pos["classes"])
    with pytest.raises(NapError, match="not a ReLU layer"):
        mine(str(digits_net[0]), x, y, 0.99, layers=["logits"])


def test_holdout_split_without_test_data(digits_net):
    """Without held-out data a stratified share is set aside and not mined."""
    x, y, _, _ = digits()
    naps = mine(str(digits_net[0]), x, y, 0.99, holdout=0.25)
    assert naps["heldout"] == pytest.approx(0.25 * len(x), abs=10)
    assert naps["train"] + naps["heldout"] == len(x)


def test_bad_mining_input(digits_net):
    """Wrong sample size, labels out of range, delta out of range: one-line NapErrors."""
    x, y, _, _ = digits()
    path = str(digits_net[0])
    with pytest.raises(NapError, match="model takes 64 inputs"):
        mine(path, x[:, :60], y)
    with pytest.raises(NapError, match="out of range"):
        mine(path, x, np.where(y == 3, 10, y))
    with pytest.raises(NapError, match="delta"):
        mine(path, x, y, delta=0.4)
    with pytest.raises(NapError, match="labels"):
        mine(path, x, y[:-1])


def test_nap_file_for_another_model_is_refused(digits_net, naps, tmp_path):
    """A NAP file whose model sha256 differs is an error naming the mismatch."""
    from digits import train_mlp, write_onnx

    x, y, _, _ = digits()
    other = write_onnx(train_mlp(x, y, hidden=(64, 64), epochs=5, seed=1), tmp_path / "other.onnx")
    with pytest.raises(NapError, match="another model"):
        load_naps(naps, str(other))
