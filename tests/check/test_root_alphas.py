"""Root alphas in certificates: the checker's CROWN with given intermediate slopes is sound, per-row
slopes act row by row, and the proof's ``alphas`` from a real ReLU-split search are accepted, give back
the search's root bounds, and are validated (tampering, of them or of the tree, is rejected with a reason)."""
from __future__ import annotations

import copy
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import cert_factory as cf
from verifier.bounds import BoundEngine
from verifier.certificate import decode_array, encode_array
from verifier.certify import to_certificate
from verifier.check import check
from verifier.check.checker import root_bounds
from verifier.check.crown import Domains, Pass, _tighten_rows, backward, intermediate_bounds, needs_bounds
from verifier.check.tree import ArrayStore, root_alphas
from verifier.config import BabConfig
from verifier.exact.milp import verify_milp
from verifier.model.graph import Graph
from verifier.search.relu_split import relu_split, shared_roots
from verifier.spec.spec import Polytope, Region, Spec
from verifier.threads import cpu_threads

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exact"))
from milp_nets import mlp  # noqa: E402

NETS = {"4-8-8": (1, 4, (8, 8)), "6-10-12-8": (2, 6, (10, 12, 8)), "3-16-16-16": (3, 3, (16, 16, 16))}
TOL = 1e-9


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _graph(name: str) -> Graph:
    seed, n_in, hidden = NETS[name]
    return cf.mlp(seed, n_in, hidden, 3).to(dtype=torch.float64)


