"""Binarized networks -> SAT: verdicts against exhaustive enumeration of input sign patterns."""
import itertools
import random

import numpy as np
import pytest
import torch
from pysat.formula import IDPool
from pysat.solvers import Solver

from verifier.exact.bnn_sat import bnn_reason, recognise_bnn, verify_bnn, verify_bnn_spec
from verifier.exact.cardinality import pb_at_most, reified_at_least, rup_check
from verifier.model.graph import Graph, Node
from verifier.spec.spec import Polytope, Region, Spec


def _pm1(g, shape):
    """Random {-1,+1} float tensor."""
    return (torch.randint(0, 2, shape, generator=g) * 2 - 1).float()


def _bnn(seed, sizes, n_out, int_bias=True, bn=True, in_affine=False):
    """A random binarized MLP: [affine] sign, blocks (±1 linear, BN affine, sign), real final linear."""
    g = torch.Generator().manual_seed(seed)
    nodes, prev = [], "x"
    if in_affine:
        scale = (torch.rand(sizes[0], generator=g) + 0.5) * torch.where(torch.rand(sizes[0], generator=g) < 0.3, -1.0, 1.0)
        nodes.append(Node("in_aff", "affine", (prev,), (sizes[0],),
                          {"scale": scale, "bias": torch.randn(sizes[0], generator=g) * 0.3}))
        prev = "in_aff"
    nodes.append(Node("s0", "sign", (prev,), (sizes[0],)))
    prev = "s0"
    for li, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        bias = torch.randint(-2, 3, (b,), generator=g).float() if int_bias else torch.randn(b, generator=g)
        nodes.append(Node(f"l{li}", "linear", (prev,), (b,), {"weight": _pm1(g, (b, a)), "bias": bias}))
        prev = f"l{li}"
        if bn:
            sc = torch.rand(b, generator=g) * 2 - 0.5  # some negative scales flip the neuron
            shift = torch.randint(-2, 3, (b,), generator=g).float() * sc  # exact ties stay possible
            nodes.append(Node(f"bn{li}", "affine", (prev,), (b,), {"scale": sc, "bias": shift}))
            prev = f"bn{li}"
        nodes.append(Node(f"s{li + 1}", "sign", (prev,), (b,)))
        prev = f"s{li + 1}"
    nodes.append(Node("out", "linear", (prev,), (n_out,),
                      {"weight": torch.randn(n_out, sizes[-1], generator=g), "bias": torch.randn(n_out, generator=g)}))
    return Graph("x", (sizes[0],), tuple(nodes), "out")


def _points(lo, hi, zero_at=None):
    """Inputs covering every achievable first-layer sign pattern (box ends, and the zero crossing)."""
    zero_at = np.zeros(len(lo)) if zero_at is None else zero_at
    choices = []
    for lo_i, hi_i, z in zip(lo, hi, zero_at):
        c = {float(lo_i), float(hi_i)}
        if lo_i <= z <= hi_i:
            c.add(float(z))
        choices.append(sorted(c))
    return np.array(list(itertools.product(*choices)))


def _outputs(graph, xs):
    """Network outputs in float64."""
    with torch.no_grad():
        return graph.to(dtype=torch.float64).forward(torch.tensor(xs)).numpy()


def _threshold(values, q):
    """A threshold strictly between two achieved values (no output ties), near quantile q."""
    v = np.unique(values)
    if len(v) == 1:
        return v[0] + 0.5
    i = min(int(q * (len(v) - 1)), len(v) - 2)
    return (v[i] + v[i + 1]) / 2


def _box(rng, n):
    """A box mixing positive, negative, zero-straddling, [0, 0] and half-open-at-zero inputs."""
    lo = rng.choice([-1.0, 0.0, 0.5, -0.5], n)
    hi = np.maximum(lo, rng.choice([-0.2, 0.0, 1.0], n))
    return lo, hi


