"""One root alpha-CROWN for several polytopes of a region (``shared_roots``): each search started from
it gives MILP's verdict, and its certificate (with the shared root alphas) passes the checker."""
from __future__ import annotations

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
from verifier.exact.milp import verify_milp
from verifier.search.relu_split import ReluSplitOptions, RootBounds, relu_split, shared_roots
from verifier.spec.spec import Polytope, Region, Spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exact"))
from milp_nets import mlp  # noqa: E402

N_IN, N_OUT = 12, 3
# unsafe polytopes A y <= b of the 12-8-12-8-3 net on its box (exact minima of the rows by MILP bisection):
POLYTOPES = [
    (np.array([[1.0, -1.0, 0.0]]), np.array([-0.55]), "holds"),             # min y0 - y1 = -0.107
    (np.array([[0.0, 1.0, -1.0], [1.0, 0.0, -1.0]]), np.array([-1.2, -1.2]), "holds"),   # mins -0.773, -0.803
    (np.array([[-1.0, 1.0, 0.0]]), np.array([-0.3]), "violated"),           # min y1 - y0 = -0.545
]
BUDGET = 30.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net():
    """The net, its box, and the spec with all three polytopes in one region."""
    g = mlp(3, N_IN, (8, 12, 8), N_OUT)
    centre = np.random.default_rng(3).uniform(-0.5, 0.5, N_IN)
    region = Region(centre - 0.4, centre + 0.4, tuple(Polytope(A, b) for A, b, _ in POLYTOPES))
    return g, Spec(N_IN, N_OUT, (region,))


def _roots(g, region, options=ReluSplitOptions()) -> list[RootBounds]:
    return shared_roots(BoundEngine(g), region.lower, region.upper, [A for A, _, _ in POLYTOPES],
                        list(range(len(POLYTOPES))), options)


def _validator(g, region, A, b):
    """A stand-in for ``verifier.counterexample``: the point clipped into the box (the search's float32
    points may lie a rounding step outside), if its float64 output lies in the unsafe polytope."""
    g64 = g.to(dtype=torch.float64)

    def validate(x):
        x = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), region.lower, region.upper)
        y = g64.forward(torch.as_tensor(x).reshape((1,) + g.input_shape)).numpy()
        return x if bool(np.all(A @ y.reshape(-1) <= b)) else None

    return validate


def _search(g, region, pi, root, options=ReluSplitOptions()):
    A, b, _ = POLYTOPES[pi]
    return relu_split(BoundEngine(g), g, region.lower, region.upper, A, b, _validator(g, region, A, b),
                      time.monotonic() + BUDGET, BabConfig(batch=64), options=options, root=root)


def _one_goal_spec(region, pi) -> Spec:
    A, b, _ = POLYTOPES[pi]
    return Spec(N_IN, N_OUT, (Region(region.lower, region.upper, (Polytope(A, b),)),))


def test_milp_ground_truth(net):
    """The verdicts the tests expect are exact MILP's."""
    g, spec = net
    region = spec.regions[0]
    for A, b, truth in POLYTOPES:
        assert verify_milp(g, Region(region.lower, region.upper, ()), Polytope(A, b), timeout=20).status == truth


def test_shared_roots_share_reference_and_alphas(net):
    """One RootBounds per polytope: the same reference bounds and intermediate alphas (the same
    objects), objective slopes with that polytope's own row count, and all polytopes named."""
    g, spec = net
    roots = _roots(g, spec.regions[0])
    assert len(roots) == len(POLYTOPES)
    first = roots[0]
    assert first.reference is not None and first.alphas
    assert set(first.alphas) <= {"fc1", "fc2"}   # pre-activations behind a relu (fc0 is linear in x)
    for root, (A, _, _) in zip(roots, POLYTOPES):
        assert root.reference is first.reference and root.alphas is first.alphas
        assert root.polytopes == (0, 1, 2)
        assert root.init and set(root.init) <= {"act0", "act1", "act2"}
        for name, t in root.init.items():
            assert t.shape[0] == 1 and t.shape[1] in (len(A), 1), (name, tuple(t.shape))
            assert t.shape[2:] == g.node_map[name].shape
            assert torch.all((t >= 0) & (t <= 1))
    assert all(t.shape[1] == 2 for t in roots[1].init.values())   # the two-row polytope got both its rows
    for name, (lo, hi) in first.reference.items():
        assert lo.shape == hi.shape and bool(torch.all(lo <= hi)), name


