"""Helpers shared by the soundness tests: in-process verification of suite rows, suite subsets."""
from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERIFY_TIMEOUT = 2.0  # seconds per instance for in-process runs


def verify_row(folder: Path, row, check: bool = True, timeout: float = VERIFY_TIMEOUT, light_attack: bool = False):
    """Run ``verifier.portfolio.verify`` in-process (one torch thread) on one suite row.

    ``light_attack``: a token attack, so that the budget goes to the bound engine (mutation tests).
    """
    from verifier.config import AttackConfig, VerifyConfig
    from verifier.portfolio import verify
    from verifier.soundness.generate import single_thread

    config = VerifyConfig(timeout=timeout, check_certificates=check)
    if light_attack:
        config = VerifyConfig(timeout=timeout, check_certificates=check, attack=AttackConfig(restarts=2, steps=5))
    with single_thread():
        return verify(str(folder / row.onnx), str(folder / row.vnnlib), config)


def answer_word(result) -> str:
    """The VNN-COMP word of a Result."""
    return result.vnncomp_text().splitlines()[0].strip()


def subset_suite(src: Path, dst: Path, names: tuple[str, ...]) -> Path:
    """A suite folder holding only the named instances (files copied, tables rewritten)."""
    from verifier.soundness.generate import read_rows, write_tables

    rows = [r for r in read_rows(src) if Path(r.onnx).stem in names]
    for r in rows:
        for rel in (r.onnx, r.vnnlib) + ((r.witness,) if r.witness else ()):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dst / rel)
    write_tables(dst, rows)
    return dst