def _check_case(graph, lo, hi, A, q, xs, **kw):
    """Verdict equals enumeration; a witness is inside the box and violating."""
    ys = _outputs(graph, xs)
    b = np.array([_threshold(ys @ A[r], q) for r in range(A.shape[0])])
    poly = Polytope(A, b)
    region = Region(lo, hi, (poly,))
    truth = any(poly.satisfied_by(y) for y in ys)
    kw.setdefault("attack_samples", 0)  # exercise the SAT path, not the sampling pre-pass
    res = verify_bnn(graph, region, poly, timeout=20, **kw)
    assert res.status == ("violated" if truth else "holds"), (res.reason, res.stats)
    if truth:
        assert region.contains(res.x)
        assert poly.satisfied_by(_outputs(graph, res.x[None])[0])
    return res


# ----------------------------------------------------------------------------- CNF building blocks


@pytest.mark.parametrize("encoding", ["auto", "seqcounter", "totalizer", "kmtotalizer", "sortnetwrk", "cardnetwrk"])
def test_reified_at_least_matches_counting(encoding):
    rnd = random.Random(0)
    for _ in range(25):
        n = rnd.randint(1, 6)
        lits = [v * rnd.choice([1, -1]) for v in range(1, n + 1)]
        k = rnd.randint(-1, n + 1)
        r, cls = reified_at_least(lits, k, IDPool(start_from=n + 1), encoding)
        for bits in itertools.product([0, 1], repeat=n):
            assum = [v if b else -v for v, b in zip(range(1, n + 1), bits)]
            count = sum(1 for lit in lits if (lit > 0) == bool(bits[abs(lit) - 1]))
            if isinstance(r, bool):
                assert r == (count >= k)
                continue
            with Solver(bootstrap_with=cls) as s:
                assert s.solve(assumptions=assum + [r]) == (count >= k)
                assert s.solve(assumptions=assum + [-r]) == (count < k)


def test_pb_at_most_exact_with_huge_coefficients():
    rnd = random.Random(1)
    for _ in range(60):
        n = rnd.randint(1, 6)
        ws = [rnd.randint(-2 ** rnd.randint(0, 60), 2 ** rnd.randint(0, 60)) for _ in range(n)]
        lits = [v * rnd.choice([1, -1]) for v in range(1, n + 1)]
        sums = {}
        for bits in itertools.product([0, 1], repeat=n):
            sums[bits] = sum(w for w, lit in zip(ws, lits) if (lit > 0) == bool(bits[abs(lit) - 1]))
        bound = rnd.choice(list(sums.values())) + rnd.choice([-1, 0, 1])
        cls = pb_at_most(list(zip(ws, lits)), bound, IDPool(start_from=n + 1))
        for bits, total in sums.items():
            if cls is None:
                assert total > bound
                continue
            with Solver(bootstrap_with=cls) as s:
                assert s.solve(assumptions=[v if b else -v for v, b in zip(range(1, n + 1), bits)]) == (total <= bound)


# ----------------------------------------------------------------------------- recognition


def test_recognise_binarized_mlp():
    graph = _bnn(0, [6, 5, 4], 3, in_affine=True)
    s = recognise_bnn(graph)
    assert s is not None and len(s.layers) == 3 and s.n_outputs == 3
    assert bnn_reason(graph).startswith("binarized network")


def test_recognise_rejects_relu_and_real_hidden_weights():
    g = torch.Generator().manual_seed(0)
    relu = Graph("x", (4,), (Node("l", "linear", ("x",), (3,), {"weight": torch.randn(3, 4, generator=g), "bias": None}),
                             Node("r", "relu", ("l",), (3,))), "r")
    assert recognise_bnn(relu) is None and "no sign" in bnn_reason(relu)
    real = Graph("x", (4,), (Node("s0", "sign", ("x",), (4,)),
                             Node("l", "linear", ("s0",), (3,), {"weight": torch.randn(3, 4, generator=g), "bias": None}),
                             Node("s1", "sign", ("l",), (3,)),
                             Node("o", "linear", ("s1",), (2,), {"weight": torch.randn(2, 3, generator=g), "bias": None})), "o")
    assert recognise_bnn(real) is None and "-1,0,+1" in bnn_reason(real)
    relu_mid = Graph("x", (4,), (Node("s0", "sign", ("x",), (4,)), Node("r", "relu", ("s0",), (4,)),
                                 Node("o", "linear", ("r",), (2,), {"weight": torch.randn(2, 4, generator=g), "bias": None})), "o")
    assert recognise_bnn(relu_mid) is None and "relu" in bnn_reason(relu_mid)
    residual = Graph("x", (4,), (Node("s0", "sign", ("x",), (4,)), Node("a", "add", ("s0", "x"), (4,))), "a")
    assert recognise_bnn(residual) is None and "chain" in bnn_reason(residual)