def _boxes(graph: Graph, rng, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random boxes [n, n_in] of different centres and widths."""
    centre = rng.normal(size=(n, graph.n_inputs)) * 0.5
    width = rng.uniform(0.1, 1.0, size=(n, 1)) * rng.uniform(0.5, 1.0, size=(n, graph.n_inputs))
    return torch.tensor(centre - width), torch.tensor(centre + width)


def _slopes(rng, shape: tuple[int, ...], first: int) -> torch.Tensor:
    """Slopes [first, *shape] in [0, 1], a third of them exactly 0 or 1 (the ends of the range)."""
    a = rng.uniform(0, 1, size=(first,) + shape)
    ends = rng.random(a.shape) < 1 / 3
    return torch.tensor(np.where(ends, np.round(a), a))


def _start_alphas(graph: Graph, rng, per_row: bool) -> dict:
    """value -> (distinct random rows, {upstream relu: slopes [2k or 1, *shape]}) for every hidden pre-activation."""
    relus = [n for n in graph.nodes if n.op == "relu"]
    out = {}
    for i, act in enumerate(relus):
        value = graph.node_map[act.inputs[0]]
        k = int(rng.integers(1, value.size + 1))
        rows = torch.as_tensor(rng.choice(value.size, k, replace=False))
        out[value.name] = (rows, {r.name: _slopes(rng, r.shape, 2 * k if per_row else 1) for r in relus[:i]})
    return out


def _samples(graph: Graph, lo: np.ndarray, hi: np.ndarray, n: int, rng) -> dict[str, torch.Tensor]:
    """Every value of the graph at ``n`` uniform points of the box and at all its corners."""
    corners = np.array(list(itertools.product((0.0, 1.0), repeat=lo.size)))
    x = np.concatenate([rng.uniform(lo, hi, size=(n, lo.size)), lo + corners * (hi - lo)])
    return graph.forward(torch.as_tensor(x).reshape((-1,) + graph.input_shape), keep=True)


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("per_row", [True, False], ids=["per-row", "shared"])
def test_start_alphas_bounds_are_sound(name, per_row):
    """With random rows and slopes at every hidden layer, every value's bounds hold at 2000 sampled
    points and every corner of each of two boxes (bounded together as a batch)."""
    graph = _graph(name)
    rng = np.random.default_rng([sorted(NETS).index(name), per_row])
    lower, upper = _boxes(graph, rng, 2)
    starts = _start_alphas(graph, rng, per_row)
    assert len(starts) == len(NETS[name][2]) and all(s for _, s in list(starts.values())[1:])
    bounds, empty = intermediate_bounds(graph, Domains(lower, upper), start_alphas=starts)
    assert not empty.any()
    for b in range(2):
        values = _samples(graph, lower[b].numpy(), upper[b].numpy(), 2000, rng)
        for value, (lo, hi) in bounds.items():
            v = values[value].flatten(1)
            l, u = lo[b].flatten(), hi[b].flatten()
            assert torch.isfinite(l).all() and torch.isfinite(u).all()
            assert (v >= l - TOL * (1 + v.abs())).all(), (value, (v - l).min())
            assert (v <= u + TOL * (1 + v.abs())).all(), (value, (u - v).min())


@pytest.mark.parametrize("name", sorted(NETS))
def test_start_alphas_only_tighten_their_value(name):
    """Slopes given for one value never loosen that value's bounds (they are intersected with the
    default CROWN's), leave every value before it untouched, and touch only the listed rows."""
    graph = _graph(name)
    rng = np.random.default_rng(7)
    dom = Domains(*_boxes(graph, rng, 3))
    plain, _ = intermediate_bounds(graph, dom)
    order = [graph.input_name] + [n.name for n in graph.nodes]
    tightened = 0
    for value, start in _start_alphas(graph, rng, per_row=True).items():
        got, _ = intermediate_bounds(graph, dom, start_alphas={value: start})
        for before in order[:order.index(value)]:
            assert torch.equal(got[before][0], plain[before][0]) and torch.equal(got[before][1], plain[before][1])
        (l0, u0), (l1, u1) = plain[value], got[value]
        assert (l1 >= l0).all() and (u1 <= u0).all()
        others = torch.ones(l0[0].numel(), dtype=torch.bool)
        others[start[0]] = False
        assert torch.equal(l1.flatten(1)[:, others], l0.flatten(1)[:, others])
        assert torch.equal(u1.flatten(1)[:, others], u0.flatten(1)[:, others])
        tightened += int((l1 > l0 + 1e-9).sum() + (u1 < u0 - 1e-9).sum())
    assert tightened > 0   # random slopes beat the default ones somewhere


def test_tighten_rows_uses_row_j_for_lower_and_k_plus_j_for_upper():
    """``_tighten_rows`` from (-inf, inf) gives, for rows[j], the backward pass of +e with slopes[j]
    as lower bound and minus that of -e with slopes[k + j] as upper bound; [1, *shape] slopes act as
    [2k, *shape] copies of that one entry."""
    graph = _graph("6-10-12-8")
    rng = np.random.default_rng(3)
    lower, upper = _boxes(graph, rng, 2)
    bounds, _ = intermediate_bounds(graph, Domains(lower, upper))
    name, size = "fc2", 8
    rows = torch.tensor([5, 0, 3])
    k = rows.numel()
    slopes = {r: _slopes(rng, (n,), 2 * k) for r, n in (("act0", 10), ("act1", 12))}
    inf = torch.full((2, size), np.inf, dtype=torch.float64)
    lo, hi = _tighten_rows(graph, name, (-inf, inf), bounds, rows, slopes, 1 << 24)
    for j, row in enumerate(rows.tolist()):
        e = torch.zeros((2, 1, size), dtype=torch.float64)
        e[:, 0, row] = 1.0
        for sign, entry, got in ((1.0, j, lo[:, row]), (-1.0, k + j, -hi[:, row])):
            alphas = {r: t[entry].expand(2, -1) for r, t in slopes.items()}
            expected = backward(graph, name, sign * e, Pass(bounds, alphas))[:, 0]
            assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.isinf(lo[:, [1, 2, 4, 6, 7]]).all() and torch.isinf(hi[:, [1, 2, 4, 6, 7]]).all()
    one = {r: t[:1] for r, t in slopes.items()}
    copies = {r: t[:1].expand((2 * k,) + tuple(t.shape[1:])) for r, t in slopes.items()}
    shared = _tighten_rows(graph, name, (-inf, inf), bounds, rows, one, 1 << 24)
    spelled = _tighten_rows(graph, name, (-inf, inf), bounds, rows, copies, 1 << 24)
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(shared, spelled))
    tiny = _tighten_rows(graph, name, (-inf, inf), bounds, rows, slopes, 1)   # one row per chunk
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(tiny, (lo, hi)))


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("start", ["out", "hidden"])
def test_per_row_alphas_match_rows_run_alone(name, start):
    """A backward pass with relu alphas [B, m, *shape] (some NaN = default slope) gives, for every
    row, what the row alone gives with alphas [B, *shape]; betas still apply to every row."""
    graph = _graph(name)
    rng = np.random.default_rng(11)
    B, m = 3, 5
    lower, upper = _boxes(graph, rng, B)
    bounds, _ = intermediate_bounds(graph, Domains(lower, upper))
    relus = [n for n in graph.nodes if n.op == "relu"]
    value = graph.output_name if start == "out" else relus[-1].inputs[0]
    shape = tuple(graph.node_map[value].shape)
    A = torch.tensor(rng.normal(size=(B, m) + shape))
    alphas = {}
    for r in relus:
        a = rng.uniform(0, 1, size=(B, m) + r.shape)
        alphas[r.name] = torch.tensor(np.where(rng.random(a.shape) < 0.2, np.nan, a))
    betas = {relus[0].name: torch.tensor(-np.abs(rng.normal(size=(B,) + relus[0].shape)))}
    together = backward(graph, value, A, Pass(bounds, alphas, betas))
    assert together.shape == (B, m) and torch.isfinite(together).all()
    for j in range(m):
        alone = backward(graph, value, A[:, j:j + 1], Pass(bounds, {r: a[:, j] for r, a in alphas.items()}, betas))
        assert torch.allclose(together[:, j], alone[:, 0], rtol=1e-10, atol=1e-12), (j, together[:, j], alone[:, 0])
    differ = backward(graph, value, A, Pass(bounds, {r: a[:, :1].expand_as(a) for r, a in alphas.items()}, betas))
    assert not torch.allclose(differ, together)   # the rows really used their own slopes


