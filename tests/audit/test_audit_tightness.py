"""IBP tightness: the inner (sampled) estimate lies in [0, 1] below the outer one, inside the IBP box."""
from __future__ import annotations

import numpy as np
import torch

from audit_helpers import mlp_claim
from verifier.audit.claim import load_claim
from verifier.audit.plan import input_box, plan_items
from verifier.audit.tightness import ibp_boxes, ibp_tightness, layers_of, sampled_box
from verifier.model import load_onnx


def _boxes(claim, eps, k=3):
    """Boxes of the first ``k`` correctly classified samples."""
    good = [it for it in plan_items(claim) if not it.misclassified][:k]
    return [input_box(claim.x[it.sample], eps, claim.clip, claim.mean, claim.std, claim.input_shape) for it in good]


def test_sampled_activations_lie_inside_the_ibp_box(digits):
    """Every point the inner estimate reaches is inside IBP's box at every layer (IBP is sound)."""
    claim = load_claim(mlp_claim(digits["folder"], "tight.json", eps=0.1))
    graph = load_onnx(str(claim.model)).graph.to(dtype=torch.float64)
    names = layers_of(graph)
    for lo, hi in _boxes(claim, 0.1):
        lower = torch.tensor(lo).reshape((1,) + tuple(graph.input_shape))
        upper = torch.tensor(hi).reshape((1,) + tuple(graph.input_shape))
        ibp = ibp_boxes(graph, lower, upper)
        inner = sampled_box(graph, lower[0], upper[0], names)
        for n in names:
            i_lo, i_hi = ibp[n][0].reshape(-1), ibp[n][1].reshape(-1)
            s_lo, s_hi = inner[n]
            slack = 1e-9 * (1 + i_hi.abs().max())
            assert torch.all(s_lo >= i_lo - slack) and torch.all(s_hi <= i_hi + slack), n
            assert torch.all(s_lo <= s_hi)


def test_estimates_bracket_and_first_layer_is_exact(digits):
    """0 <= lower <= upper <= 1 at every layer; the first affine layer's IBP box is exact (both 1)."""
    for model, eps in (("mlp", 0.05), ("cnn", 0.1)):
        fields = {} if model == "mlp" else {"model": "cnn-ibp.onnx", "mean": None, "std": None}
        claim = load_claim(mlp_claim(digits["folder"], f"tight-{model}.json", eps=eps, **fields))
        outer = "alpha" if model == "mlp" else "crown"
        table = ibp_tightness(claim, plan_items(claim), max_samples=2, outer=outer)
        (block,) = table["per_eps"]
        assert block["samples"] == 2 and table["outer_method"] == {"alpha": "alpha-CROWN", "crown": "CROWN"}[outer]
        for layer in block["layers"]:
            assert 0.0 <= layer["tightness_lower"] <= 1.0 + 1e-9, layer
            assert layer["tightness_lower"] <= layer["tightness_upper"] + 1e-9 <= 1.0 + 2e-9, layer
            assert layer["inner_width"] <= layer["outer_width"] + 1e-9 <= layer["ibp_width"] + 2e-9, layer
        first = block["layers"][0]
        assert first["tightness_upper"] > 1 - 1e-9
        if first["neurons"] <= 256:   # every neuron of the layer got its own gradient search
            assert first["tightness_lower"] > 1 - 1e-9


def test_ibp_trained_cnn_is_tighter_than_the_plain_mlp(digits):
    """Mao et al.'s observation on our two models: IBP training keeps the output box tight."""
    mlp = load_claim(mlp_claim(digits["folder"], "tm.json", eps=0.05))
    cnn = load_claim(mlp_claim(digits["folder"], "tc.json", eps=0.05, model="cnn-ibp.onnx", mean=None, std=None))
    t_mlp = ibp_tightness(mlp, plan_items(mlp), max_samples=2)["per_eps"][0]["layers"][-1]["tightness_lower"]
    t_cnn = ibp_tightness(cnn, plan_items(cnn), max_samples=2)["per_eps"][0]["layers"][-1]["tightness_lower"]
    assert t_cnn > t_mlp, (t_cnn, t_mlp)
    assert np.isfinite(t_mlp)
