"""A weak leaf (the checker cannot re-derive it) on a network with many inputs is re-proved by ReLU splitting."""
from __future__ import annotations

import time

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier.bounds import BoundEngine
from verifier.config import VerifyConfig
from verifier.model import load_onnx
from verifier.portfolio import Goal, Run, _certified, pick_device
from verifier.result import Result, Verdict
from verifier.spec.spec import Polytope, Region, Spec

N_IN = 24     # more than bab.input_split_max_dims: bisecting the box cannot repair a leaf


def _net(path) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(N_IN, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 2))
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    nodes, inits, prev = [], [], "x"
    for k, m in enumerate(layers):
        inits += [numpy_helper.from_array(m.weight.detach().numpy(), f"W{k}"),
                  numpy_helper.from_array(m.bias.detach().numpy(), f"b{k}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{k}", f"b{k}"], [f"z{k}"], transB=1))
        prev = f"z{k}"
        if k < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [prev], [f"h{k}"]))
            prev = f"h{k}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N_IN])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 2])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path), net


def test_a_weak_root_leaf_is_replaced_by_a_relu_split_proof_that_checks(tmp_path):
    path, net = _net(tmp_path / "w.onnx")
    lo, hi = -0.3 * np.ones(N_IN), 0.3 * np.ones(N_IN)
    xs = torch.rand(200_000, N_IN) * 0.6 - 0.3
    f = (net(xs) @ torch.tensor([1.0, -1.0])).detach().numpy()
    model = load_onnx(path)
    root = float(BoundEngine(model.graph).compute(torch.tensor(lo[None], dtype=torch.float32),
                                                  torch.tensor(hi[None], dtype=torch.float32),
                                                  torch.tensor([[[1.0, -1.0]]]), method="crown").lower[0, 0])
    t = root + 0.7 * (float(f.min()) - root)       # y0 - y1 <= t is unsafe: CROWN at the root cannot refute it
    spec = Spec(N_IN, 2, [Region(lo, hi, [Polytope(np.array([[1.0, -1.0]]), np.array([t]))])])
    config = VerifyConfig(timeout=60)
    run = Run(model, spec, "", config, time.monotonic() + 60, pick_device("cpu"), Result(Verdict.UNKNOWN))
    goal = Goal(0, 0, proved=True, method="alpha", proof={"leaf": {"row": 0, "bound": 1.0}})  # a claim CROWN cannot back
    run.goals = [goal]
    assert _certified(run), run.result.log
    assert run.result.certificate_checked and run.result.certificate is not None
    assert "split" in goal.proof and goal.proof["split"]["kind"] == "relu"
    assert run.result.log[0].endswith("1 weak leaves") and run.result.log[-1].endswith(": ok")
