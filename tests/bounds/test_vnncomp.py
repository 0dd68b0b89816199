"""Integration: bounds on real VNN-COMP 2021 networks enclose sampled outputs of their first property."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from verifier.bounds import BoundEngine
from verifier.config import AlphaConfig
from verifier.shared_data import absent_reason, benchmarks_root

ROOT = str(benchmarks_root() / "vnncomp2021")
CASES = [("mnistfc", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_0_0.03.vnnlib"),
         ("oval21", "onnx/cifar_base_kw.onnx", "vnnlib/cifar_base_kw-img4549-eps0.00392156862745098.vnnlib"),
         ("acasxu", "onnx/ACASXU_run2a_1_1_batch_2000.onnx", "vnnlib/prop_2.vnnlib")]


def _load(folder, onnx_rel, vnn_rel):
    """Graph, box and stacked unsafe rows of one instance (skips when files or parsers are missing)."""
    path = os.path.join(ROOT, folder, onnx_rel)
    if not os.path.exists(path):
        pytest.skip(absent_reason(path))
    loader = pytest.importorskip("verifier.model.onnx_loader")
    vnnlib = pytest.importorskip("verifier.spec.vnnlib")
    graph = loader.load_onnx(path).graph
    region = vnnlib.load_vnnlib(os.path.join(ROOT, folder, vnn_rel)).regions[0]
    A = torch.tensor(np.concatenate([p.A for p in region.unsafe]), dtype=torch.float32).unsqueeze(0)
    lo = torch.tensor(region.lower, dtype=torch.float32).unsqueeze(0)
    hi = torch.tensor(region.upper, dtype=torch.float32).unsqueeze(0)
    return graph, lo, hi, A


@pytest.mark.parametrize("folder,onnx_rel,vnn_rel", CASES)
def test_real_network_bounds(helpers, folder, onnx_rel, vnn_rel):
    """IBP / CROWN / alpha enclose sampled points (corners included) and are ordered."""
    graph, lo, hi, C = _load(folder, onnx_rel, vnn_rel)
    engine = BoundEngine(graph)
    res = {m: engine.compute(lo, hi, C, method=m, alpha=AlphaConfig(iterations=3)) for m in ("ibp", "crown", "alpha")}
    for r in res.values():
        helpers.assert_sound(r, graph, lo, hi, C=C, n=300)
    assert bool((res["crown"].lower >= res["ibp"].lower - 1e-5).all())
    assert bool((res["alpha"].lower >= res["crown"].lower).all())