def test_searches_leave_the_shared_root_unchanged(net):
    """The RootBounds share storage (reference, alphas, slices of one slope tensor): searching every
    polytope from them changes none of it."""
    g, spec = net
    region = spec.regions[0]
    roots = _roots(g, region)
    init = [{k: t.clone() for k, t in r.init.items()} for r in roots]
    reference = {k: (lo.clone(), hi.clone()) for k, (lo, hi) in roots[0].reference.items()}
    alphas = {v: (rows.copy(), {k: a.copy() for k, a in slopes.items()}) for v, (rows, slopes) in roots[0].alphas.items()}
    assert [_search(g, region, pi, roots[pi]).status for pi in range(3)] == [truth for _, _, truth in POLYTOPES]
    for r, before in zip(roots, init):
        assert all(torch.equal(r.init[k], t) for k, t in before.items())
    assert all(torch.equal(roots[0].reference[k][0], lo) and torch.equal(roots[0].reference[k][1], hi)
               for k, (lo, hi) in reference.items())
    for v, (rows, slopes) in alphas.items():
        assert np.array_equal(roots[0].alphas[v][0], rows)
        assert all(np.array_equal(roots[0].alphas[v][1][k], a) for k, a in slopes.items())


def test_shared_root_reference_is_sound(net):
    """The shared reference bounds contain every value at sampled points of the box (and its corners)."""
    g, spec = net
    region = spec.regions[0]
    reference = _roots(g, region)[0].reference
    rng = np.random.default_rng(0)
    x = rng.uniform(region.lower, region.upper, (3000, N_IN))
    x[:300] = np.where(rng.random((300, N_IN)) < 0.5, region.lower, region.upper)
    values = g.to(dtype=torch.float64).forward(torch.as_tensor(x), keep=True)
    for name, (lo, hi) in reference.items():
        v = values[name].flatten(1)
        lo, hi = lo.double().flatten(), hi.double().flatten()
        assert torch.all(v >= lo - 1e-5 * (1 + v.abs())) and torch.all(v <= hi + 1e-5 * (1 + v.abs())), name


@pytest.mark.parametrize("pi", [0, 1])
def test_search_from_shared_root_holds_and_checks(net, pi):
    """A holding polytope, searched from the shared root: holds, its log carries the shared root
    alphas, and the certificate (proof "alphas") is accepted by the independent checker."""
    g, spec = net
    region = spec.regions[0]
    roots = _roots(g, region)
    out = _search(g, region, pi, roots[pi])
    assert out.status == "holds", out.stats
    assert out.log.root_alphas is roots[pi].alphas
    cert = to_certificate("m", "s", [(0, 0, out.log.tree())])
    assert set(cert["proofs"][0]["alphas"]) == set(roots[pi].alphas)
    report = check(g, _one_goal_spec(region, pi), cert, "m", "s")
    assert report.ok, report.reasons
    assert report.leaves == len(out.log.leaves)


def test_one_certificate_for_all_holding_polytopes(net):
    """Two polytopes proved from one shared root, both proofs in one certificate, checked together
    with a spec of just those two polytopes: accepted."""
    g, spec = net
    region = spec.regions[0]
    roots = _roots(g, region)
    proofs = []
    for pi in (0, 1):
        out = _search(g, region, pi, roots[pi])
        assert out.status == "holds", out.stats
        proofs.append((0, pi, out.log.tree()))
    cert = to_certificate("m", "s", proofs)
    assert cert["proofs"][0]["alphas"] == cert["proofs"][1]["alphas"]   # identical arrays stored once
    both = Spec(N_IN, N_OUT, (Region(region.lower, region.upper, region.unsafe[:2]),))
    report = check(g, both, cert, "m", "s")
    assert report.ok, report.reasons


def test_search_from_shared_root_finds_counterexample(net):
    """The violated polytope, searched from the same shared root: a counterexample in the box whose
    float64 outputs lie in the unsafe polytope."""
    g, spec = net
    region = spec.regions[0]
    out = _search(g, region, 2, _roots(g, region)[2])
    assert out.status == "violated", out.stats
    x = np.asarray(out.counterexample, dtype=np.float64).reshape(-1)
    assert np.all(x >= region.lower) and np.all(x <= region.upper)
    y = g.to(dtype=torch.float64).forward(torch.as_tensor(x).reshape(1, -1)).numpy().reshape(-1)
    A, b, _ = POLYTOPES[2]
    assert np.all(A @ y <= b)


def test_checker_mode_has_no_root_alphas_and_still_checks(net):
    """bounds="checker": shared_roots gives no reference and no alphas; the search from it holds,
    its tree and certificate carry no alphas, and the checker accepts it."""
    g, spec = net
    region = spec.regions[0]
    options = ReluSplitOptions(bounds="checker")
    roots = _roots(g, region, options)
    assert all(r.reference is None and r.alphas == {} and r.init == {} for r in roots)
    for root in (roots[0], None):
        out = _search(g, region, 0, root, options)
        assert out.status == "holds", out.stats
        assert out.log.root_alphas == {}
        tree = out.log.tree()
        assert "root_alphas" not in tree
        cert = to_certificate("m", "s", [(0, 0, tree)])
        assert "alphas" not in cert["proofs"][0]
        report = check(g, _one_goal_spec(region, 0), cert, "m", "s")
        assert report.ok, report.reasons


def test_unknown_bounds_mode_is_refused(net):
    """A misspelt bounds mode fails loudly instead of falling back to one."""
    g, spec = net
    with pytest.raises(ValueError, match="unknown bounds mode"):
        _roots(g, spec.regions[0], ReluSplitOptions(bounds="roots"))
