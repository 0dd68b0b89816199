"""NAP properties end to end on the digits MLP: holds with a checked certificate, a wrong property
falsified with an onnxruntime-confirmed witness, non-ambiguity decided, and sampling soundness."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from digits import digits
from onnx import TensorProto, helper

from verifier.nap import NapError, check_certificate, load_naps, non_ambiguity, verify_nap
from verifier.nap.pattern import as_model, forward, matches

EPS = 0.08


def ort_run(path, x):
    """Independent re-execution: onnxruntime on the ONNX file with relu0 / relu1 added as outputs."""
    model = onnx.load(str(path))
    for name in ("relu0", "relu1"):
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, r0, r1 = sess.run(["logits", "relu0", "relu1"], {"input": np.asarray(x, np.float32).reshape(1, -1)})
    return logits[0].astype(np.float64), {"relu0": r0[0], "relu1": r1[0]}


def ort_matches(relu, nap) -> bool:
    """Every on neuron has a ReLU output > 0, every off neuron exactly 0."""
    return all((relu[n][k] > 0) if s > 0 else (relu[n][k] == 0) for n, k, s in nap.constraints())


def anchor(path, naps, label):
    """The held-out sample of ``label`` with the largest margin among those matching NAP_label."""
    _, _, x_te, y_te = digits()
    _, table = load_naps(naps, str(path))
    logits, pre = forward(as_model(str(path)).graph, x_te, naps["layers"])
    top2 = np.sort(logits, 1)[:, -2]
    ok = (y_te == label) & matches(table[label], pre) & (logits.argmax(1) == label)
    idx = np.flatnonzero(ok)
    return x_te[idx[np.argmax(logits[idx, label] - top2[idx])]]


@pytest.fixture(scope="module")
def held(digits_net, naps):
    """verify_nap on an eps-ball around a class-6 sample: (result, centre)."""
    x0 = anchor(digits_net[0], naps, 6)
    return verify_nap(str(digits_net[0]), naps, 6, point=x0, eps=EPS, timeout=60), x0


def test_nap_property_holds_with_checked_certificate(digits_net, naps, held):
    """Inputs within EPS of the sample that match NAP_6 are classified 6: holds, certificate re-checked."""
    res, _ = held
    assert res["verdict"] == "holds", res.get("reason")
    assert res["certificate_checked"] is True
    cert = res["certificate"]
    _, table = load_naps(naps, str(digits_net[0]))
    want = {tuple(c) for c in table[6].constraints()}
    for proof in cert["proofs"]:       # the NAP's neurons are every proof's fixed root splits
        assert {(s["node"], s["index"], s["sign"]) for s in proof["splits"]} == want
    again = check_certificate(str(digits_net[0]), res["property"], cert)
    assert again["ok"], again["reasons"]


def test_held_nap_property_is_sound_by_sampling(digits_net, naps, held):
    """Thousands of points of the ball (corners too) that match NAP_6 are all classified 6."""
    res, x0 = held
    _, table = load_naps(naps, str(digits_net[0]))
    lo, hi = np.asarray(res["property"]["lower"]), np.asarray(res["property"]["upper"])
    rng = np.random.default_rng(0)
    xs = np.concatenate([lo + (hi - lo) * rng.random((6000, 64)),
                         np.where(rng.random((4000, 64)) < 0.5, lo, hi)])   # random corners
    logits, pre = forward(as_model(str(digits_net[0])).graph, xs, naps["layers"])
    hit = matches(table[6], pre)
    assert hit.sum() > 1000
    assert np.all(logits[hit].argmax(1) == 6)


@pytest.mark.parametrize("tamper", ["flip", "drop", "add"])
def test_tampered_fixed_split_is_rejected(digits_net, naps, held, tamper):
    """A certificate whose root splits differ from the NAP (sign flipped, one dropped, one added) is rejected."""
    res, _ = held
    cert = copy.deepcopy(res["certificate"])
    splits = cert["proofs"][0]["splits"]
    if tamper == "flip":
        splits[0]["sign"] = -splits[0]["sign"]
    elif tamper == "drop":
        splits.pop()
    else:
        taken = {(s["node"], s["index"]) for s in splits}
        free = next(k for k in range(64) if ("relu1", k) not in taken)
        splits.append({"node": "relu1", "index": free, "sign": 1})
    report = check_certificate(str(digits_net[0]), res["property"], cert)
    assert not report["ok"]
    assert "root splits differ" in " ".join(report["reasons"])


def test_property_with_other_nap_is_rejected(digits_net, naps, held):
    """The certificate names its property by sha256: checking it against another NAP fails."""
    res, _ = held
    prop = copy.deepcopy(res["property"])
    prop["fixed"] = prop["fixed"][1:]
    assert not check_certificate(str(digits_net[0]), prop, res["certificate"])["ok"]


def test_wrong_nap_property_is_falsified_with_confirmed_witness(digits_net, naps):
    """NAP_3 claimed to imply class 5: the witness matches NAP_3, is not classified 5, and onnxruntime agrees."""
    wrong = copy.deepcopy(naps)
    wrong["classes"] = [dict(e, label=5) for e in naps["classes"] if e["label"] == 3]
    res = verify_nap(str(digits_net[0]), wrong, 5, timeout=60)
    assert res["verdict"] == "violated"
    w = res["witness"]
    x = np.asarray(w["x"])
    assert np.all((x >= 0) & (x <= 1))                   # inside the valid input box
    assert np.array_equal(x.astype(np.float32).astype(np.float64), x)
    logits, relu = ort_run(digits_net[0], x)
    _, table = load_naps(naps, str(digits_net[0]))
    assert ort_matches(relu, table[3])
    assert logits.argmax() != 5 and logits[w["violates"]] >= logits[5]
    assert np.allclose(logits, w["logits"])
    assert w["float64_agrees"]


def test_non_ambiguity_is_decided(digits_net, naps):
    """A pair without conflicting neurons: over the whole box a witness matches both NAPs (onnxruntime),
    or no input does (checked certificate); a pair with a conflict holds by the conflicting neuron."""
    _, table = load_naps(naps, str(digits_net[0]))
    sign = {c: {(n, k): s for n, k, s in nap.constraints()} for c, nap in table.items()}
    pairs = [(a, b) for a in range(10) for b in range(a + 1, 10)]
    conflict = lambda a, b: any(sign[b].get(key) == -s for key, s in sign[a].items())  # noqa: E731
    a, b = next(p for p in pairs if not conflict(*p))
    res = non_ambiguity(str(digits_net[0]), naps, a, b, timeout=60)
    assert res["verdict"] in ("holds", "violated"), res.get("reason")
    if res["verdict"] == "violated":
        _, relu = ort_run(digits_net[0], res["witness"]["x"])
        assert ort_matches(relu, table[a]) and ort_matches(relu, table[b])
    else:
        assert res["certificate_checked"] and check_certificate(str(digits_net[0]), res["property"],
                                                                res["certificate"])["ok"]
    c, d = next(p for p in pairs if conflict(*p))
    res = non_ambiguity(str(digits_net[0]), naps, c, d)
    assert res["verdict"] == "holds" and res["method"] == "conflict"
    node, index, s = res["conflicts"][0]
    assert sign[d][(node, index)] == s and sign[c][(node, index)] == -s


def test_non_ambiguity_holds_near_a_sample_with_certificate(digits_net, naps):
    """Around a class-a sample no input matches both NAP_a and a conflict-free NAP_b: proved empty, checked."""
    _, table = load_naps(naps, str(digits_net[0]))
    sign = {c: {(n, k): s for n, k, s in nap.constraints()} for c, nap in table.items()}
    a, b = next((a, b) for a in range(10) for b in range(10) if a != b
                and not any(sign[b].get(key) == -s for key, s in sign[a].items()))
    x0 = anchor(digits_net[0], naps, a)
    res = non_ambiguity(str(digits_net[0]), naps, a, b, point=x0, eps=0.02, timeout=60)
    assert res["verdict"] == "holds", res.get("reason")
    assert res["certificate_checked"]
    assert check_certificate(str(digits_net[0]), res["property"], res["certificate"])["ok"]
    lo, hi = np.asarray(res["property"]["lower"]), np.asarray(res["property"]["upper"])
    xs = lo + (hi - lo) * np.random.default_rng(1).random((5000, 64))
    _, pre = forward(as_model(str(digits_net[0])).graph, xs, naps["layers"])
    assert not np.any(matches(table[a], pre) & matches(table[b], pre))


def test_bad_verify_input(digits_net, naps):
    """Unknown class, a point of the wrong size, eps without a point: NapErrors."""
    path = str(digits_net[0])
    with pytest.raises(NapError, match="no pattern for class 12"):
        verify_nap(path, naps, 12)
    with pytest.raises(NapError, match="model takes 64 inputs"):
        verify_nap(path, naps, 1, point=np.zeros(63), eps=0.1)
    with pytest.raises(NapError, match="point and eps"):
        verify_nap(path, naps, 1, eps=0.1)
