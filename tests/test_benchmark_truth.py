"""Soundness on real VNN-COMP instances with known ground truth (``benchmarks_root()``: ../shared/benchmarks).

A fixed sample across families, each verified in-process with a short budget: no ``holds`` where
the truth is sat, no ``violated`` where it is unsat, and every ``violated`` carries a witness that
onnxruntime confirms. Undecided answers are fine here; wrong ones are not.
"""
import csv
import itertools
from pathlib import Path

import pytest

from verifier.config import VerifyConfig
from verifier.model.reference import OnnxRunner
from verifier.portfolio import verify
from verifier.result import Verdict
from verifier.shared_data import absent_reason, benchmarks_root
from verifier.spec.vnnlib import load_vnnlib

BENCH = benchmarks_root()
FAMILIES = ["vnncomp2021/test", "vnncomp2021/acasxu", "vnncomp2021/mnistfc", "vnncomp2022/rl_benchmarks",
            "vnncomp2022/tllverifybench", "vnncomp2022/reach_prob_density", "vnncomp2023/dist_shift",
            "vnncomp2023/collins_rul_cnn"]
PER_FAMILY = 3


def sample():
    """(family, onnx, vnnlib, truth) rows: the first PER_FAMILY sat and unsat rows of each family."""
    rows = []
    for fam in FAMILIES:
        path = BENCH / fam / "truth.csv"
        if not path.exists():
            continue
        with open(path, newline="") as fh:
            known = [r for r in csv.DictReader(fh) if r["truth"].strip() in ("sat", "unsat")]
        for truth in ("sat", "unsat"):
            picked = itertools.islice((r for r in known if r["truth"].strip() == truth), PER_FAMILY)
            rows += [(fam, r["onnx"], r["vnnlib"], truth) for r in picked]
    return rows


ROWS = sample()


@pytest.mark.skipif(not ROWS, reason=absent_reason(BENCH))
@pytest.mark.parametrize("family,onnx_rel,vnnlib_rel,truth", ROWS, ids=[f"{r[0].split('/')[1]}-{Path(r[2]).stem}-{r[3]}" for r in ROWS])
def test_no_wrong_verdict(family, onnx_rel, vnnlib_rel, truth):
    onnx_path, spec_path = BENCH / family / onnx_rel, BENCH / family / vnnlib_rel
    result = verify(str(onnx_path), str(spec_path), VerifyConfig(timeout=10))
    assert result.verdict is not Verdict.ERROR, result.reason
    if truth == "sat":
        assert result.verdict is not Verdict.HOLDS, f"unsound: holds on a sat instance ({result.method})"
    else:
        assert result.verdict is not Verdict.VIOLATED, f"wrong: violated on an unsat instance ({result.method})"
    if result.verdict is Verdict.VIOLATED:
        cex = result.counterexample
        y = OnnxRunner(str(onnx_path)).run(cex.x.reshape(1, -1))[0]
        assert load_vnnlib(spec_path).violation(cex.x, y) is not None or cex.input_rounded
    if result.verdict is Verdict.HOLDS:
        assert result.certificate_checked is not None
