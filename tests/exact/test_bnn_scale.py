"""Binarized CNNs (conv -> batch norm -> sign -> maxpool): exact verdicts, screening, falsifier, deadlines."""
import itertools
import threading
import time

import numpy as np
import onnx
import pytest
import torch

from benchmarks.bnn_scale import build_model, write_property
from verifier.config import VerifyConfig
from verifier.exact.bnn_attack import falsify
from verifier.exact.bnn_sat import bnn_reason, recognise_bnn, verify_bnn_any
from verifier.exact.bnn_structure import PoolLayer, _pool_windows
from verifier.model.graph import Graph, Node
from verifier.portfolio import verify
from verifier.result import Verdict
from verifier.spec.spec import Polytope, Region

CONV = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
POOL = {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0), "dilation": (1, 1), "ceil_mode": False}


def _pm1(g, shape):
    """Random {-1,+1} float tensor."""
    return (torch.randint(0, 2, shape, generator=g) * 2 - 1).float()


def _bn(g, name, prev, shape, fan):
    """A batch-norm affine per channel, centred near a random +-1 sum of ``fan`` terms."""
    c = shape[0]
    scale = (torch.rand(c, generator=g) + 0.3) * torch.where(torch.rand(c, generator=g) < 0.2, -1.0, 1.0)
    shift = -torch.randint(-2, 3, (c,), generator=g).float() * scale * (fan ** 0.5) / 3
    view = (c,) + (1,) * (len(shape) - 1)
    return Node(name, "affine", (prev,), shape, {"scale": scale.reshape(view), "bias": shift.reshape(view)})


def small_cnn(seed, side=8, chans=(3, 4), dense=8, n_out=3):
    """sign(x) -> 2 x [conv 3x3 pad 1 (+-1) -> BN -> sign -> maxpool 2x2] -> flatten -> +-1 dense -> BN -> sign -> linear."""
    g = torch.Generator().manual_seed(seed)
    in_shape = (1, side, side)
    nodes, prev, c_in = [Node("s0", "sign", ("x",), in_shape)], "s0", 1
    for i, c in enumerate(chans):
        shape = (c, side, side)
        nodes += [Node(f"c{i}", "conv", (prev,), shape, {"weight": _pm1(g, (c, c_in, 3, 3)),
                                                          "bias": torch.randint(-1, 2, (c,), generator=g).float()}, CONV),
                  _bn(g, f"bn{i}", f"c{i}", shape, 9 * c_in),
                  Node(f"s{i + 1}", "sign", (f"bn{i}",), shape)]
        side //= 2
        nodes.append(Node(f"p{i}", "maxpool", (f"s{i + 1}",), (c, side, side), attrs=POOL))
        prev, c_in = f"p{i}", c
    flat = c_in * side * side
    nodes += [Node("f", "reshape", (prev,), (flat,)),
              Node("d", "linear", ("f",), (dense,), {"weight": _pm1(g, (dense, flat)), "bias": torch.zeros(dense)}),
              _bn(g, "bnd", "d", (dense,), flat), Node("h", "sign", ("bnd",), (dense,)),
              Node("out", "linear", ("h",), (n_out,), {"weight": torch.randn(n_out, dense, generator=g),
                                                      "bias": torch.randn(n_out, generator=g) * 0.1})]
    return Graph("x", in_shape, tuple(nodes), "out")


def _box(seed, n=64, free=7):
    """A box fixing most input signs, with ``free`` inputs spanning -1..1 (their sign takes -1, 0 and +1)."""
    rng = np.random.default_rng(seed)
    x0 = rng.choice([-1.0, 1.0], n) * rng.uniform(0.3, 1.0, n)
    lo, hi = x0 - 0.1, x0 + 0.1
    idx = rng.choice(n, free, replace=False)
    lo[idx], hi[idx] = -1.0, 1.0
    return lo, hi, idx