def test_unencodable_graph_answers_unknown():
    g = torch.Generator().manual_seed(0)
    relu = Graph("x", (2,), (Node("l", "linear", ("x",), (1,), {"weight": torch.randn(1, 2, generator=g), "bias": None}),
                             Node("r", "relu", ("l",), (1,))), "r")
    res = verify_bnn(relu, Region([-1, -1], [1, 1], ()), Polytope([[1.0]], [0.0]))
    assert res.status == "unknown" and "not encodable" in res.reason


# ----------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("seed", range(12))
def test_verdict_matches_enumeration(seed):
    rng = np.random.default_rng(seed)
    graph = _bnn(seed, [9, 7, 5], 3, int_bias=seed % 2 == 0, bn=seed % 3 != 0)
    lo, hi = _box(rng, 9)
    xs = _points(lo, hi)
    A = np.array([[1.0, -1.0, 0.0], [-0.5, 0.0, 1.0]])
    solver = "glucose4" if seed % 4 == 3 else "cadical153"
    statuses = {_check_case(graph, lo, hi, A, q, xs, solver=solver).status for q in (0.05, 0.5, 0.95)}
    if seed == 0:
        assert statuses == {"violated", "holds"}


def test_three_valued_hidden_neurons_exact():
    """Even fan-in, integer bias, no BN: S + b = 0 happens, so hidden signs take the value 0."""
    seen_three = 0
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        graph = _bnn(100 + seed, [8, 6, 4], 2, int_bias=True, bn=False)
        lo, hi = _box(rng, 8)
        xs = _points(lo, hi)
        for q in (0.2, 0.8):
            res = _check_case(graph, lo, hi, np.array([[1.0, -1.0]]), q, xs)
            seen_three += sum(layer["three"] for layer in res.stats["layers"][1:])
    assert seen_three > 0


@pytest.mark.parametrize("seed", range(3))
def test_input_affine_before_sign(seed):
    rng = np.random.default_rng(200 + seed)
    graph = _bnn(200 + seed, [8, 6], 2, in_affine=True)
    aff = graph.nodes[0].params
    zero_at = (-aff["bias"].double() / aff["scale"].double()).numpy()
    lo = np.minimum(zero_at, 0) - rng.uniform(0, 1, 8)
    hi = np.maximum(zero_at, 0) + rng.uniform(0, 1, 8)
    pin = rng.random(8) < 0.4  # some inputs pinned to one side of the crossing
    hi = np.where(pin, lo + 0.01, hi)
    xs = _points(lo, hi, zero_at)
    for q in (0.1, 0.9):
        _check_case(graph, lo, hi, np.array([[1.0, -1.0]]), q, xs)


