"""Pay a worker process's one-time costs before its first job: imports, torch's lazy set-up,
onnxruntime, the checker (about 3-6 s on this machine; a job should not pay them)."""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

log = logging.getLogger("nnverify.worker")


def warm_up(threads: int) -> float:
    """Run one tiny verification (attack, CROWN, the certificate check); seconds spent."""
    t0 = time.monotonic()
    import torch

    from verifier.config import VerifyConfig
    from verifier.portfolio import verify

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="nnverify-warm-") as tmp:
        net, prop = tiny_instance(Path(tmp))
        result = verify(str(net), str(prop), VerifyConfig(timeout=30, method="alpha", workers=1))
    seconds = time.monotonic() - t0
    log.info("worker process warm in %.2fs (warm-up verdict %s)", seconds, result.verdict.value)
    return seconds


def tiny_instance(folder: Path) -> tuple[Path, Path]:
    """A 4-8-2 ReLU net and a property CROWN proves at once (a job that is almost all overhead)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((2, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    net, prop = folder / "tiny.onnx", folder / "tiny.vnnlib"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), net)
    spec = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} -0.1))\n(assert (<= X_{i} 0.1))\n" for i in range(4))
    prop.write_text(spec + "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n(assert (>= Y_0 1000.0))\n")
    return net, prop