def _enumerate(graph, lo, hi, idx):
    """Outputs (float64) at every input whose free coordinates are in {lo, 0, hi}: every reachable sign pattern."""
    base = (lo + hi) / 2
    base[idx] = 0.0
    xs = np.repeat(base[None], 3 ** len(idx), axis=0)
    for row, vals in enumerate(itertools.product([-1.0, 0.0, 1.0], repeat=len(idx))):
        xs[row, idx] = vals
    with torch.no_grad():
        ys = graph.to(dtype=torch.float64).forward(torch.tensor(xs).reshape((-1,) + graph.input_shape))
    return xs, ys.reshape(len(xs), -1).numpy()


def _threshold(values, q):
    """A threshold strictly between two achieved values (clear of float noise), near quantile q."""
    v = np.unique(np.round(values, 6))
    if len(v) == 1:
        return v[0] + (0.5 if q >= 0.5 else -0.5)
    i = min(int(q * (len(v) - 1)), len(v) - 2)
    return (v[i] + v[i + 1]) / 2


# ----------------------------------------------------------------------------- structure


def test_recognise_conv_bn_sign_maxpool():
    graph = small_cnn(0)
    s = recognise_bnn(graph)
    assert s is not None, bnn_reason(graph)
    assert sum(isinstance(layer, PoolLayer) for layer in s.layers) == 2
    assert "2 maxpool layers" in bnn_reason(graph)


@pytest.mark.parametrize("kernel,stride,padding,ceil", [((2, 2), (2, 2), (0, 0), False), ((3, 3), (2, 2), (1, 1), False),
                                                        ((3, 2), (1, 2), (1, 0), False), ((2, 2), (2, 2), (0, 0), True),
                                                        ((3,), (2,), (1,), False)])
def test_pool_windows_match_torch(kernel, stride, padding, ceil):
    in_shape = (2, 5, 7) if len(kernel) == 2 else (2, 9)
    x = torch.randn((1,) + in_shape)
    f = torch.nn.functional.max_pool2d if len(kernel) == 2 else torch.nn.functional.max_pool1d
    out = f(x, kernel, stride, padding, ceil_mode=ceil)
    node = Node("p", "maxpool", ("x",), tuple(out.shape[1:]), attrs={"kernel": kernel, "stride": stride,
                "padding": padding, "dilation": (1,) * len(kernel), "ceil_mode": ceil})
    windows = _pool_windows(node, in_shape)  # raises if the windows disagree with the op
    assert windows.shape[0] == out.numel()


def test_maxpool_before_sign_is_refused():
    g = torch.Generator().manual_seed(0)
    nodes = (Node("s0", "sign", ("x",), (1, 4, 4)),
             Node("c", "conv", ("s0",), (2, 4, 4), {"weight": _pm1(g, (2, 1, 3, 3)), "bias": None}, CONV),
             Node("p", "maxpool", ("c",), (2, 2, 2), attrs=POOL), Node("s1", "sign", ("p",), (2, 2, 2)),
             Node("f", "reshape", ("s1",), (8,)), Node("o", "linear", ("f",), (2,), {"weight": torch.randn(2, 8), "bias": None}))
    graph = Graph("x", (1, 4, 4), nodes, "o")
    assert recognise_bnn(graph) is None and "maxpool" in bnn_reason(graph)


# ----------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("seed", range(4))
def test_cnn_verdicts_match_enumeration(seed):
    graph = small_cnn(seed)
    lo, hi, idx = _box(seed)
    _, ys = _enumerate(graph, lo, hi, idx)
    d = ys[:, 0] - ys[:, 1]
    region_of = lambda poly: Region(lo, hi, (poly,))
    seen = set()
    for q in (0.02, 0.5, 0.98):
        b = _threshold(d, q)
        poly = Polytope([[1.0, -1.0, 0.0]], [b])
        truth = bool(np.any(d <= b))
        res = verify_bnn_any(graph, region_of(poly), (poly,), timeout=30, attack_samples=0)
        assert res.status == ("violated" if truth else "holds"), (q, res.reason, res.stats.get("screen"))
        if truth:
            y = graph.to(dtype=torch.float64).forward(torch.tensor(res.x).reshape((1,) + graph.input_shape))
            assert poly.satisfied_by(y.reshape(-1).numpy())
        seen.add(res.status)
    low = Polytope([[1.0, -1.0, 0.0]], [d.min() - 0.5])
    assert verify_bnn_any(graph, region_of(low), (low,), timeout=30, attack_samples=0).status == "holds"


