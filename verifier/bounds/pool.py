"""Bound rule of maxpool (1-D / 2-D): a linear relaxation per window.

For a window with input bounds [l_i, u_i] let j = argmax_i l_i. Lower line: y >= x_j (true for
any window element). Upper line: y = x_j exactly when l_j >= u_i for every other i (the window
is decided), else the constant max_i u_i. Padding positions never win (-inf in torch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from verifier.bounds.base import BoundOp


def _pair(v, n):
    """Normalise an int-or-sequence attribute to an n-tuple."""
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(x) for x in v)
    return v * n if len(v) == 1 else v


def window_index(node, in_shape, device) -> torch.Tensor:
    """Flat input index of every window element, [*out_shape, K], -1 at padding positions."""
    a = node.attrs
    nd = len(in_shape) - 1
    k, s, p, d = (_pair(a[key], nd) for key in ("kernel", "stride", "padding", "dilation"))
    out_sp = tuple(node.shape[1:])
    if nd == 1:
        k, s, p, d, out_sp, sp = (1,) + k, (1,) + s, (0,) + p, (1,) + d, (1,) + out_sp, (1, in_shape[1])
    else:
        sp = tuple(in_shape[1:])
    n_in = 1
    for v in in_shape:
        n_in *= v
    img = torch.arange(n_in, dtype=torch.float64, device=device).reshape((1, in_shape[0]) + sp)
    extra = [max(0, (out_sp[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - (sp[i] + 2 * p[i])) for i in range(2)]
    img = F.pad(img, (p[1], p[1] + extra[1], p[0], p[0] + extra[0]), value=-1.0)
    cols = F.unfold(img, k, dilation=d, stride=s)  # [1, Cin*K, L]
    n_k = k[0] * k[1]
    grid_w = (img.shape[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    cols = cols.reshape(in_shape[0], n_k, -1, grid_w)[:, :, : out_sp[0], : out_sp[1]]
    idx = cols.permute(0, 2, 3, 1).round().long()
    return idx.reshape(tuple(node.shape) + (n_k,))


def _window_values(t, idx, fill):
    """Gather [B, *in] values into windows [B, *out, K], ``fill`` at padding."""
    flat = t.flatten(1)
    vals = flat[:, idx.clamp(min=0).reshape(-1)].reshape((t.shape[0],) + tuple(idx.shape))
    return vals.masked_fill(idx < 0, fill)


class MaxPoolOp(BoundOp):
    """max over each pooling window."""

    nonlinear = True

    def relaxation(self, node, lo, hi):
        """Per output: flat index j of the lower line, whether y = x_j exactly, and max u."""
        idx = window_index(node, tuple(lo.shape[1:]), lo.device)
        wl = _window_values(lo, idx, float("-inf"))
        wu = _window_values(hi, idx, float("-inf"))
        best_l, arg = wl.max(dim=-1)
        u_max = wu.max(dim=-1).values
        others = wu.scatter(-1, arg.unsqueeze(-1), float("-inf")).max(dim=-1).values
        decided = best_l >= others
        j = torch.gather(idx.expand(wl.shape), -1, arg.unsqueeze(-1)).squeeze(-1)
        return j, decided, u_max

    def backward(self, node, A, in_bounds, relax_state):
        """A >= 0 (and decided windows) go to x_j; A < 0 on undecided windows to the constant."""
        lo, hi = in_bounds[0]
        j, decided, u_max = self.relaxation(node, lo, hi)
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        to_j = pos + neg * decided.unsqueeze(1)
        bias = (neg * (~decided).unsqueeze(1) * u_max.unsqueeze(1)).flatten(2).sum(-1)
        nb, nc = max(A.shape[0], lo.shape[0]), A.shape[1]
        to_j = to_j.expand((nb, nc) + tuple(node.shape)).flatten(2)
        jj = j.flatten(1).unsqueeze(1).expand(nb, nc, -1)
        A_in = to_j.new_zeros((nb, nc, lo[0].numel()))
        A_in.scatter_add_(2, jj, to_j)
        return [A_in.reshape((nb, nc) + tuple(lo.shape[1:]))], bias