def test_conv_bnn_matches_enumeration():
    g = torch.Generator().manual_seed(7)
    nodes = (Node("s0", "sign", ("x",), (1, 3, 3)),
             Node("c", "conv", ("s0",), (2, 2, 2), {"weight": _pm1(g, (2, 1, 2, 2)), "bias": torch.tensor([0.5, -1.0])},
                  {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}),
             Node("bn", "affine", ("c",), (2, 2, 2), {"scale": torch.tensor([1.5, -0.7]).reshape(2, 1, 1),
                                                      "bias": torch.tensor([0.2, 0.1]).reshape(2, 1, 1)}),
             Node("s1", "sign", ("bn",), (2, 2, 2)),
             Node("f", "reshape", ("s1",), (8,)),
             Node("o", "linear", ("f",), (2,), {"weight": torch.randn(2, 8, generator=g), "bias": torch.zeros(2)}))
    graph = Graph("x", (1, 3, 3), nodes, "o")
    assert recognise_bnn(graph) is not None
    rng = np.random.default_rng(7)
    lo, hi = _box(rng, 9)
    xs = _points(lo, hi).reshape(-1, 1, 3, 3)
    ys = _outputs(graph, xs)
    for q in (0.1, 0.6, 0.95):
        b = _threshold(ys[:, 0] - ys[:, 1], q)
        poly = Polytope([[1.0, -1.0]], [b])
        truth = bool(np.any(ys[:, 0] - ys[:, 1] <= b))
        res = verify_bnn(graph, Region(lo, hi, (poly,)), poly, timeout=20, attack_samples=0)
        assert res.status == ("violated" if truth else "holds")


def test_float_rounding_tie_is_never_holds():
    """3 + 2^-30 rounds to 3 in float32 (sign 0) but not in float64/exact (sign +1): must not say holds."""
    nodes = (Node("s0", "sign", ("x",), (3,)),
             Node("l", "linear", ("s0",), (1,), {"weight": torch.ones(1, 3), "bias": torch.tensor([2.0 ** -30])}),
             Node("bn", "affine", ("l",), (1,), {"scale": torch.ones(1), "bias": torch.tensor([-3.0])}),
             Node("s1", "sign", ("bn",), (1,)),
             Node("o", "linear", ("s1",), (1,), {"weight": torch.ones(1, 1), "bias": torch.zeros(1)}))
    graph = Graph("x", (3,), nodes, "o")
    poly = Polytope([[1.0]], [0.5])  # unsafe iff the hidden sign is not +1
    for samples in (0, 64):
        res = verify_bnn(graph, Region([0.5] * 3, [1.0] * 3, (poly,)), poly, attack_samples=samples)
        assert res.status == "unknown"
    assert graph.forward(torch.ones(1, 3)).item() == 0.0  # float32 really gives 0


def test_witness_is_inside_box_and_float32_representable():
    graph = _bnn(3, [8, 6], 2)
    lo, hi = np.full(8, -0.3), np.full(8, 0.7)
    ys = _outputs(graph, _points(lo, hi))
    poly = Polytope([[1.0, -1.0]], [_threshold(ys[:, 0] - ys[:, 1], 0.9)])
    res = verify_bnn(graph, Region(lo, hi, (poly,)), poly, attack_samples=0)
    assert res.status == "violated"
    assert np.all(res.x.astype(np.float32).astype(np.float64) == res.x)
    assert Region(lo, hi, ()).contains(res.x)
    y32 = graph.forward(torch.tensor(res.x, dtype=torch.float32)[None]).double().numpy()[0]
    assert poly.satisfied_by(y32)


def test_spec_with_two_regions():
    graph = _bnn(5, [8, 6], 2)
    lo, hi = np.full(8, -1.0), np.full(8, 1.0)
    ys = _outputs(graph, _points(lo, hi))
    d = ys[:, 0] - ys[:, 1]
    safe = Polytope([[1.0, -1.0]], [d.min() - 1.0])
    unsafe = Polytope([[1.0, -1.0]], [_threshold(d, 0.5)])
    spec = Spec(8, 2, (Region(lo, hi, (safe,)), Region(lo, hi, (safe, unsafe))))
    res = verify_bnn_spec(graph, spec, timeout=20, attack_samples=0)
    assert res.status == "violated" and "region 1, polytope 1" in res.reason
    assert verify_bnn_spec(graph, Spec(8, 2, (Region(lo, hi, (safe,)),))).status == "holds"


