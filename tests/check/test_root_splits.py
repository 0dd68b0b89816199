"""Proofs over a root domain that already carries ReLU splits (an activation pattern): relu_split
searches under them, the certificate records them, and the checker accepts exactly the property's."""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from verifier.bounds import BoundEngine
from verifier.certify import to_certificate
from verifier.check import check
from verifier.config import BabConfig
from verifier.search.relu_split import relu_split
from verifier.spec.spec import Polytope, Region, Spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exact"))
from milp_nets import mlp  # noqa: E402

THRESHOLD = -0.40   # below the least sampled y0 - y1 under the pattern (-0.337), above CROWN's root bound (-0.915)


@pytest.fixture(scope="module")
def proof():
    """A 6-12-12-3 net, a box, the activation pattern of six act0 neurons at its centre, and the search's proof."""
    g = mlp(0, 6, (12, 12), 3)
    x0 = np.random.default_rng(0).uniform(-0.5, 0.5, 6)
    lo, hi = x0 - 0.4, x0 + 0.4
    z = g.forward(torch.as_tensor(x0, dtype=torch.float32)[None], keep=True)["fc0"][0].numpy()
    signs = np.where(z > 0, 1, -1).astype(np.int8)
    signs[6:] = 0
    c = np.array([[1.0, -1.0, 0.0]])
    out = relu_split(BoundEngine(g), g, lo, hi, c, np.array([THRESHOLD]), lambda x: None, time.monotonic() + 60,
                     BabConfig(), root_splits={"act0": signs})
    spec = Spec(6, 3, (Region(lo, hi, (Polytope(c, np.array([THRESHOLD])),)),))   # unsafe: y0 - y1 <= t
    fixed = [("act0", int(k), int(signs[k])) for k in range(6)]
    return g, spec, signs, out, fixed


def test_search_proves_under_fixed_splits_with_branching(proof):
    """The search holds after splitting further (more than one leaf); the log lists the fixed splits."""
    _, _, _, out, fixed = proof
    assert out.status == "holds", out.stats
    assert len(out.log.leaves) > 1
    assert sorted(out.log.root) == sorted(fixed)


def test_property_is_true_by_sampling(proof):
    """Thousands of box points (corners too) that satisfy the fixed splits have y0 - y1 > THRESHOLD."""
    g, spec, signs, _, _ = proof
    lo, hi = spec.regions[0].lower, spec.regions[0].upper
    rng = np.random.default_rng(1)
    xs = np.concatenate([lo + (hi - lo) * rng.random((20000, 6)), np.where(rng.random((2000, 6)) < 0.5, lo, hi)])
    v = g.to(dtype=torch.float64).forward(torch.as_tensor(xs), keep=True)
    ok = np.all(v["fc0"].numpy()[:, :6] * signs[:6] >= 0, axis=1)
    y = v["out"].numpy()
    assert ok.sum() > 5000
    assert np.all(y[ok, 0] - y[ok, 1] > THRESHOLD)


def _cert(g, out):
    return to_certificate("m", "s", [(0, 0, out.log.tree())], out.log.root)


def test_checker_accepts_the_property_fixed_splits(proof):
    """The certificate with its root splits passes the independent checker told the same fixed splits."""
    g, spec, _, out, fixed = proof
    cert = _cert(g, out)
    assert len(cert["proofs"][0]["splits"]) == 6
    report = check(g, spec, cert, "m", "s", fixed=fixed)
    assert report.ok, report.reasons
    assert report.leaves == len(out.log.leaves)


@pytest.mark.parametrize("tamper", ["flip", "drop", "add", "duplicate", "bad_sign"])
def test_tampered_root_split_is_rejected(proof, tamper):
    """A root split flipped, dropped, added, repeated or with a sign other than +-1 is rejected."""
    g, spec, _, out, fixed = proof
    cert = _cert(g, out)
    splits = cert["proofs"][0]["splits"]
    if tamper == "flip":
        splits[2]["sign"] = -splits[2]["sign"]
    elif tamper == "drop":
        splits.pop(0)
    elif tamper == "add":
        splits.append({"node": "act0", "index": 9, "sign": 1})
    elif tamper == "duplicate":
        splits.append(dict(splits[0]))
    else:
        splits[0]["sign"] = 0
    report = check(g, spec, cert, "m", "s", fixed=fixed)
    assert not report.ok


def test_splits_must_match_what_the_property_says(proof):
    """Root splits without fixed ones in the property, or none where the property has some: rejected."""
    g, spec, _, out, fixed = proof
    cert = _cert(g, out)
    assert not check(g, spec, cert, "m", "s").ok                       # would prove a weaker property
    bare = copy.deepcopy(cert)
    del bare["proofs"][0]["splits"]
    report = check(g, spec, bare, "m", "s", fixed=fixed)
    assert not report.ok and "root splits differ" in report.reasons[0]
