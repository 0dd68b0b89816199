"""Input boxes as tensors, rounded outward so the tensor box always contains the exact one."""
from __future__ import annotations

import numpy as np
import torch


def outward_box(lower, upper, dtype=torch.float32, device=None, shape=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) tensors of ``dtype`` with lo <= lower and hi >= upper elementwise (float64 inputs).

    Rounding a float64 bound to float32 goes to the nearest value, which may lie inside the box;
    bounding that smaller box would not be sound for the original, so each side steps outward.
    """
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    lo = lower.astype(np_dtype)
    hi = upper.astype(np_dtype)
    lo = np.where(lo.astype(np.float64) > lower, np.nextafter(lo, np_dtype.type(-np.inf)), lo)
    hi = np.where(hi.astype(np.float64) < upper, np.nextafter(hi, np_dtype.type(np.inf)), hi)
    lo_t = torch.tensor(lo, dtype=dtype, device=device)
    hi_t = torch.tensor(hi, dtype=dtype, device=device)
    if shape is not None:
        lo_t, hi_t = lo_t.reshape(shape), hi_t.reshape(shape)
    return lo_t, hi_t