# ---------------------------------------------------------------------- certificates from a search
THRESHOLD = -0.55   # unsafe y0 - y1 <= t: above CROWN's root bound (-1.05), below the exact minimum (-0.107)


@pytest.fixture(scope="module")
def proof():
    """The 12-8-12-8-3 MILP test net on a box, and a "root"-mode ReLU-split proof of y0 - y1 > THRESHOLD."""
    g = mlp(3, 12, (8, 12, 8), 3)
    centre = np.random.default_rng(3).uniform(-0.5, 0.5, 12)
    lo, hi = centre - 0.4, centre + 0.4
    c, t = np.array([[1.0, -1.0, 0.0]]), np.array([THRESHOLD])
    spec = Spec(12, 3, (Region(lo, hi, (Polytope(c, t),)),))
    with cpu_threads(1):
        out = relu_split(BoundEngine(g), g, lo, hi, c, t, lambda x: None, time.monotonic() + 60, BabConfig(batch=64))
    return g, spec, out


def _cert(out) -> dict:
    return to_certificate("m", "s", [(0, 0, out.log.tree())])


def test_search_needs_splits_and_milp_agrees(proof):
    """Exact MILP says the property holds; the search holds too, with relu splits (the root alone is not enough)."""
    g, spec, out = proof
    region, poly = spec.regions[0], spec.regions[0].unsafe[0]
    assert verify_milp(g, Region(region.lower, region.upper, ()), poly, timeout=20).status == "holds"
    assert out.status == "holds", out.stats
    assert out.log.splits and len(out.log.leaves) > 1
    tree = out.log.tree()
    assert tree["split"]["kind"] == "relu" and set(tree["root_alphas"]) == {"fc1", "fc2"}


