"""VNN-LIB 2.0 queries decided end to end on tiny networks with known answers.

Truth comes from the exact pattern-enumeration oracle (tests/exact/milp_oracle.py) run on the
compiled graph, or from the construction (monotone weights, linear networks).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exact"))
from milp_oracle import brute_force_min  # noqa: E402
from query_nets import box, mlp, query, random_layers, two_inputs  # noqa: E402

from verifier.config import VerifyConfig
from verifier.query import QueryError, check_query, compile_files, confirm, verify_query, witness_lines
from verifier.query.elimination import InconsistentEqualities, eliminate
from verifier.result import Verdict

F = "(declare-network f (declare-input X real [1,3]) (declare-output Y real [1,2]))"
CFG = VerifyConfig(timeout=30)
IDX3 = ["0,0", "0,1", "0,2"]


def run(tmp_path, text: str, nets: dict, config=CFG, **kw):
    """verify_query on ``text``; every holds with a certificate is re-checked from the files (and fails when tampered)."""
    path = tmp_path / "q.vnnlib"
    path.write_text(text)
    result, compiled = verify_query(path, nets, config, **kw)
    if result.verdict is Verdict.HOLDS and result.certificate is not None:
        cert = tmp_path / "cert-any.json"
        cert.write_text(json.dumps(result.certificate))
        assert check_query(path, nets, cert, float_as_real=kw.get("float_as_real", False)).ok
        tampered = json.loads(cert.read_text())
        tampered["spec_sha256"] = "0" * 64
        cert.write_text(json.dumps(tampered))
        assert not check_query(path, nets, cert, float_as_real=kw.get("float_as_real", False)).ok
    return result, compiled, path


def oracle_min(compiled) -> float:
    """Exact min over every region/polytope of max_i (A_i y - b_i) on the compiled graph (<= 0: violated)."""
    g = compiled.model.graph
    return min(brute_force_min(g, r.lower, r.upper, p.A, p.b) for r in compiled.spec.regions for p in r.unsafe)


def assert_witness(result, compiled):
    """A violated answer's witness: exact re-check passes and onnxruntime agrees with the printed outputs."""
    cex = result.counterexample
    assert confirm(compiled, cex.x, cex.y)
    lines = witness_lines(compiled, cex.x, cex.y)
    names = [line.split("=")[0] for line in lines]
    expected = [d.element(i) for d in compiled.query.declarations for i in range(d.size)]
    assert names == expected
    return dict((k, float(v)) for k, v in (line.split("=") for line in lines))


def test_elimination_is_exact_and_finds_contradictions():
    from fractions import Fraction as Fr

    # u2 == u0 + 1/10, u3 == u2 - u1  ->  u3 == u0 - u1 + 1/10
    pivots = eliminate(4, [{2: Fr(1), 0: Fr(-1), -1: Fr(-1, 10)}, {3: Fr(1), 2: Fr(-1), 1: Fr(1), -1: Fr(0)}])
    assert pivots[2] == {0: 1, -1: Fr(1, 10)} and pivots[3] == {0: 1, 1: -1, -1: Fr(1, 10)}
    with pytest.raises(InconsistentEqualities):
        eliminate(2, [{1: Fr(1), 0: Fr(-1), -1: Fr(0)}, {1: Fr(1), 0: Fr(-1), -1: Fr(1)}])


@pytest.mark.parametrize("threshold", [2.0, -2.0])
def test_single_network_box_matches_the_oracle(tmp_path, threshold):
    rng = np.random.default_rng(1)
    model = mlp(tmp_path / "f.onnx", random_layers(rng, [3, 8, 2]), 3)
    text = query(F, box("X", IDX3, -1.0, 1.0), f"(>= (- Y[0,0] Y[0,1]) {threshold!r})")
    result, compiled, path = run(tmp_path, text, {"f": model})
    truth = oracle_min(compiled)
    assert result.verdict is (Verdict.VIOLATED if truth <= 0 else Verdict.HOLDS), (truth, result.reason)
    if result.verdict is Verdict.HOLDS:
        cert = tmp_path / "cert.json"
        cert.write_text(json.dumps(result.certificate))
        assert result.certificate["query"]["version"] == "2.0"
        assert check_query(path, {"f": model}, cert).ok
        bad = dict(result.certificate, query={"version": "1.0"})
        cert.write_text(json.dumps(bad))
        assert not check_query(path, {"f": model}, cert).ok
    else:
        values = assert_witness(result, compiled)
        x = np.array([[values[f"X[{i}]"] for i in IDX3]], dtype=np.float32)
        y = ort.InferenceSession(model).run(None, {"x": x})[0][0]
        assert y[0] - y[1] >= threshold and np.all(np.abs(x) <= 1)


