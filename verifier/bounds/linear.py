"""Bound rules of the linear ops: linear, conv, affine, add, reshape, gather, concat."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from verifier.bounds.base import BoundOp, sum_dims

_CONV = {1: F.conv1d, 2: F.conv2d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d}


def _split_bc(A: torch.Tensor):
    """Leading (B, C) dims of an A tensor."""
    return A.shape[0], A.shape[1]


class LinearOp(BoundOp):
    """y = x @ W.T + b over the last axis."""

    def ibp(self, node, in_bounds):
        """Center/radius interval matmul."""
        lo, hi = in_bounds[0]
        w, b = node.params["weight"], node.params.get("bias")
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        c = F.linear(mid, w, b)
        r = F.linear(rad, w.abs())
        return c - r, c + r

    def backward(self, node, A, in_bounds, relax_state):
        """A_in = A @ W; bias = A . b."""
        w, b = node.params["weight"], node.params.get("bias")
        A_in = A.matmul(w)
        bias = 0.0 if b is None else sum_dims(A.matmul(b).unsqueeze(-1))
        return [A_in], bias


def _int_tuple(v, n):
    """Normalise an int-or-sequence conv attribute to an n-tuple."""
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(x) for x in v)
    return v * n if len(v) == 1 else v


class ConvOp(BoundOp):
    """1-D / 2-D convolution with symmetric zero padding."""

    def ibp(self, node, in_bounds):
        """Center/radius interval convolution."""
        lo, hi = in_bounds[0]
        a, w, b = node.attrs, node.params["weight"], node.params.get("bias")
        conv = _CONV[w.dim() - 2]
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        c = conv(mid, w, b, a["stride"], a["padding"], a["dilation"], a["groups"])
        r = conv(rad, w.abs(), None, a["stride"], a["padding"], a["dilation"], a["groups"])
        return c - r, c + r

    def backward(self, node, A, in_bounds, relax_state):
        """Transposed convolution with the exact output_padding."""
        a, w, b = node.attrs, node.params["weight"], node.params.get("bias")
        nd = w.dim() - 2
        in_shape = in_bounds[0][0].shape[1:]
        stride, pad, dil = (_int_tuple(a[k], nd) for k in ("stride", "padding", "dilation"))
        out_sp = node.shape[1:]
        k_sp = w.shape[2:]
        out_pad = tuple(in_shape[1 + i] - ((out_sp[i] - 1) * stride[i] - 2 * pad[i] + dil[i] * (k_sp[i] - 1) + 1)
                        for i in range(nd))
        nb, nc = _split_bc(A)
        flat = A.reshape((nb * nc,) + tuple(node.shape))
        A_in = _CONV_T[nd](flat, w, None, stride, pad, out_pad, a["groups"], dil)
        A_in = A_in.reshape((nb, nc) + tuple(in_shape))
        bias = 0.0 if b is None else A.flatten(3).sum(-1).matmul(b)
        return [A_in], bias


class AffineOp(BoundOp):
    """y = x * scale + bias, elementwise with broadcasting."""

    def ibp(self, node, in_bounds):
        """Scale both ends and sort."""
        lo, hi = in_bounds[0]
        s, b = node.params["scale"], node.params["bias"]
        p, q = lo * s, hi * s
        return torch.minimum(p, q) + b, torch.maximum(p, q) + b

    def backward(self, node, A, in_bounds, relax_state):
        """A_in = A * scale (summed back over broadcast dims); bias = A . bias."""
        s, b = node.params["scale"], node.params["bias"]
        in_shape = tuple(in_bounds[0][0].shape[1:])
        A_in = A * s
        if tuple(A_in.shape[2:]) != in_shape:
            A_in = A_in.sum_to_size(A_in.shape[:2] + in_shape)
        bias = sum_dims(A * torch.broadcast_to(b, tuple(node.shape)))
        return [A_in], bias


class AddOp(BoundOp):
    """y = x1 + x2."""

    def ibp(self, node, in_bounds):
        """Add the ends."""
        (l1, h1), (l2, h2) = in_bounds
        return l1 + l2, h1 + h2

    def backward(self, node, A, in_bounds, relax_state):
        """Both inputs receive A."""
        return [A, A], 0.0


class ReshapeOp(BoundOp):
    """Same C-order values, new shape."""

    def backward(self, node, A, in_bounds, relax_state):
        """Reshape A back."""
        in_shape = tuple(in_bounds[0][0].shape[1:])
        return [A.reshape(tuple(A.shape[:2]) + in_shape)], 0.0


class GatherOp(BoundOp):
    """out.flat[k] = x.flat[index[k]] (0 where index is -1)."""

    def backward(self, node, A, in_bounds, relax_state):
        """Scatter-add A onto the input positions; -1 entries contribute nothing."""
        in_shape = tuple(in_bounds[0][0].shape[1:])
        n_in = 1
        for d in in_shape:
            n_in *= d
        index = node.params["index"].reshape(-1).to(A.device)
        valid = index >= 0
        flat = A.flatten(2)
        if not bool(valid.all()):
            flat, index = flat[:, :, valid], index[valid]
        A_in = flat.new_zeros(flat.shape[:2] + (n_in,))
        A_in.index_add_(2, index, flat)
        return [A_in.reshape(tuple(A.shape[:2]) + in_shape)], 0.0


class ConcatOp(BoundOp):
    """torch.cat along a per-sample axis."""

    def backward(self, node, A, in_bounds, relax_state):
        """Split A along the concat axis."""
        sizes = [b[0].shape[node.attrs["axis"] + 1] for b in in_bounds]
        return list(torch.split(A, sizes, dim=node.attrs["axis"] + 2)), 0.0