@pytest.mark.parametrize("solver", ["cadical153", "glucose4"])
def test_holds_writes_proof_and_cnf(tmp_path, solver):
    graph = _bnn(4, [8, 6], 2)
    lo, hi = np.full(8, -1.0), np.full(8, 1.0)
    d = _outputs(graph, _points(lo, hi)) @ np.array([1.0, -1.0])
    poly = Polytope([[1.0, -1.0]], [d.min() - 1e-3])  # just below every achievable value: UNSAT
    proof = tmp_path / "p.drat"
    res = verify_bnn(graph, Region(lo, hi, (poly,)), poly, solver=solver, proof_path=str(proof))
    assert res.status == "holds" and res.reason.startswith("UNSAT"), res.reason
    assert proof.exists() and res.stats["proof_lines"] > 0
    assert (tmp_path / "p.cnf").read_text().startswith("p cnf")
    assert res.stats["proof_checked"] is True and res.stats["proof_solver"] == solver
    assert "drat-trim" in res.stats["proof_check_reason"]


def test_rup_check_rejects_a_bogus_proof():
    clauses = [[1, 2], [-1, 2], [1, -2], [-1, -2]]
    assert rup_check(clauses, ["2 0", "0"])[0] is True
    assert rup_check([[1, 2], [-1, 2]], ["-2 0", "0"])[0] is False
    assert rup_check(clauses, ["2 0"])[0] is False


@pytest.mark.parametrize("seed", range(4))
def test_attack_prepass_agrees_with_enumeration(seed):
    rng = np.random.default_rng(300 + seed)
    graph = _bnn(300 + seed, [9, 7, 5], 2, int_bias=seed % 2 == 0)
    lo, hi = _box(rng, 9)
    for q in (0.05, 0.6):
        res = _check_case(graph, lo, hi, np.array([[1.0, -1.0]]), q, _points(lo, hi), attack_samples=32)
        assert res.status == "holds" or "sampled" in res.reason or "SAT model" in res.reason


def test_zero_timeout_is_unknown():
    graph = _bnn(1, [8, 6], 2)
    poly = Polytope([[1.0, -1.0]], [0.0])
    res = verify_bnn(graph, Region(np.full(8, -1.0), np.full(8, 1.0), (poly,)), poly, timeout=0.0, attack_samples=0)
    assert res.status == "unknown" and "timeout" in res.reason


def test_onnx_sign_matmul_batchnorm_path(tmp_path):
    loader = pytest.importorskip("verifier.model.onnx_loader", reason="ONNX loader not available yet")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    w1 = (rng.integers(0, 2, (8, 6)) * 2 - 1).astype(np.float32)
    inits = {"w1": w1, "b1": rng.integers(-2, 3, 6).astype(np.float32), "g": rng.uniform(0.5, 1.5, 6).astype(np.float32),
             "beta": rng.normal(size=6).astype(np.float32), "w2": rng.normal(size=(6, 2)).astype(np.float32)}
    nodes = [helper.make_node("Sign", ["x"], ["s0"]), helper.make_node("MatMul", ["s0", "w1"], ["m1"]),
             helper.make_node("Add", ["m1", "b1"], ["a1"]), helper.make_node("Mul", ["a1", "g"], ["n1"]),
             helper.make_node("Add", ["n1", "beta"], ["n2"]), helper.make_node("Sign", ["n2"], ["s1"]),
             helper.make_node("MatMul", ["s1", "w2"], ["y"])]
    g = helper.make_graph(nodes, "bnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "bnn.onnx"
    path.write_bytes(model.SerializeToString())
    graph = loader.load_onnx(str(path)).graph
    assert recognise_bnn(graph) is not None, bnn_reason(graph)
    lo, hi = np.full(8, -1.0), np.full(8, 1.0)
    d = _outputs(graph, _points(lo, hi).reshape((-1,) + graph.input_shape)).reshape(-1, 2) @ np.array([1.0, -1.0])
    poly = Polytope([[1.0, -1.0]], [_threshold(d, 0.5)])
    res = verify_bnn(graph, Region(lo, hi, (poly,)), poly, attack_samples=0)
    assert res.status == "violated"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": res.x.astype(np.float32).reshape(1, 8)})[0].reshape(-1)
    assert poly.satisfied_by(y)
    unsafe_none = Polytope([[1.0, -1.0]], [d.min() - 0.5])
    assert verify_bnn(graph, Region(lo, hi, (unsafe_none,)), unsafe_none).status == "holds"