def test_hidden_node_constraint(tmp_path):
    """Asking for h0[0] >= c: the hidden ReLU's exact max over the box decides it."""
    rng = np.random.default_rng(2)
    layers = random_layers(rng, [3, 4, 2])
    model = mlp(tmp_path / "f.onnx", layers, 3)
    W, b = layers[0]
    top = float(np.abs(W[0]).sum() + b[0])          # max of W0 x + b0 over [-1, 1]^3
    net = "(declare-network f (declare-input X real [1,3]) (declare-hidden H real [1,4] \"h0\") (declare-output Y real [1,2]))"
    for c, want in ((top + 0.05, Verdict.HOLDS), (top - 0.05, Verdict.VIOLATED)):
        result, compiled, _ = run(tmp_path, query(net, box("X", IDX3, -1.0, 1.0), f"(>= H[0,0] {c!r})"), {"f": model})
        assert result.verdict is want, result.reason
        if want is Verdict.VIOLATED:
            assert assert_witness(result, compiled)["H[0,0]"] >= c


def test_two_onnx_inputs(tmp_path):
    rng = np.random.default_rng(3)
    model = two_inputs(tmp_path / "t.onnx", rng.normal(size=(5, 2)), rng.normal(size=(5, 3)), rng.normal(size=5) * 0.1)
    net = "(declare-network f (declare-input A real [1,2]) (declare-input B real [1,3]) (declare-output Y real [1,1]))"
    bounds = [box("A", ["0,0", "0,1"], -1.0, 1.0), box("B", IDX3, 0.0, 0.5)]
    result, compiled, _ = run(tmp_path, query(net, *bounds, "(>= Y[0,0] 0.0)"), {"f": model})
    assert compiled.spec.n_inputs == 5
    truth = oracle_min(compiled)
    assert result.verdict is (Verdict.VIOLATED if truth <= 0 else Verdict.HOLDS)
    result, compiled, _ = run(tmp_path, query(net, *bounds, "(>= Y[0,0] 100.0)"), {"f": model})
    assert result.verdict is Verdict.HOLDS and result.certificate_checked


def _monotone_layers(rng, sign: float):
    """Output 0 increases with input 0 (sign +1: non-negative weights along that path) or not."""
    W1 = np.abs(rng.normal(size=(6, 3)))
    W2 = np.abs(rng.normal(size=(2, 6)))
    W1[:, 0] *= sign
    return [(W1, rng.normal(size=6) * 0.1), (W2, rng.normal(size=2) * 0.1)]


MONO_NETS = ("(declare-network f (declare-input X real [1,3]) (declare-output Y real [1,2]))"
             "(declare-network g (equal-to f) (declare-input X2 real [1,3]) (declare-output Y2 real [1,2]))")
MONO = [box("X", IDX3, -1.0, 1.0), "(and (== X2[0,1] X[0,1]) (== X2[0,2] X[0,2]) (>= X2[0,0] X[0,0]) (<= X2[0,0] 1.0))",
        "(< Y2[0,0] (- Y[0,0] 0.3))"]


@pytest.mark.parametrize("sign, want", [(1.0, Verdict.HOLDS), (-1.0, Verdict.VIOLATED)])
def test_monotonicity_over_two_copies_of_one_network(tmp_path, sign, want):
    model = mlp(tmp_path / "f.onnx", _monotone_layers(np.random.default_rng(4), sign), 3)
    result, compiled, _ = run(tmp_path, query(MONO_NETS, *MONO), {"f": model})
    assert compiled.spec.n_inputs == 4                    # X (3) + the free X2[0,0]; X2[0,1:] eliminated
    assert result.verdict is want, result.reason
    if want is Verdict.VIOLATED:
        v = assert_witness(result, compiled)
        assert v["X2[0,1]"] == v["X[0,1]"] and v["X2[0,0]"] >= v["X[0,0]"] and v["Y2[0,0]"] < v["Y[0,0]"] - 0.3


