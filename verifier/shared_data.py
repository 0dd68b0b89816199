"""Where the shared VNN-COMP benchmark instances are: ``NNVERIFY_BENCHMARKS``, else
``shared/benchmarks`` beside the checkout (CI lays ``../shared`` next to a fresh clone)."""
from __future__ import annotations

import os
from pathlib import Path


def benchmarks_root() -> Path:
    """The folder holding ``vnncomp2021/``, ``vnncomp2022/``, ``vnncomp2023/`` (it may not exist)."""
    env = os.environ.get("NNVERIFY_BENCHMARKS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def absent_reason(path: str | Path) -> str:
    """The one skip / error message for a shared benchmark file or folder that is not there."""
    return (f"shared benchmarks absent: {path} not found "
            "(lay out ../shared/benchmarks beside the checkout, or set NNVERIFY_BENCHMARKS)")
