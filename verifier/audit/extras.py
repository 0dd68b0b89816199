"""What an audit report carries besides counts: counterexamples to draw and the tightness table.

Its own module so that ``report`` (which builds them) and ``html`` (which draws them) both import
it, and ``html`` need not import ``report`` back. Torch-free (numpy).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Picture:
    """One counterexample to draw beside its original (both in pixel space, the data's sample shape)."""

    key: str
    sample: int
    eps: float
    label: int
    prediction: int          # the model's class at the counterexample
    original: np.ndarray
    adversarial: np.ndarray


@dataclass(frozen=True)
class Extras:
    """What the report needs besides counts: the tightness table and counterexamples to draw."""

    tightness: dict | None = None               # verifier.audit.tightness.ibp_tightness(...)
    pictures: tuple[Picture, ...] = ()
    sample_shape: tuple[int, ...] = ()          # how a sample is laid out (decides image drawing)
    pictures_total: int = 0                     # counterexamples in the audit (pictures may be fewer)
