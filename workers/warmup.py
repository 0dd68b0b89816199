"""Pay a worker process's one-time costs before its first job: imports, torch's lazy set-up
(the first Adam step alone takes about 2 s), onnxruntime, the checker."""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

log = logging.getLogger("nnverify.worker")


def warm_up(threads: int) -> float:
    """Run one tiny verification through every step alpha-CROWN's route takes; seconds spent."""
    t0 = time.monotonic()
    import numpy as np
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from verifier.config import VerifyConfig
    from verifier.portfolio import verify

    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((2, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)], "warm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    spec = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} -0.1))\n(assert (<= X_{i} 0.1))\n" for i in range(4))
    spec += "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n(assert (>= Y_0 1000.0))\n"
    with tempfile.TemporaryDirectory(prefix="nnverify-warm-") as tmp:
        net, prop = Path(tmp) / "warm.onnx", Path(tmp) / "warm.vnnlib"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), net)
        prop.write_text(spec)
        result = verify(str(net), str(prop), VerifyConfig(timeout=30, method="alpha", workers=1))
    param = torch.zeros(2, requires_grad=True)   # alpha-CROWN's optimiser: its first step is the slow one
    optimiser = torch.optim.Adam([param], lr=0.1)
    (param * 2).sum().backward()
    optimiser.step()
    seconds = time.monotonic() - t0
    log.info("worker process warm in %.2fs (warm-up verdict %s)", seconds, result.verdict.value)
    return seconds