def test_root_alphas_layout(proof):
    """The log's root alphas: distinct in-range int64 rows per pre-activation, slopes of upstream
    relus of shape [2k or 1, *shape] in [0, 1] (the first layer needs none: it is linear in x)."""
    g, _, out = proof
    sizes = {n.name: n.size for n in g.nodes}
    upstream = {"fc1": {"act0"}, "fc2": {"act0", "act1"}}
    for value, (rows, slopes) in out.log.root_alphas.items():
        assert rows.dtype == np.int64 and rows.ndim == 1 and len(np.unique(rows)) == rows.size
        assert np.all((rows >= 0) & (rows < sizes[value]))
        assert slopes and set(slopes) <= upstream[value]
        for relu, a in slopes.items():
            assert a.shape in ((2 * rows.size, sizes[relu]), (1, sizes[relu]))
            assert np.all((a >= 0) & (a <= 1))


def test_certificate_carries_alphas_and_checks(proof):
    """The proof has "alphas" {value: {rows, slopes}} (rows float64, slopes float16) and the checker accepts it."""
    g, spec, out = proof
    cert = _cert(out)
    alphas = cert["proofs"][0]["alphas"]
    assert set(alphas) == set(out.log.root_alphas)
    for value, body in alphas.items():
        assert set(body) == {"rows", "slopes"}
        assert cert["arrays"][body["rows"]]["dtype"] == "float64"
        assert {cert["arrays"][k]["dtype"] for k in body["slopes"].values()} == {"float16"}
    assert "root_alphas" not in cert["proofs"][0]["tree"]
    report = check(g, spec, cert, "m", "s")
    assert report.ok, report.reasons
    assert report.leaves == len(out.log.leaves)


@pytest.mark.parametrize("seed,n_in,hidden", [(3, 12, (8, 12, 8)), (2, 8, (10, 10, 10)), (4, 10, (16, 16))])
def test_checker_rederives_the_search_root_bounds(seed, n_in, hidden):
    """From the certificate's alphas (float16) the checker's float64 root bounds of every value that
    has alphas are as tight as the search's alpha-CROWN reference (up to float32 rounding), and
    tighter than its own default-slope CROWN on some neurons."""
    g = mlp(seed, n_in, hidden, 3)
    centre = np.random.default_rng(seed).uniform(-0.5, 0.5, n_in)
    lo, hi = centre - 0.4, centre + 0.4
    root = shared_roots(BoundEngine(g), lo, hi, [np.array([[1.0, -1.0, 0.0]])], [0])[0]
    tree = {"leaf": {"row": 0, "bound": 1.0, "box": None, "alphas": {}, "betas": None}, "root_alphas": root.alphas}
    cert = to_certificate("m", "s", [(0, 0, tree)])
    alphas = root_alphas(cert["proofs"][0]["alphas"], g, ArrayStore(cert["arrays"]), "proof", set(needs_bounds(g)))
    starts = {v: (torch.as_tensor(rows), {r: torch.as_tensor(a) for r, a in slopes.items()})
              for v, (rows, slopes) in alphas.items()}
    g64 = g.to(dtype=torch.float64)
    given, plain = root_bounds(g64, lo, hi, (), starts), root_bounds(g64, lo, hi, ())
    assert set(starts) == set(root.alphas) and starts
    tighter = 0
    for value in starts:
        (l, u), (l0, u0) = given[value], plain[value]
        ref_l, ref_u = (t.double() for t in root.reference[value])
        assert torch.all(l >= ref_l - 1e-5 * (1 + ref_l.abs())) and torch.all(u <= ref_u + 1e-5 * (1 + ref_u.abs()))
        tighter += int((l > l0 + 1e-6).sum() + (u < u0 - 1e-6).sum())
    first = min(starts, key=[n.name for n in g.nodes].index)   # its inputs' bounds are the same in both runs
    assert torch.all(given[first][0] >= plain[first][0]) and torch.all(given[first][1] <= plain[first][1])
    assert tighter > 0


