"""The certificate format: arrays, builder, tree helper, files (and check_files on real ONNX/VNN-LIB)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import cert_factory as cf
from verifier.certificate import (FORMAT, VERSION, CertificateBuilder, CertificateError, decode_array, encode_array,
                                  input_split_tree, leaf, load_certificate, relu_split, sha256_file)
from verifier.check import check_files
from verifier.shared_data import benchmarks_root

BENCH = benchmarks_root() / "vnncomp2021" / "test"


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_array_round_trip(dtype):
    a = np.random.default_rng(0).uniform(0, 1, size=(3, 4))
    back = decode_array(encode_array(a, dtype))
    assert back.dtype == np.float64 and back.shape == (3, 4)
    assert np.array_equal(back, a.astype(dtype).astype(np.float64))
    assert np.all((back >= 0) & (back <= 1)), "rounding an alpha keeps it in [0, 1]"


@pytest.mark.parametrize("entry, needle", [
    ({"dtype": "int8", "shape": [1], "data": "AA=="}, "dtype 'int8'"),
    ({"dtype": "float32", "shape": [2], "data": "AAAAAA=="}, "do not hold shape"),
    ({"dtype": "float32", "shape": [-1], "data": ""}, "non-negative integers"),
    ({"dtype": "float32", "shape": [1], "data": "!!"}, "invalid base64"),
    ({"dtype": "float32", "shape": [1]}, "exactly the fields")])
def test_malformed_arrays_rejected(entry, needle):
    with pytest.raises(CertificateError) as e:
        decode_array(entry, "k")
    assert needle in str(e.value)


def test_builder_dedups_arrays_and_writes_the_header(tmp_path):
    b = CertificateBuilder("ab" * 32, "cd" * 32)
    k1, k2, k3 = b.add_array(np.ones(3)), b.add_array(np.ones(3)), b.add_array(np.ones(3), "float16")
    assert k1 == k2 != k3 and len(b.arrays) == 2
    b.add_proof(0, 0, leaf(0, 1.0))
    cert = b.to_json()
    assert (cert["format"], cert["version"], cert["verdict"]) == (FORMAT, VERSION, "holds")
    assert cert["tool"].startswith("nnverify ") and cert["created"]
    b.save(tmp_path / "c.json")
    assert load_certificate(tmp_path / "c.json") == json.loads(json.dumps(cert))


def test_load_rejects_non_json(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CertificateError, match="cannot read certificate"):
        load_certificate(tmp_path / "bad.json")


def test_sha256_file(tmp_path):
    (tmp_path / "f").write_bytes(b"nnverify")
    assert sha256_file(tmp_path / "f") == hashlib.sha256(b"nnverify").hexdigest()


def test_input_split_tree_builds_nested_splits_with_boxes():
    b = CertificateBuilder("m", "s")
    leaves = [([(0, 0.0, 0)], leaf(0, 1.0)), ([(0, 0.0, 1), ("relu", "r", 2, 0)], leaf(1, 2.0)),
              ([(0, 0.0, 1), ("relu", "r", 2, 1)], leaf(0, 3.0))]
    tree = input_split_tree(leaves, (np.array([-1.0, -1.0]), np.array([1.0, 1.0])), b)
    assert tree["split"] == {"kind": "input", "dim": 0, "at": 0.0}
    low, high = tree["children"]
    assert decode_array(b.arrays[low["leaf"]["box"][1]]).tolist() == [0.0, 1.0]
    assert high == relu_split("r", 2, high["children"][0], high["children"][1])
    assert decode_array(b.arrays[high["children"][1]["leaf"]["box"][0]]).tolist() == [0.0, -1.0]


def test_input_split_tree_refuses_gaps_and_conflicts():
    with pytest.raises(ValueError, match="missing child"):
        input_split_tree([([(0, 0.5, 0)], leaf(0, 1.0))])
    with pytest.raises(ValueError, match="disagree"):
        input_split_tree([([(0, 0.5, 0)], leaf(0, 1.0)), ([(1, 0.5, 1)], leaf(0, 1.0))])



def _write_vnnlib(path: Path, spec) -> None:
    """One region, one polytope: declare, box asserts, output rows."""
    region = spec.regions[0]
    lines = [f"(declare-const X_{i} Real)" for i in range(spec.n_inputs)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(spec.n_outputs)]
    for i, (lo, hi) in enumerate(zip(region.lower, region.upper)):
        lines += [f"(assert (>= X_{i} {float(lo)!r}))", f"(assert (<= X_{i} {float(hi)!r}))"]
    poly = region.unsafe[0]
    for row, rhs in zip(poly.A, poly.b):
        j = int(np.argmax(row))
        lines.append(f"(assert (<= Y_{j} {float(rhs)!r}))")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An ONNX model, a VNN-LIB property, and a certificate written from the loaded files."""
    pytest.importorskip("verifier.model.onnx_loader")
    from verifier.model.onnx_loader import load_onnx
    from verifier.spec.vnnlib import load_vnnlib

    folder = tmp_path_factory.mktemp("cert")
    graph = cf.mlp(0, 3, (10, 10), 2)
    cf.write_chain_onnx(graph, folder / "net.onnx")
    model = load_onnx(folder / "net.onnx")
    _write_vnnlib(folder / "prop.vnnlib", cf.tight_spec(model.graph, np.full(3, -1.0), np.full(3, 1.0), 0.05))
    spec = load_vnnlib(folder / "prop.vnnlib")
    builder = CertificateBuilder(sha256_file(folder / "net.onnx"), sha256_file(folder / "prop.vnnlib"))
    assert cf.prove_input_split(model.graph, spec, 14, builder)
    builder.save(folder / "cert.json")
    return folder


