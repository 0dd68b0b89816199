"""ACAS Xu in VNN-LIB 2.0: every 1.0 property rewritten as 2.0 compiles to the same ``Spec``,
and the 2.0 path (``verify_query``) reaches the 1.0 path's verdicts on fast instances."""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from verifier.config import VerifyConfig
from verifier.portfolio import verify
from verifier.query import compile_files, verify_query, witness_lines
from verifier.result import Verdict
from verifier.shared_data import absent_reason, benchmarks_root
from verifier.spec.vnnlib import load_vnnlib
from vnnlib2_convert import spec_to_vnnlib2

PROPERTIES = [f"prop_{k}" for k in range(1, 11)]
INPUT_SHAPE, OUTPUT_SHAPE = (1, 1, 1, 5), (1, 5)   # the ACAS Xu ONNX files' own input / output shapes
TIMEOUT = 30.0

# (network "a_b", property): the five fastest of props 1-4 in benchmarks/results/acasxu-full-116s
# (tool_time_s), plus prop 8's one instance (prop 10's takes 15 s per path: its spec equality is tested above).
INSTANCES = [
    ("1_9", "prop_1"), ("1_7", "prop_1"), ("1_8", "prop_1"), ("1_1", "prop_1"), ("1_5", "prop_1"),
    ("4_5", "prop_2"), ("4_6", "prop_2"), ("4_3", "prop_2"), ("5_4", "prop_2"), ("5_1", "prop_2"),
    ("1_9", "prop_3"), ("1_8", "prop_3"), ("1_7", "prop_3"), ("2_4", "prop_3"), ("4_5", "prop_3"),
    ("1_7", "prop_4"), ("1_9", "prop_4"), ("1_8", "prop_4"), ("5_6", "prop_4"), ("2_9", "prop_4"),
    ("2_9", "prop_8"),
]
_WITNESS = re.compile(r"([XY])\[([0-9,]+)\]=(\S+)\Z")


@pytest.fixture(scope="module")
def acas():
    """The shared ACAS Xu folder (skips when the shared benchmarks are not laid out)."""
    folder = benchmarks_root() / "vnncomp2021" / "acasxu"
    if not (folder / "instances.csv").is_file():
        pytest.skip(absent_reason(folder / "instances.csv"))
    return folder


@pytest.fixture(scope="module")
def queries(acas, tmp_path_factory):
    """Every ACAS Xu 1.0 property converted to a 2.0 query file: name -> (1.0 path, 2.0 path)."""
    out = tmp_path_factory.mktemp("acas-vnnlib2")
    files = {}
    for prop in PROPERTIES:
        v1 = acas / "vnnlib" / f"{prop}.vnnlib"
        v2 = out / f"{prop}.vnnlib2"
        v2.write_text(spec_to_vnnlib2(load_vnnlib(v1), INPUT_SHAPE, OUTPUT_SHAPE))
        files[prop] = (v1, v2)
    return files


@pytest.fixture(scope="module")
def truth(acas):
    """(onnx relative path, vnnlib relative path) -> 'sat' | 'unsat' (truth.csv)."""
    with open(acas / "truth.csv", newline="") as f:
        return {(row["onnx"], row["vnnlib"]): row["truth"] for row in csv.DictReader(f)}


def _onnx(acas, net: str):
    return acas / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx"


def test_onnx_shapes_match_the_declarations(acas):
    """The converter's declared shapes are the ONNX graph's (input [1,1,1,5], output [1,5])."""
    import onnx

    model = onnx.load(str(_onnx(acas, "1_1")))
    inits = {i.name for i in model.graph.initializer}
    shapes = [tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
              for v in list(model.graph.input) + list(model.graph.output) if v.name not in inits]
    assert shapes == [INPUT_SHAPE, OUTPUT_SHAPE]


@pytest.mark.parametrize("prop", PROPERTIES)
def test_vnnlib2_compiles_to_the_same_spec(acas, queries, prop):
    """Same regions in the same order, equal boxes, equal polytopes (rows sorted).

    Equality is exact: the converter prints each float64 as its exact decimal, the 2.0 parser
    reads literals as exact rationals, and the compiler rounds them back to the same float64.
    """
    v1, v2 = queries[prop]
    spec1 = load_vnnlib(v1)
    spec2 = compile_files(v2, {"acas": str(_onnx(acas, "1_1"))}).spec
    assert (spec2.n_inputs, spec2.n_outputs) == (spec1.n_inputs, spec1.n_outputs) == (5, 5)
    assert len(spec2.regions) == len(spec1.regions)
    for r1, r2 in zip(spec1.regions, spec2.regions):
        np.testing.assert_array_equal(r2.lower, r1.lower)
        np.testing.assert_array_equal(r2.upper, r1.upper)
        assert len(r2.unsafe) == len(r1.unsafe)
        for p1, p2 in zip(r1.unsafe, r2.unsafe):
            np.testing.assert_array_equal(_sorted_rows(p2), _sorted_rows(p1))
            assert not p2.strict.any()


def _sorted_rows(poly) -> np.ndarray:
    """[A | b] with rows in lexicographic order."""
    rows = np.column_stack([poly.A, poly.b])
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("net,prop", INSTANCES, ids=[f"{n}-{p}" for n, p in INSTANCES])
def test_vnnlib2_verdict_matches_vnnlib1(acas, queries, truth, net, prop):
    """Both paths decide the instance alike, agree with truth.csv, and a 2.0 witness is genuine."""
    v1, v2 = queries[prop]
    onnx_path = _onnx(acas, net)
    config = VerifyConfig(timeout=TIMEOUT)
    r1 = verify(str(onnx_path), str(v1), config)
    r2, compiled = verify_query(v2, {"acas": str(onnx_path)}, config)
    assert compiled is not None, r2.reason
    assert r2.verdict == r1.verdict, f"1.0: {r1.verdict.value} ({r1.reason}); 2.0: {r2.verdict.value} ({r2.reason})"
    expected = truth[(f"onnx/{onnx_path.name}", f"vnnlib/{prop}.vnnlib")]
    if r2.verdict in (Verdict.HOLDS, Verdict.VIOLATED):
        assert r2.verdict.vnncomp == expected
    if r2.verdict == Verdict.VIOLATED:
        _check_witness(compiled, onnx_path, r2.counterexample)


def _check_witness(compiled, onnx_path, cex) -> None:
    """The witness lists X[0,0,0,0..4] then Y[0,0..4]; X lies in a 2.0 box and onnxruntime's Y on it is unsafe."""
    import onnxruntime as ort

    lines = witness_lines(compiled, cex.x, cex.y)
    names = [f"X[0,0,0,{i}]" for i in range(5)] + [f"Y[0,{j}]" for j in range(5)]
    parsed = [_WITNESS.match(line) for line in lines]
    assert all(parsed), lines
    assert [f"{m.group(1)}[{m.group(2)}]" for m in parsed] == names
    x = np.array([float(m.group(3)) for m in parsed[:5]])
    y_reported = np.array([float(m.group(3)) for m in parsed[5:]])
    spec = compiled.spec
    inside = [k for k, r in enumerate(spec.regions) if r.contains(x)]
    assert inside, f"witness X {x} lies in no input box of the 2.0 query"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.astype(np.float32).reshape(INPUT_SHAPE)}
    y = session.run(None, feed)[0].reshape(-1).astype(np.float64)
    np.testing.assert_allclose(y_reported, y, rtol=1e-5, atol=1e-5)
    assert any(p.satisfied_by(y) for k in inside for p in spec.regions[k].unsafe), \
        f"onnxruntime output {y} on witness {x} satisfies no unsafe polytope"