def _put(cert: dict, array: np.ndarray, dtype: str = "float64") -> str:
    """A fresh array key (shared arrays are never edited in place)."""
    key = f"tampered{len(cert['arrays'])}"
    cert["arrays"][key] = encode_array(array, dtype)
    return key


def _get(cert: dict, key: str) -> np.ndarray:
    return decode_array(cert["arrays"][key], key)


def _target(alphas: dict) -> tuple[str, str]:
    """(value, relu) of the tampered slopes: the value with the most relus' slopes, its last relu."""
    value = max(alphas, key=lambda v: len(alphas[v]["slopes"]))
    return value, sorted(alphas[value]["slopes"])[-1]


def _slope_value(v):
    def tamper(cert, alphas, sizes):
        value, relu = _target(alphas)
        a = _get(cert, alphas[value]["slopes"][relu]).copy()
        a[-1, 3] = v
        alphas[value]["slopes"][relu] = _put(cert, a, "float32")
    return tamper


def _wrong_shape(cert, alphas, sizes):
    value, relu = _target(alphas)
    alphas[value]["slopes"][relu] = _put(cert, _get(cert, alphas[value]["slopes"][relu])[:, :-1], "float16")


def _rows_entry(change):
    def tamper(cert, alphas, sizes):
        value, _ = _target(alphas)
        rows = _get(cert, alphas[value]["rows"]).copy()
        change(rows, sizes[value])
        alphas[value]["rows"] = _put(cert, rows)
    return tamper


def _rename_value(new):
    def tamper(cert, alphas, sizes):
        value, _ = _target(alphas)
        alphas[new] = alphas.pop(value)
    return tamper


def _rename_slopes(new):
    def tamper(cert, alphas, sizes):
        value, relu = _target(alphas)
        alphas[value]["slopes"][new] = alphas[value]["slopes"].pop(relu)
    return tamper


def _extra_field(cert, alphas, sizes):
    value, _ = _target(alphas)
    alphas[value]["default"] = alphas[value]["rows"]


TAMPER = {
    "slope 1.5": (_slope_value(1.5), "outside [0, 1]"),
    "slope -0.1": (_slope_value(-0.1), "outside [0, 1]"),
    "slope nan": (_slope_value(np.nan), "outside [0, 1]"),
    "slopes shape": (_wrong_shape, "have shape"),
    "row out of range": (_rows_entry(lambda r, n: r.__setitem__(0, n)), "must be distinct integers in [0, "),
    "row negative": (_rows_entry(lambda r, n: r.__setitem__(0, -1)), "must be distinct integers in [0, "),
    "row duplicated": (_rows_entry(lambda r, n: r.__setitem__(-1, r[0])), "must be distinct integers"),
    "row not integer": (_rows_entry(lambda r, n: r.__setitem__(0, r[0] + 0.5)), "must be distinct integers"),
    "value not in graph": (_rename_value("fc9"), "is not a node feeding a nonlinear op"),
    "value feeds no nonlinear op": (_rename_value("out"), "is not a node feeding a nonlinear op"),
    "slopes of a linear node": (_rename_slopes("fc1"), "not a relu node"),
    "slopes of an unknown node": (_rename_slopes("act7"), "not a relu node"),
    "extra field": (_extra_field, "need exactly rows and slopes"),
}


@pytest.mark.parametrize("what", sorted(TAMPER))
def test_tampered_alphas_are_rejected(proof, what):
    """Out-of-range, misshapen or misnamed root alphas are rejected with a reason naming the problem."""
    g, spec, out = proof
    cert = _cert(out)
    tamper, reason = TAMPER[what]
    alphas = cert["proofs"][0]["alphas"]
    assert len(_get(cert, alphas[_target(alphas)[0]]["rows"])) >= 2   # so a row can be duplicated
    tamper(cert, alphas, {n.name: n.size for n in g.nodes})
    report = check(g, spec, cert, "m", "s")
    assert not report.ok
    assert len(report.reasons) == 1 and reason in report.reasons[0], report.reasons
    assert report.reasons[0].startswith("proof (region 0, polytope 0): ")


