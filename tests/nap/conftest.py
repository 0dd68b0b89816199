"""A digits MLP (64-64-64-10, trained here in seconds) and its mined NAPs, shared by the NAP tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import digits, train_mlp, write_onnx  # noqa: E402


@pytest.fixture(scope="session")
def digits_net(tmp_path_factory):
    """(ONNX path, linear layers) of an MLP trained on the digits' training split."""
    x, y, _, _ = digits()
    layers = train_mlp(x, y, hidden=(64, 64), epochs=200)
    return write_onnx(layers, tmp_path_factory.mktemp("nap") / "digits_mlp.onnx"), layers


@pytest.fixture(scope="session")
def naps(digits_net):
    """The NAPs file (dict) mined at delta 0.99, scored on the held-out split."""
    from verifier.nap import mine

    x, y, x_te, y_te = digits()
    return mine(str(digits_net[0]), x, y, 0.99, heldout=(x_te, y_te))
