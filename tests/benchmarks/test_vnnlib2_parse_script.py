"""benchmarks/vnnlib2_parse.py on two boxes: both texts state one property, each parser measures it."""
from __future__ import annotations

from fractions import Fraction

import pytest

from benchmarks import vnnlib2_parse as bench


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The 1.0 and 2.0 texts of a two-box instance and the MLP they are about."""
    d = tmp_path_factory.mktemp("vnnlib2-parse")
    boxes = bench.make_boxes(2)
    (d / "p.vnnlib").write_text(bench.text_v1(boxes))
    (d / "p.vnnlib2").write_text(bench.text_v2(boxes))
    bench.make_onnx(d / "m.onnx")
    return {"v1": str(d / "p.vnnlib"), "v2": str(d / "p.vnnlib2"), "onnx": str(d / "m.onnx")}


@pytest.mark.parametrize("x", [0.0, -0.0, 1.0, 0.1, 1e-7, -2.5e-12, 123456.75, 0.4627450980392157])
def test_decimal_text_is_a_plain_decimal_of_the_same_float(x):
    text = bench.decimal_text(x)
    assert "e" not in text.lower() and "." in text and text != "-0.0"
    assert float(Fraction(text)) == x


def test_compiled_v2_spec_matches_v1(files):
    """Same regions and polytopes; box bounds equal or one ulp outward (2.0 rounds outward)."""
    row = bench.child("v2_compile", files)
    assert (row["regions"], row["polytopes"]) == (2, 18)
    vs = row["vs_v1"]
    assert vs["same_up_to_outward_rounding"], vs
    assert vs["bounds"] == 2 * 2 * 784


@pytest.mark.parametrize("parser", ["v1", "v2_official", "v2"])
def test_each_parser_reports_time_and_memory(files, parser):
    row = bench.child(parser, files)
    assert row["time_s"] >= 0 and row["cpu_s"] >= 0 and row["peak_mb"] >= 0
    if parser == "v1":
        assert (row["regions"], row["polytopes"]) == (2, 18)
    if parser == "v2":
        assert row["dnf_terms"] == 18