# A conjunction: unsafe where y0 - y1 <= -0.897 AND -y0 + y1 + 0.3 y2 <= -0.053. Each row alone is
# reachable (minima -0.947 and -0.253, exact MILP), both together are not: the leaves must claim
# different rows in different parts of the box, so a leaf moved to another domain can claim a row
# that fails there (a false proof, which sampling exhibits and the checker must reject).
CONJUNCTION = (5, 8, (10, 10), np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.3]]), np.array([-0.897, -0.053]))


@pytest.fixture(scope="module")
def conjunction():
    """The net, the spec, a ReLU-split proof of the conjunction, and sampled margins A y - b with
    every relu's pre-activation at 20000 points of the box and its 256 corners."""
    seed, n_in, hidden, A, t = CONJUNCTION
    g = mlp(seed, n_in, hidden, 3)
    centre = np.random.default_rng(seed).uniform(-0.5, 0.5, n_in)
    lo, hi = centre - 0.4, centre + 0.4
    spec = Spec(n_in, 3, (Region(lo, hi, (Polytope(A, t),)),))
    with cpu_threads(1):
        out = relu_split(BoundEngine(g), g, lo, hi, A, t, lambda x: None, time.monotonic() + 60, BabConfig(batch=64))
        values = _samples(g.to(dtype=torch.float64), lo, hi, 20000, np.random.default_rng(0))
    margin = values[g.output_name].numpy() @ A.T - t
    pre = {n.name: values[n.inputs[0]].flatten(1).numpy() for n in g.nodes if n.op == "relu"}
    return g, spec, out, margin, pre


def _false_leaves(tree: dict, margin: np.ndarray, pre: dict) -> list[str]:
    """Leaves with a sampled point in their domain (the path's relu signs) where the claimed row is <= 0."""
    bad, stack = [], [(tree, np.ones(len(margin), dtype=bool), "")]
    while stack:
        node, inside, path = stack.pop()
        if "leaf" in node:
            if np.any(inside & (margin[:, node["leaf"]["row"]] <= 0)):
                bad.append(path)
            continue
        z = pre[node["split"]["node"]][:, node["split"]["index"]]
        stack += [(node["children"][0], inside & (z <= 0), path + ".I"), (node["children"][1], inside & (z >= 0), path + ".A")]
    return bad


def _splits_near_root(tree: dict, n: int) -> list[tuple[tuple[int, ...], dict]]:
    """(child-index path, node) of the first ``n`` relu splits in breadth-first order."""
    out, queue = [], [((), tree)]
    while queue and len(out) < n:
        path, node = queue.pop(0)
        if "split" in node:
            out.append((path, node))
            queue += [(path + (i,), child) for i, child in enumerate(node["children"])]
    return out


def _at(tree: dict, path: tuple[int, ...]) -> dict:
    for i in path:
        tree = tree["children"][i]
    return tree


def test_conjunction_proof_needs_both_rows_and_checks(conjunction):
    """MILP: the conjunction holds, each row alone does not. The proof uses both rows, no leaf claim
    fails at a sample, and the certificate (with root alphas) is accepted."""
    g, spec, out, margin, pre = conjunction
    region, poly = spec.regions[0], spec.regions[0].unsafe[0]
    box = Region(region.lower, region.upper, ())
    assert verify_milp(g, box, poly, timeout=20).status == "holds"
    for r in range(2):
        assert verify_milp(g, box, Polytope(poly.A[r:r + 1], poly.b[r:r + 1]), timeout=20).status == "violated"
    assert out.status == "holds", out.stats
    assert {row for _, row, *_ in out.log.leaves} == {0, 1}
    cert = _cert(out)
    assert "alphas" in cert["proofs"][0]
    assert _false_leaves(cert["proofs"][0]["tree"], margin, pre) == []
    report = check(g, spec, cert, "m", "s")
    assert report.ok, report.reasons