@pytest.mark.parametrize("gap, want", [(0.5, Verdict.HOLDS), (0.001, Verdict.VIOLATED)])
def test_equivalence_of_slightly_different_networks(tmp_path, gap, want):
    rng = np.random.default_rng(5)
    layers = random_layers(rng, [3, 5, 2])
    f = mlp(tmp_path / "f.onnx", layers, 3)
    g = mlp(tmp_path / "g.onnx", [(W + 0.01, b) for W, b in layers], 3)
    nets = ("(declare-network f (declare-input X real [1,3]) (declare-output Y real [1,2]))"
            "(declare-network g (isomorphic-to f) (declare-input X2 real [1,3]) (declare-output Y2 real [1,2]))")
    text = query(nets, box("X", IDX3, -1.0, 1.0), "(and (== X2[0,0] X[0,0]) (== X2[0,1] X[0,1]) (== X2[0,2] X[0,2]))",
                 f"(or (>= (- Y[0,0] Y2[0,0]) {gap!r}) (<= (- Y[0,0] Y2[0,0]) {-gap!r}))")
    result, compiled, _ = run(tmp_path, text, {"f": f, "g": g})
    assert compiled.spec.n_inputs == 3
    truth = oracle_min(compiled)
    assert (truth <= 0) == (want is Verdict.VIOLATED)
    assert result.verdict is want, result.reason
    if want is Verdict.VIOLATED:
        v = assert_witness(result, compiled)
        assert abs(v["Y[0,0]"] - v["Y2[0,0]"]) >= gap


@pytest.mark.parametrize("c, want", [(0.6, Verdict.HOLDS), (0.4, Verdict.VIOLATED)])
def test_linear_input_constraint_that_is_not_a_box(tmp_path, c, want):
    """y = x0 + x1 under x0 + x1 <= 0.5 (x in [0, 1]^2): y >= c is violated iff c <= 0.5."""
    model = mlp(tmp_path / "s.onnx", [(np.array([[1.0, 1.0]]), np.zeros(1))], 2)
    net = "(declare-network f (declare-input X real [1,2]) (declare-output Y real [1,1]))"
    text = query(net, box("X", ["0,0", "0,1"], 0.0, 1.0), "(<= (+ X[0,0] X[0,1]) 0.5)", f"(>= Y[0,0] {c!r})")
    result, compiled, _ = run(tmp_path, text, {"f": model})
    assert result.verdict is want, result.reason
    if want is Verdict.VIOLATED:
        v = assert_witness(result, compiled)
        assert v["X[0,0]"] + v["X[0,1]"] <= 0.5


@pytest.mark.parametrize("c, want", [(1.1, Verdict.HOLDS), (0.81, Verdict.VIOLATED)])
def test_product_of_variables(tmp_path, c, want):
    """y = x0 on [0, 1]: y * x0 = x0^2 reaches c iff c <= 1."""
    model = mlp(tmp_path / "i.onnx", [(np.array([[1.0, 0.0]]), np.zeros(1))], 2)
    net = "(declare-network f (declare-input X real [1,2]) (declare-output Y real [1,1]))"
    text = query(net, box("X", ["0,0", "0,1"], 0.0, 1.0), f"(>= (* Y[0,0] X[0,0]) {c!r})")
    result, compiled, _ = run(tmp_path, text, {"f": model})
    assert result.verdict is want, result.reason
    if want is Verdict.VIOLATED:
        v = assert_witness(result, compiled)
        assert v["Y[0,0]"] * v["X[0,0]"] >= c


def test_strict_constraint_never_reports_a_boundary_witness(tmp_path):
    """y = x0 on [0, 1]: y < 0 has no solution; the closed relaxation touches y = 0 only."""
    model = mlp(tmp_path / "i.onnx", [(np.array([[1.0, 0.0]]), np.zeros(1))], 2)
    net = "(declare-network f (declare-input X real [1,2]) (declare-output Y real [1,1]))"
    for assertion in ("(< Y[0,0] 0.0)", "(!= X[0,0] X[0,0])"):
        result, _, _ = run(tmp_path, query(net, box("X", ["0,0", "0,1"], 0.0, 1.0), assertion), {"f": model},
                           VerifyConfig(timeout=3))
        assert result.verdict is not Verdict.VIOLATED, result.reason


