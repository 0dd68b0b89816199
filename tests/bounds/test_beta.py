"""beta-CROWN: bounds on ReLU-split subdomains stay below every feasible sampled point."""
from __future__ import annotations

import torch

from verifier.bounds import BoundEngine
from verifier.bounds.beta import BetaConfig, compute_domains, split_bounds
from verifier.bounds.problem import input_box, spec_rows

N_DOM = 4


def _setup(helpers, nets, seed=5):
    """A 3-hidden-layer relu MLP, a box (4 copies), and sign-consistent splits around anchor points."""
    graph = nets.mlp([4, 12, 12, 12, 3], "relu", seed=seed)
    lo, hi = helpers.random_box(1, (4,), torch.Generator().manual_seed(seed + 1), width=2.0)
    lo, hi = lo.expand(N_DOM, 4).clone(), hi.expand(N_DOM, 4).clone()
    inter = BoundEngine(graph).compute(lo, hi).intermediate
    anchors = helpers.sample_box(lo, hi, 40, torch.Generator().manual_seed(seed + 2))[[3, 11, 25, 33], range(N_DOM)]
    vals = graph.forward(anchors, keep=True)
    splits = {}
    for relu, pre in (("act0", "fc0"), ("act1", "fc1"), ("act2", "fc2")):
        unstable = ((inter[pre][0] < 0) & (inter[pre][1] > 0))[0].nonzero().flatten()
        s = torch.zeros(N_DOM, 12, dtype=torch.int8)
        for b in range(N_DOM):  # split as the anchor of domain b lies: every domain is non-empty
            chosen = unstable[b % max(1, len(unstable)):][:2]
            s[b, chosen] = torch.where(vals[pre][b, chosen] >= 0, 1, -1).to(torch.int8)
        splits[relu] = s
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]).unsqueeze(0)
    return graph, lo, hi, splits, C


def _feasible_values(helpers, graph, lo, hi, splits, C, n=6000):
    """Sampled C @ y [n, B, R] and the mask [n, B] of samples satisfying each domain's splits."""
    x = helpers.sample_box(lo, hi, n, torch.Generator().manual_seed(11))
    vals = graph.forward(x.reshape(-1, lo.shape[1]), keep=True)
    ok = torch.ones(x.shape[:2], dtype=torch.bool)
    for relu, s in splits.items():
        z = vals[graph.node_map[relu].inputs[0]].reshape(n + 2, N_DOM, -1)
        s = s.unsqueeze(0)
        ok &= ((s <= 0) | (z >= 0)).all(-1) & ((s >= 0) | (z <= 0)).all(-1)
    y = vals[graph.output_name].reshape(n + 2, N_DOM, -1)
    return torch.einsum("rk,nbk->nbr", C[0], y), ok


def _random_params(graph, gen, rows=2):
    """Random alphas in [0, 1] and betas >= 0 (exponential, mean 1) for every relu node."""
    alphas, betas = {}, {}
    for node in graph.nodes:
        if node.op == "relu":
            shape = (N_DOM, rows) + tuple(node.shape)
            alphas[node.name] = torch.rand(shape, generator=gen)
            betas[node.name] = -torch.log(torch.rand(shape, generator=gen).clamp(min=1e-6))
    return alphas, betas


def test_random_alphas_and_betas_are_sound(helpers, nets):
    """Any alpha in [0, 1] and beta >= 0 gives a lower bound of every feasible sampled point."""
    graph, lo, hi, splits, C = _setup(helpers, nets)
    v, ok = _feasible_values(helpers, graph, lo, hi, splits, C)
    assert all(int(ok[:, b].sum()) > 10 for b in range(N_DOM))
    engine = BoundEngine(graph)
    gen = torch.Generator().manual_seed(3)
    for trial in range(5):
        alphas, betas = _random_params(graph, gen)
        for refine in (False, True):
            res = compute_domains(engine, lo, hi, C, splits, alphas=alphas, betas=betas,
                                  cfg=BetaConfig(iterations=1), refine=refine)
            for b in range(N_DOM):
                assert bool((v[ok[:, b], b] >= res.lower[b] - 1e-5).all()), (trial, refine, b)


def test_optimised_bounds_are_sound_and_never_worse(helpers, nets):
    """Joint alpha/beta optimisation: still below every feasible point, never below beta = 0."""
    graph, lo, hi, splits, C = _setup(helpers, nets, seed=9)
    v, ok = _feasible_values(helpers, graph, lo, hi, splits, C)
    engine = BoundEngine(graph)
    plain = compute_domains(engine, lo, hi, C, splits, cfg=BetaConfig(iterations=1))
    best = compute_domains(engine, lo, hi, C, splits, cfg=BetaConfig(iterations=30, early_stop=False))
    assert bool((best.lower >= plain.lower - 1e-6).all())
    assert float((best.lower - plain.lower).max()) > 1e-4  # the optimisation does something here
    for name, t in best.betas.items():
        assert bool((t >= 0).all()) and bool((best.alphas[name] >= 0).all() & (best.alphas[name] <= 1).all())
    for b in range(N_DOM):
        if bool(ok[:, b].any()):
            assert bool((v[ok[:, b], b] >= best.lower[b] - 1e-5).all())


def test_zero_beta_is_crown_on_clamped_bounds(helpers, nets):
    """beta = 0 with default slopes reproduces CROWN's objective pass on the same clamped bounds."""
    graph, lo, hi, splits, C = _setup(helpers, nets)
    engine = BoundEngine(graph, forward_max_inputs=0)
    res = compute_domains(engine, lo, hi, C, splits, cfg=BetaConfig(iterations=1), refine=True)
    A_spec, _ = spec_rows(graph, C, res.bounds[graph.input_name][0], False, engine.dtype)
    crown = engine.spec_lower(A_spec, res.bounds, None, {})
    assert torch.allclose(res.lower, crown, atol=1e-5)
    clamped = engine.compute(lo, hi, C, splits=splits, want_upper=False)
    for pre in ("fc0", "fc1", "fc2"):
        assert torch.allclose(res.bounds[pre][0], clamped.intermediate[pre][0], atol=1e-5)


def test_contradictory_split_marks_domain_empty(helpers, nets):
    """Splitting a stably active neuron inactive leaves no feasible point: the domain is empty."""
    graph = nets.mlp([3, 8, 2], "relu", seed=1)
    lo, hi = torch.full((2, 3), -0.01), torch.full((2, 3), 0.01)
    engine = BoundEngine(graph)
    pre_lo, pre_hi = engine.compute(lo, hi).intermediate["fc0"]
    k = int(torch.nonzero(pre_lo[0] > 0).flatten()[0]) if bool((pre_lo[0] > 0).any()) else None
    sign = -1
    if k is None:
        k, sign = int(torch.nonzero(pre_hi[0] < 0).flatten()[0]), 1
    s = torch.zeros(2, 8, dtype=torch.int8)
    s[0, k] = sign
    box = input_box(graph, lo, hi, engine.device, engine.dtype)
    _, empty = split_bounds(engine, box, {"act0": s}, None)
    assert empty.tolist() == [True, False]