def test_check_files_accepts_the_written_certificate(files):
    report = check_files(files / "net.onnx", files / "prop.vnnlib", files / "cert.json")
    assert report.ok, report.reasons
    assert report.leaves > 1


def test_check_files_rejects_a_changed_onnx_weight(files, tmp_path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(files / "net.onnx"))
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, 0] += 0.01
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, model.graph.initializer[0].name))
    onnx.save(model, str(tmp_path / "net.onnx"))
    report = check_files(tmp_path / "net.onnx", files / "prop.vnnlib", files / "cert.json")
    assert not report.ok and "model sha256 mismatch" in report.reasons[0]


def test_check_files_rejects_another_spec(files, tmp_path):
    (tmp_path / "prop.vnnlib").write_text((files / "prop.vnnlib").read_text() + "\n; edited\n")
    report = check_files(files / "net.onnx", tmp_path / "prop.vnnlib", files / "cert.json")
    assert not report.ok and "spec sha256 mismatch" in report.reasons[0]


@pytest.mark.skipif(not BENCH.is_dir(), reason=f"benchmark instances not present ({BENCH}; set NNVERIFY_BENCHMARKS)")
def test_benchmark_instance_round_trip(tmp_path):
    """vnncomp2021 test_unsat (an ACAS Xu-sized net): prove by input splits, save, check the files."""
    from verifier.model.onnx_loader import load_onnx
    from verifier.spec.vnnlib import load_vnnlib

    onnx_path, spec_path = BENCH / "onnx/test_unsat.onnx", BENCH / "vnnlib/test_prop.vnnlib"
    model, spec = load_onnx(onnx_path), load_vnnlib(spec_path)
    builder = CertificateBuilder(sha256_file(onnx_path), sha256_file(spec_path))
    assert cf.prove_input_split(model.graph, spec, 10, builder)
    builder.save(tmp_path / "cert.json")
    report = check_files(onnx_path, spec_path, tmp_path / "cert.json", strict=True)
    assert report.ok, report.reasons


def test_check_files_reports_unreadable_inputs(files, tmp_path):
    """Missing or malformed files give a failed report with the reason, not an exception."""
    (tmp_path / "cert.json").write_text("[1, 2]")
    report = check_files(files / "net.onnx", files / "prop.vnnlib", tmp_path / "cert.json")
    assert not report.ok and "must be an object" in report.reasons[0]
    report = check_files(tmp_path / "absent.onnx", files / "prop.vnnlib", files / "cert.json")
    assert not report.ok and "FileNotFoundError" in report.reasons[0]