@pytest.mark.parametrize("seed", range(6))
def test_reduction_keeps_verdicts(seed):
    """Screening + cone: the same verdicts as encoding every neuron, on random small nets and properties."""
    graph = small_cnn(100 + seed, chans=(2, 3), dense=6, n_out=3)
    lo, hi, idx = _box(100 + seed, free=6)
    _, ys = _enumerate(graph, lo, hi, idx)
    rng = np.random.default_rng(seed)
    reduced_any = False
    for _ in range(3):
        a = rng.normal(size=(1, 3)) * (rng.random(3) < 0.7)  # some outputs unused: a smaller cone
        a[0, rng.integers(3)] = 1.0
        poly = Polytope(a, [_threshold(ys @ a[0], rng.uniform(0, 1))])
        region = Region(lo, hi, (poly,))
        full = verify_bnn_any(graph, region, (poly,), timeout=30, attack_samples=0, reduce=False)
        cone = verify_bnn_any(graph, region, (poly,), timeout=30, attack_samples=0)
        truth = any(poly.satisfied_by(y) for y in ys)
        assert full.status == cone.status == ("violated" if truth else "holds")
        if cone.stats.get("vars", 0) < full.stats.get("vars", 0) or "vars" not in cone.stats:
            reduced_any = True
        assert all(layer["skipped"] == 0 for layer in full.stats["layers"])
    assert reduced_any


def test_stable_neurons_become_constants():
    """A box with no free input: every neuron is screened constant, no variable at all."""
    graph = small_cnn(3)
    lo, hi, _ = _box(3, free=0)
    poly = Polytope([[1.0, -1.0, 0.0]], [-100.0])
    res = verify_bnn_any(graph, Region(lo, hi, (poly,)), (poly,), attack_samples=0)
    assert res.status == "holds"
    assert res.stats["screen"][0]["cone"] == 0 and all(layer["edges"] == 0 for layer in res.stats["screen"][:2])
    assert all(layer["two"] == layer["three"] == 0 for layer in res.stats["layers"])  # no SAT variable at all


# ----------------------------------------------------------------------------- falsifier


def _rare_property(ys):
    """The row +-(y_i - y_j) <= b, b just past its most extreme achieved value, that the fewest patterns violate."""
    best = None
    for i, j in itertools.permutations(range(ys.shape[1]), 2):
        a = np.zeros(ys.shape[1])
        a[i], a[j] = 1.0, -1.0
        v = np.round(ys @ a, 6)
        u = np.unique(v)
        if len(u) < 2:
            continue
        b = (u[0] + u[1]) / 2
        share = float(np.mean(v <= b))
        if best is None or share < best[1]:
            best = (Polytope([a], [b]), share)
    return best


@pytest.mark.parametrize("seed", range(3))
def test_falsifier_finds_planted_violation(seed):
    """A threshold that only the rarest extreme sign patterns cross: found and confirmed."""
    graph = small_cnn(200 + seed, chans=(4, 8), dense=16)
    lo, hi, idx = _box(200 + seed, free=9)
    _, ys = _enumerate(graph, lo, hi, idx)
    poly, share = _rare_property(ys)
    assert 0 < share < 0.005  # planted: under 0.5% of the 3^9 reachable sign patterns violate
    region = Region(lo, hi, (poly,))
    x, stats = falsify(graph, region, (poly,), time.monotonic() + 30, structure=recognise_bnn(graph), seed=seed)
    assert x is not None, stats
    assert region.contains(x)
    y = graph.forward(torch.tensor(x, dtype=torch.float32).reshape((1,) + graph.input_shape)).double().numpy()[0]
    assert poly.satisfied_by(y)