@pytest.mark.parametrize("net, files, needle", [
    ("(declare-network f (declare-input X real [1,4]) (declare-output Y real [1,2]))", {"f": "F"}, "declared [1, 4]"),
    ("(declare-network f (declare-input X real [1,3]) (declare-input Z real [1,3]) (declare-output Y real [1,2]))",
     {"f": "F"}, "declares 2 input(s)"),
    (F, {}, "no ONNX file for network f"),
    (F, {"f": "F", "g": "F"}, "does not declare"),
    ("(declare-network f (declare-input X float16 [1,3]) (declare-output Y float16 [1,2]))", {"f": "F"}, "float16"),
    ("(declare-network f (declare-input X float32 [1,3]) (declare-output Y float32 [1,2]))", {"f": "F"}, "--float-as-real"),
    ("(declare-network f (declare-input X real [1,3]) (declare-hidden H real [1,8] \"nope\") (declare-output Y real [1,2]))",
     {"f": "F"}, "nope"),
])
def test_bad_bindings_are_clear_errors(tmp_path, net, files, needle):
    model = mlp(tmp_path / "f.onnx", random_layers(np.random.default_rng(6), [3, 8, 2]), 3)
    path = tmp_path / "q.vnnlib"
    path.write_text(query(net, box("X", IDX3, -1.0, 1.0), "(>= Y[0,0] 0.0)"))
    with pytest.raises(QueryError) as info:
        compile_files(path, {k: model for k in files})
    assert needle in str(info.value)
    result, _ = verify_query(path, {k: model for k in files}, CFG)
    assert result.verdict is Verdict.ERROR and needle in result.reason


def test_float32_declarations_with_float_as_real(tmp_path):
    model = mlp(tmp_path / "f.onnx", random_layers(np.random.default_rng(7), [3, 8, 2]), 3)
    net = "(declare-network f (declare-input X float32 [1,3]) (declare-output Y float32 [1,2]))"
    result, _, _ = run(tmp_path, query(net, box("X", IDX3, -1.0, 1.0), "(>= Y[0,0] 100.0)"), {"f": model},
                       float_as_real=True)
    assert result.verdict is Verdict.HOLDS


def test_unbounded_input_is_refused(tmp_path):
    model = mlp(tmp_path / "f.onnx", random_layers(np.random.default_rng(8), [3, 8, 2]), 3)
    path = tmp_path / "q.vnnlib"
    path.write_text(query(F, box("X", ["0,0", "0,1"], -1.0, 1.0), "(>= Y[0,0] 0.0)"))
    with pytest.raises(QueryError, match=r"X\[0,2\] has no finite bound"):
        compile_files(path, {"f": model})


def test_verify_takes_a_one_network_query_in_place_of_a_spec(tmp_path):
    """``verify(model, query)`` (the service's path) compiles a 2.0 query bound to the model; the certificate says so."""
    from verifier.portfolio import verify

    rng = np.random.default_rng(9)
    model = mlp(tmp_path / "f.onnx", random_layers(rng, [3, 8, 2]), 3)
    path = tmp_path / "q.vnnlib"
    path.write_text(query(F, box("X", IDX3, -1.0, 1.0), "(>= Y[0,0] 100.0)"))
    result = verify(model, path, CFG)
    assert result.verdict is Verdict.HOLDS and result.certificate["query"]["version"] == "2.0"
    cert = tmp_path / "cert.json"
    cert.write_text(json.dumps(result.certificate))
    assert check_query(path, {"f": model}, cert).ok
    two = tmp_path / "two.vnnlib"
    two.write_text(query(MONO_NETS.replace("(equal-to f)", ""), box("X", IDX3, -1.0, 1.0), "(>= Y[0,0] 100.0)"))
    result = verify(model, two, CFG)
    assert result.verdict is Verdict.ERROR and "bind each one" in result.reason