def test_changed_split_is_rejected(conjunction):
    """A split near the root moved to another neuron of its node: every variant whose leaves then
    make a claim that fails at a sampled point is rejected (a leaf's bound is not > 0, or the neuron
    is now split twice on a path); an index past the node's size is rejected as out of range."""
    g, spec, out, margin, pre = conjunction
    cert = _cert(out)
    false_variants = 0
    for path, node in _splits_near_root(cert["proofs"][0]["tree"], 3):
        name, index = node["split"]["node"], node["split"]["index"]
        size = g.node_map[name].size
        for other in range(size + 1):
            if other == index:
                continue
            bad = copy.deepcopy(cert)
            _at(bad["proofs"][0]["tree"], path)["split"]["index"] = other
            report = check(g, spec, bad, "m", "s")
            if other == size:
                assert not report.ok and f"is not in [0, {size})" in report.reasons[0], report.reasons
            elif _false_leaves(bad["proofs"][0]["tree"], margin, pre):
                false_variants += 1
                assert not report.ok, (path, other)
                assert all("is not > 0" in r or "split twice on one path" in r for r in report.reasons), report.reasons
    assert false_variants > 0


def _drop_first_beta(cert: dict, tree: dict, depth: int) -> None:
    """Every leaf below ``tree`` loses beta ``depth`` (its path lost the split at that depth)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if "leaf" in node:
            key = node["leaf"]["betas"]
            if key is not None:
                betas = np.delete(_get(cert, key), depth)
                node["leaf"]["betas"] = _put(cert, betas, "float32") if betas.size else None
        else:
            stack.extend(node["children"])


def test_dropped_leaf_is_rejected(conjunction):
    """A split near the root replaced by one of its children (the other child's leaves dropped):
    with the kept leaves' betas left as they were, rejected for their length; with them adjusted,
    every variant whose leaves then claim a row that fails at a sampled point is rejected."""
    g, spec, out, margin, pre = conjunction
    cert = _cert(out)
    false_variants = 0
    for path, _ in _splits_near_root(cert["proofs"][0]["tree"], 3):
        for side in (0, 1):
            for betas in ("stale", "adjusted"):
                bad = copy.deepcopy(cert)
                root = bad["proofs"][0]["tree"]
                kept = _at(root, path + (side,))
                if betas == "adjusted":
                    _drop_first_beta(bad, kept, len(path))
                if path:
                    _at(root, path[:-1])["children"][path[-1]] = kept
                else:
                    bad["proofs"][0]["tree"] = kept
                report = check(g, spec, bad, "m", "s")
                if betas == "stale":
                    assert not report.ok and "betas have shape" in report.reasons[0], report.reasons
                elif _false_leaves(bad["proofs"][0]["tree"], margin, pre):
                    false_variants += 1
                    assert not report.ok, (path, side)
                    assert all("is not > 0" in r for r in report.reasons), report.reasons
    assert false_variants > 0


def test_alphas_naming_the_input_are_rejected_not_raised():
    """A net whose relu reads the input directly: alphas for value "x" must give a reason, not a KeyError."""
    from verifier.certificate import CertificateBuilder, leaf
    from verifier.model.graph import Node
    g = Graph("x", (2,), (Node("r", "relu", ("x",), (2,)),
                          Node("out", "linear", ("r",), (1,), {"weight": torch.tensor([[1.0, 1.0]]),
                                                              "bias": torch.tensor([1.0])})), "out")
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    spec = Spec(2, 1, (Region(lo, hi, (Polytope(np.array([[1.0]]), np.array([0.5])),)),))
    b = CertificateBuilder("m", "s")
    b.add_proof(0, 0, leaf(0, 0.5), alphas={"x": {"rows": b.add_array(np.array([5.0]), "float64"), "slopes": {}}})
    report = check(g, spec, b.to_json(), "m", "s")
    assert not report.ok and "alphas" in report.reasons[0]