def test_falsifier_finds_nothing_when_property_holds():
    graph = small_cnn(7)
    lo, hi, idx = _box(7)
    _, ys = _enumerate(graph, lo, hi, idx)
    poly = Polytope([[1.0, 0.0, -1.0]], [(ys[:, 0] - ys[:, 2]).min() - 0.1])
    x, stats = falsify(graph, Region(lo, hi, (poly,)), (poly,), time.monotonic() + 3, structure=recognise_bnn(graph))
    assert x is None and stats.best_margin > 0


# ----------------------------------------------------------------------------- through verify (ONNX)


def _instance(tmp_path, shape, channels, dense, eps, boost_label=None, seed=0):
    """An ONNX sign-input CNN and an eps-box robustness property around a random point."""
    model = build_model(seed, shape, channels, dense, 10)
    path, spec = tmp_path / "net.onnx", tmp_path / "prop.vnnlib"
    onnx.save(model, str(path))
    x0 = np.random.default_rng(seed).uniform(-1, 1, int(np.prod(shape)))
    from benchmarks.bnn_scale import _run
    label = int(np.argmax(_run(model, x0)[0])) if boost_label is None else boost_label
    write_property(spec, x0, eps, label, 10)
    return path, spec


def test_verify_routes_cnn_to_sat_and_reports(tmp_path):
    path, spec = _instance(tmp_path, (3, 8, 8), (4, 4), 16, eps=0.0)
    res = verify(str(path), str(spec), VerifyConfig(timeout=30))
    assert res.route == "sat" and res.verdict is Verdict.HOLDS, (res.reason, res.log)
    assert res.log and res.reason
    for label in range(10):  # some class other than the argmax at x0: the centre itself violates
        path, spec = _instance(tmp_path, (3, 8, 8), (4, 4), 16, eps=0.0, boost_label=label)
        res = verify(str(path), str(spec), VerifyConfig(timeout=30))
        if res.verdict is Verdict.VIOLATED:
            break
    assert res.verdict is Verdict.VIOLATED and res.route == "sat"
    assert res.counterexample is not None and res.counterexample.source in ("attack", "sat")


def _unreachable(tmp_path, eps):
    """A 32x32x3 CNN and a property no input violates (Y_0 >= 1000) over a wide box: nothing settles it fast."""
    path, spec = _instance(tmp_path, (3, 32, 32), (8, 16, 16), 128, eps=eps)
    text = spec.read_text().splitlines()
    spec.write_text("\n".join(text[:-1] + ["(assert (>= Y_0 1000.0))"]) + "\n")
    return path, spec


def test_verify_honours_short_deadline_on_a_bigger_net(tmp_path):
    """A short budget: verify returns a Result with route, log and reason (no watchdog needed)."""
    path, spec = _unreachable(tmp_path, eps=0.05)
    res = verify(str(path), str(spec), VerifyConfig(timeout=3))
    assert res.route == "sat" and res.log and res.reason
    assert res.verdict in (Verdict.TIMEOUT, Verdict.UNKNOWN)
    assert any("sat falsify" in line for line in res.log)


def test_verify_cancel_stops_the_sat_route(tmp_path):
    path, spec = _unreachable(tmp_path, eps=0.05)
    cancel = threading.Event()
    timer = threading.Timer(1.5, cancel.set)
    timer.start()
    try:
        res = verify(str(path), str(spec), VerifyConfig(timeout=120), cancel=cancel)
    finally:
        timer.cancel()
    assert res.route == "sat" and res.log
    assert res.verdict is Verdict.UNKNOWN and res.reason.startswith("cancelled"), res.reason
