"""Integration: the published VNN-COMP networks load and agree with onnxruntime."""
import csv
import functools
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from verifier.model import UnsupportedModelError, load_onnx
from verifier.model.reference import OnnxRunner
from verifier.shared_data import absent_reason, benchmarks_root

ROOT = benchmarks_root()
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=absent_reason(ROOT))


def _distinct_networks(year: str) -> dict[str, tuple[Path, str]]:
    """sha256-distinct networks of one year -> (path, first vnnlib path relative to its benchmark)."""
    out: dict[str, tuple[Path, str]] = {}
    for csv_path in sorted((ROOT / year).glob("*/instances.csv")):
        with open(csv_path) as f:
            for row in csv.reader(f):
                if not row or not row[0].endswith(".onnx"):
                    continue
                path = csv_path.parent / row[0]
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(path)
                out.setdefault(digest, (path, str(csv_path.parent / row[1])))
    return out


@functools.lru_cache(maxsize=None)
def _load(path: str):
    """Loaded model, cached for the session."""
    return load_onnx(path)


def _declared_inputs(vnnlib: str) -> int:
    """Number of X_i declared by a property file."""
    return len(set(re.findall(r"declare-const\s+X_(\d+)", Path(vnnlib).read_text())))


def _agree(path: Path, n: int = 3, seed: int = 0) -> None:
    """Graph.forward matches onnxruntime on the original file."""
    model, runner = _load(str(path)), OnnxRunner(str(path))
    x = np.random.default_rng(seed).uniform(-1, 1, (n, model.graph.n_inputs)).astype(np.float32)
    ref = runner.run(x)
    out = model.graph.forward(torch.tensor(x).reshape((n,) + model.input_shape)).reshape(n, -1).double().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(ref).max()))


NETS_2021 = sorted((str(p), v) for p, v in _distinct_networks("vnncomp2021").values()) if ROOT.is_dir() else []


@pytest.mark.parametrize("path,vnnlib", NETS_2021, ids=[Path(p).name for p, _ in NETS_2021])
def test_vnncomp2021_network_loads_and_agrees(path, vnnlib):
    model = _load(path)
    assert model.graph.n_inputs == _declared_inputs(vnnlib)
    assert {n.op for n in model.graph.nodes} <= {"linear", "conv", "relu", "add", "affine", "reshape"}
    _agree(Path(path), n=2)


LATER = [  # (family, network file, None if it loads, else ops the error must list)
    ("vnncomp2022/cifar_biasfield", "cifar_bias_field_0.onnx", None),
    ("vnncomp2022/collins_rul_cnn", "NN_rul_full_window_40.onnx", None),
    ("vnncomp2022/reach_prob_density", "robot.onnx", None),
    ("vnncomp2022/rl_benchmarks", "dubinsrejoin.onnx", None),
    ("vnncomp2022/sri_resnet_a", "resnet_3b2_bn_mixup_adv_4.0_bs128_lr-1.onnx", None),
    ("vnncomp2022/tllverifybench", "tllBench_n=2_N=M=8_m=1_instance_0_0.onnx", None),
    ("vnncomp2023/cgan", "cGAN_imgSz32_nCh_3_upsample.onnx", None),
    ("vnncomp2023/cgan", "cGAN_imgSz32_nCh_1_transposedConvPadding_1.onnx", None),
    ("vnncomp2023/dist_shift", "mnist_concat.onnx", None),
    ("vnncomp2023/metaroom", "4cnn_ry_117_19_no_custom_OP.onnx", None),
    ("vnncomp2023/nn4sys", "pensieve_small_simple.onnx", None),
    # mscn, pensieve_parallel, ml4acopf and vit need the bilinear / curve ops: they are compared
    # on points of their properties' boxes in tests/model/test_onnx_new_ops.py
]


@pytest.mark.parametrize("family,name,missing", LATER, ids=[f"{f}/{n}" for f, n, _ in LATER])
def test_later_families(family, name, missing):
    path = ROOT / family / "onnx" / name
    if not path.is_file():
        pytest.skip(absent_reason(path))
    if missing is None:
        _agree(path)
        return
    with pytest.raises(UnsupportedModelError) as err:
        _load(str(path))
    for op in missing:
        assert f"{op} (node" in str(err.value)
