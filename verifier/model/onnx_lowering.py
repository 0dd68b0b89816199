"""Lowering of ONNX nodes with a variable input to canonical nodes: the ``ONNX_OPS`` registry.

The shared state (``Var``, ``Builder``) is in ``onnx_builder``; the max-like and normalising ops
(Abs, Max, Min, ReduceMax, ReduceL2, LayerNormalization, Gelu) in ``onnx_reduce``. Since the
ONNX view has batch 1, pure re-indexing ops (Transpose, Slice, Reshape, ...) are lowered exactly
by applying the ONNX op itself to an array of flat indices and emitting one canonical ``gather``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from verifier.model.onnx_builder import FLOAT_TYPES, Builder, NodeUnsupported, Var
from verifier.model.onnx_builder import constant as _const
from verifier.model.onnx_builder import flat_index as _index
from verifier.model.onnx_builder import linear_last as _linear
from verifier.model.onnx_builder import reduce_axes, reduced_last, reduced_shape
from verifier.model.onnx_builder import variable as _var
from verifier.model.onnx_reduce import REDUCE_OPS


# ---------------------------------------------------------------------------------------------
# window helpers


def _spatial_pads(at: dict, spatial, kernel, strides, dilations) -> list[int]:
    """Begin+end pads from ``pads`` / ``auto_pad``."""
    nd = len(spatial)
    mode = at.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", ""):
        return [int(p) for p in at.get("pads", [0] * 2 * nd)]
    if mode == "VALID":
        return [0] * 2 * nd
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise NodeUnsupported(f"auto_pad={mode}")
    begins, ends = [], []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return begins + ends


def _zero_pad(b: Builder, x: Var, pads: list[int], base: str) -> Var:
    """Zero-pad the spatial dims of a [1, C, *spatial] value (a gather)."""
    nd = len(x.shape) - 2
    width = [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)]
    return b.reindex(x, np.pad(_index(x), width, constant_values=-1), base)


def _window_geometry(x: Var, at: dict, kernel) -> tuple:
    """(nd, strides, dilations, pads) of a conv / pool node; checks the input is [1, C, *spatial]."""
    nd = len(kernel)
    if nd not in (1, 2):
        raise NodeUnsupported(f"{nd}-D window (only 1-D and 2-D)")
    if len(x.shape) != nd + 2 or x.shape[0] != 1:
        raise NodeUnsupported(f"input shape {list(x.shape)} is not [1, C, *spatial]")
    strides = [int(s) for s in at.get("strides", [1] * nd)]
    dilations = [int(d) for d in at.get("dilations", [1] * nd)]
    pads = _spatial_pads(at, x.shape[2:], kernel, strides, dilations)
    return nd, strides, dilations, pads


def _out_size(n, k, s, d, pb, pe, ceil=False) -> int:
    """Window count along one axis (ONNX formula)."""
    span = n + pb + pe - d * (k - 1) - 1
    return (-(-span // s) if ceil else span // s) + 1


# ---------------------------------------------------------------------------------------------
# lowering functions: (builder, node, inputs (Var | ndarray | None), attrs) -> outputs


def _lower_gemm(b, node, ins, at):
    """Gemm: alpha * A' @ B' + beta * C with A variable and B, C constant."""
    a, w, base = _var(ins[0], "A"), _const(ins[1], "B").astype(np.float64), node.output[0]
    c = ins[2] if len(ins) > 2 else None
    if len(a.shape) != 2:
        raise NodeUnsupported("A must be 2-D")
    if at.get("transA", 0):
        a = b.reindex(a, _index(a).T, base)
    w = w.T if at.get("transB", 0) else w
    beta = float(at.get("beta", 1.0))
    if not isinstance(c, Var):
        bias = None if c is None else beta * np.asarray(c, np.float64)
        return [_linear(b, a, at.get("alpha", 1.0) * w.T, bias, base)]
    y = _linear(b, a, at.get("alpha", 1.0) * w.T, None, base)
    c = c if beta == 1.0 else b.affine(c, beta, None, base)
    c = c if c.shape == y.shape else b.expand(c, y.shape, base)
    return [b.emit(base, "add", [y, c], y.shape)]


def _lower_matmul(b, node, ins, at):
    """MatMul with one constant operand (either side), numpy matmul semantics."""
    base = node.output[0]
    if isinstance(ins[0], Var) and isinstance(ins[1], Var):
        raise NodeUnsupported("product of two variable tensors")
    if isinstance(ins[0], Var):
        x, w = ins[0], _const(ins[1]).astype(np.float64)
        if w.ndim > 2:
            if any(d != 1 for d in w.shape[:-2]) or len(x.shape) < w.ndim:
                raise NodeUnsupported("batched constant matrix")
            w = w.reshape(w.shape[-2:])
        if w.ndim == 1:
            y = _linear(b, x, w[None, :], None, base)
            return [b.reindex(y, _index(y).reshape(x.shape[:-1]), base)]
        return [_linear(b, x, w.T, None, base)]
    m, x = _const(ins[0]).astype(np.float64), ins[1]
    if m.ndim > 2 or len(x.shape) == 0:
        raise NodeUnsupported("batched constant matrix")
    if len(x.shape) == 1:
        return [_squeeze_last(b, _linear(b, x, np.atleast_2d(m), None, base), m.ndim == 1, base)]
    xt = b.reindex(x, np.swapaxes(_index(x), -1, -2), base)
    y = _linear(b, xt, np.atleast_2d(m), None, base)
    if m.ndim == 1:
        return [_squeeze_last(b, y, True, base)]
    return [b.reindex(y, np.swapaxes(_index(y), -1, -2), base)]


def _squeeze_last(b, y: Var, squeeze: bool, base: str) -> Var:
    """Drop a trailing size-1 axis when ``squeeze``."""
    return b.reindex(y, _index(y).reshape(y.shape[:-1]), base) if squeeze else y


def _lower_binary(b, node, ins, at):
    """Add / Sub / Mul / Div where at most Add and Sub have two variable operands."""
    op, base = node.op_type, node.output[0]
    a, c = ins[0], ins[1]
    if isinstance(a, Var) and isinstance(c, Var):
        if op not in ("Add", "Sub"):
            raise NodeUnsupported(f"{op} of two variable tensors")
        shape = tuple(np.broadcast_shapes(a.shape, c.shape))
        a = a if a.shape == shape else b.expand(a, shape, base)
        c = c if c.shape == shape else b.expand(c, shape, base)
        if op == "Sub":
            c = b.affine(c, -1.0, None, base)
        return [b.emit(base, "add", [a, c], shape)]
    var_first = isinstance(a, Var)
    x, k = (a, np.asarray(c, np.float64)) if var_first else (c, np.asarray(a, np.float64))
    if op == "Add":
        return [b.affine(x, None, k, base)]
    if op == "Sub":
        return [b.affine(x, None, -k, base) if var_first else b.affine(x, -np.ones_like(k), k, base)]
    if op == "Mul":
        return [b.affine(x, k, None, base)]
    if not var_first:
        raise NodeUnsupported("division by a variable tensor")
    if np.any(k == 0):
        raise NodeUnsupported("division by zero")
    return [b.affine(x, 1.0 / k, None, base)]


def _lower_neg(b, node, ins, at):
    """Neg: affine with scale -1."""
    return [b.affine(_var(ins[0]), -1.0, None, node.output[0])]


def _activation(op: str):
    """Lowering of a canonical elementwise op with the same name."""
    def lower(b, node, ins, at):
        x = _var(ins[0])
        attrs = {"alpha": float(at.get("alpha", 0.01))} if op == "leaky_relu" else {}
        return [b.emit(node.output[0], op, [x], x.shape, attrs=attrs)]
    lower.__doc__ = f"Elementwise {op}."
    return lower


def _lower_clip(b, node, ins, at):
    """Clip(x, lo, hi) = hi - relu(hi - lo - relu(x - lo)), with one-sided variants."""
    x, base = _var(ins[0]), node.output[0]
    if b.opset < 11:
        lo, hi = at.get("min"), at.get("max")
    else:
        lo = float(_const(ins[1], "min")) if len(ins) > 1 and ins[1] is not None else None
        hi = float(_const(ins[2], "max")) if len(ins) > 2 and ins[2] is not None else None
    lo = None if lo is None or lo <= -3.4e38 else float(lo)
    hi = None if hi is None or hi >= 3.4e38 else float(hi)
    if lo is not None and hi is not None and lo > hi:
        raise NodeUnsupported("min > max")
    if lo is None and hi is None:
        return [x]
    if hi is None:
        r = b.emit(base, "relu", [x if lo == 0 else b.affine(x, None, -lo, base)], x.shape)
        return [r if lo == 0 else b.affine(r, None, lo, base)]
    if lo is None:
        r = b.emit(base, "relu", [b.affine(x, -1.0, hi, base)], x.shape)
        return [b.affine(r, -1.0, hi, base)]
    r = b.emit(base, "relu", [x if lo == 0 else b.affine(x, None, -lo, base)], x.shape)
    r2 = b.emit(base, "relu", [b.affine(r, -1.0, hi - lo, base)], x.shape)
    return [b.affine(r2, -1.0, hi, base)]


def _lower_conv(b, node, ins, at):
    """Conv (1-D / 2-D) with constant weight and bias; asymmetric pads become a gather."""
    x, w = _var(ins[0]), _const(ins[1], "weight")
    bias = _const(ins[2], "bias") if len(ins) > 2 and ins[2] is not None else None
    kernel = list(w.shape[2:])
    if "kernel_shape" in at and list(at["kernel_shape"]) != kernel:
        raise NodeUnsupported("kernel_shape does not match the weight")
    nd, strides, dil, pads = _window_geometry(x, at, kernel)
    if pads[:nd] != pads[nd:] or min(pads) < 0:
        x, padding = _zero_pad(b, x, pads, node.output[0]), [0] * nd
        pads = [0] * 2 * nd
    else:
        padding = pads[:nd]
    spatial = [_out_size(x.shape[2 + i], kernel[i], strides[i], dil[i], pads[i], pads[i + nd]) for i in range(nd)]
    attrs = {"stride": tuple(strides), "padding": tuple(padding), "dilation": tuple(dil), "groups": int(at.get("group", 1))}
    return [b.emit(node.output[0], "conv", [x], (1, w.shape[0], *spatial), {"weight": w, "bias": bias}, attrs)]


def _lower_conv_transpose(b, node, ins, at):
    """ConvTranspose = zero-insertion and padding (a gather), then a conv with a flipped kernel."""
    x, w = _var(ins[0]), _const(ins[1], "weight")
    bias = _const(ins[2], "bias") if len(ins) > 2 and ins[2] is not None else None
    kernel, group = list(w.shape[2:]), int(at.get("group", 1))
    nd = len(kernel)
    if "output_shape" in at or at.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise NodeUnsupported("output_shape / auto_pad")
    _window_geometry(x, {}, kernel)
    strides = [int(s) for s in at.get("strides", [1] * nd)]
    dil = [int(d) for d in at.get("dilations", [1] * nd)]
    pads = [int(p) for p in at.get("pads", [0] * 2 * nd)]
    extra = [int(p) for p in at.get("output_padding", [0] * nd)]
    idx = _index(x)
    for i in range(nd):
        n, s, lead = x.shape[2 + i], strides[i], dil[i] * (kernel[i] - 1)
        pos = np.full(idx.shape[:2 + i] + ((n - 1) * s + 1,) + idx.shape[3 + i:], -1, np.int64)
        sl = [slice(None)] * idx.ndim
        sl[2 + i] = slice(None, None, s)
        pos[tuple(sl)] = idx
        before, after = lead - pads[i], lead - pads[i + nd] + extra[i]
        pos = np.pad(pos, [(0, 0)] * (2 + i) + [(max(before, 0), max(after, 0))] + [(0, 0)] * (nd - 1 - i), constant_values=-1)
        sl[2 + i] = slice(max(-before, 0), pos.shape[2 + i] - max(-after, 0))
        idx = pos[tuple(sl)]
    xd = b.reindex(x, idx, node.output[0])
    cin, cout_g = w.shape[0], w.shape[1]
    wk = w.reshape(group, cin // group, cout_g, *kernel).swapaxes(1, 2).reshape(group * cout_g, cin // group, *kernel)
    wk = np.ascontiguousarray(np.flip(wk, axis=tuple(range(2, 2 + nd))))
    spatial = [xd.shape[2 + i] - dil[i] * (kernel[i] - 1) for i in range(nd)]
    attrs = {"stride": (1,) * nd, "padding": (0,) * nd, "dilation": tuple(dil), "groups": group}
    return [b.emit(node.output[0], "conv", [xd], (1, wk.shape[0], *spatial), {"weight": wk, "bias": bias}, attrs)]


def _lower_maxpool(b, node, ins, at):
    """MaxPool with symmetric pads (the Indices output is unsupported)."""
    x = _var(ins[0])
    if len(node.output) > 1 and node.output[1]:
        raise NodeUnsupported("Indices output")
    kernel = [int(k) for k in at["kernel_shape"]]
    nd, strides, dil, pads = _window_geometry(x, at, kernel)
    ceil = bool(at.get("ceil_mode", 0))
    if pads[:nd] != pads[nd:] or any(2 * p > d * (k - 1) + 1 for p, k, d in zip(pads, kernel, dil)):
        raise NodeUnsupported(f"pads {pads} (need symmetric, at most half the window)")
    spatial = []
    for i in range(nd):
        n, p = x.shape[2 + i], pads[i]
        size = _out_size(n, kernel[i], strides[i], dil[i], p, p, ceil)
        if ceil and (size - 1) * strides[i] >= n + p:
            raise NodeUnsupported("ceil_mode window starting in the padding")
        spatial.append(size)
    attrs = {"kernel": tuple(kernel), "stride": tuple(strides), "padding": tuple(pads[:nd]),
             "dilation": tuple(dil), "ceil_mode": ceil}
    return [b.emit(node.output[0], "maxpool", [x], (1, x.shape[1], *spatial), attrs=attrs)]


def _lower_avgpool(b, node, ins, at):
    """AveragePool as a grouped conv (exact count_include_pad semantics; no ceil_mode overhang)."""
    x, base = _var(ins[0]), node.output[0]
    kernel = [int(k) for k in at["kernel_shape"]]
    nd, strides, dil, pads = _window_geometry(x, at, kernel)
    for i in range(nd):
        args = (x.shape[2 + i], kernel[i], strides[i], dil[i], pads[i], pads[i + nd])
        if at.get("ceil_mode", 0) and _out_size(*args, True) != _out_size(*args):
            raise NodeUnsupported("ceil_mode with a partial last window")
    channels, include = x.shape[1], bool(at.get("count_include_pad", 0))
    y = _zero_pad(b, x, pads, base) if any(pads) else x
    weight = np.ones((channels, 1, *kernel), np.float64)
    if include or not any(pads):
        weight /= np.prod(kernel)
    attrs = {"stride": tuple(strides), "padding": (0,) * nd, "dilation": tuple(dil), "groups": channels}
    spatial = [_out_size(y.shape[2 + i], kernel[i], strides[i], dil[i], 0, 0) for i in range(nd)]
    out = b.emit(base, "conv", [y], (1, channels, *spatial), {"weight": weight, "bias": None}, attrs)
    if include or not any(pads):
        return [out]
    ones = torch.as_tensor(np.pad(np.ones(x.shape[2:]), [(pads[i], pads[i + nd]) for i in range(nd)]))[None, None]
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d}[nd]
    counts = conv(ones, torch.ones((1, 1, *kernel), dtype=ones.dtype), None, strides, 0, dil).numpy()
    return [b.affine(out, 1.0 / counts, None, base)]


def _lower_global_pool(b, node, ins, at):
    """GlobalAveragePool (a conv) / GlobalMaxPool (a maxpool) over all spatial dims."""
    x = _var(ins[0])
    kernel = list(x.shape[2:])
    nd = len(kernel)
    _window_geometry(x, {}, kernel)
    shape = (1, x.shape[1]) + (1,) * nd
    if node.op_type == "GlobalMaxPool":
        attrs = {"kernel": tuple(kernel), "stride": tuple(kernel), "padding": (0,) * nd, "dilation": (1,) * nd}
        return [b.emit(node.output[0], "maxpool", [x], shape, attrs=attrs)]
    weight = np.full((x.shape[1], 1, *kernel), 1.0 / np.prod(kernel))
    attrs = {"stride": (1,) * nd, "padding": (0,) * nd, "dilation": (1,) * nd, "groups": x.shape[1]}
    return [b.emit(node.output[0], "conv", [x], shape, {"weight": weight, "bias": None}, attrs)]


def _lower_batchnorm(b, node, ins, at):
    """BatchNormalization (inference) as a per-channel affine."""
    x = _var(ins[0])
    if at.get("training_mode", 0) or any(node.output[1:]) or not at.get("spatial", 1):
        raise NodeUnsupported("training mode or spatial=0")
    gamma, beta, mean, var = (np.asarray(_const(v), np.float64) for v in ins[1:5])
    if len(x.shape) < 2:
        raise NodeUnsupported("input rank < 2")
    scale = gamma / np.sqrt(var + float(at.get("epsilon", 1e-5)))
    shape = (1, -1) + (1,) * (len(x.shape) - 2)
    return [b.affine(x, scale.reshape(shape), (beta - mean * scale).reshape(shape), node.output[0])]


def _lower_reindex(b, node, ins, at):
    """Pure re-indexing ops: apply the ONNX op to flat positions, emit gathers (or reshapes)."""
    x = _var(ins[0], "data")
    if any(isinstance(v, Var) for v in ins[1:]):
        raise NodeUnsupported("variable shape / index operand")
    if node.op_type in ("Resize", "Upsample") and at.get("mode", "nearest") != "nearest":
        raise NodeUnsupported(f"mode={at.get('mode')}")
    outs = b.evaluate(node, [_index(x)] + list(ins[1:]))
    return [b.reindex(x, o, name) for o, name in zip(outs, node.output)]


def _lower_pad(b, node, ins, at):
    """Pad: constant (-1 positions, then a bias for a nonzero value), edge, reflect, wrap."""
    x, base = _var(ins[0]), node.output[0]
    mode = at.get("mode", "constant")
    if b.opset < 11:
        pads, value = list(at["pads"]), float(at.get("value", 0.0))
    else:
        pads = [int(p) for p in _const(ins[1], "pads")]
        value = float(_const(ins[2])) if len(ins) > 2 and ins[2] is not None and np.size(ins[2]) else 0.0
        if len(ins) > 3 and ins[3] is not None:
            axes = [int(a) % len(x.shape) for a in _const(ins[3], "axes")]
            full = [0] * 2 * len(x.shape)
            for k, a in enumerate(axes):
                full[a], full[a + len(x.shape)] = pads[k], pads[k + len(axes)]
            pads = full
    r = len(x.shape)
    begins, ends = pads[:r], pads[r:]
    idx = _index(x)[tuple(slice(max(-p, 0), n - max(-q, 0)) for p, q, n in zip(begins, ends, x.shape))]
    width = [(max(p, 0), max(q, 0)) for p, q in zip(begins, ends)]
    if mode == "constant":
        idx = np.pad(idx, width, constant_values=-1)
    elif mode in ("edge", "reflect", "wrap"):
        idx = np.pad(idx, width, mode=mode)
    else:
        raise NodeUnsupported(f"mode={mode}")
    y = b.reindex(x, idx, base)
    if mode == "constant" and value != 0.0:
        y = b.affine(y, None, np.where(idx == -1, value, 0.0), base)
    return [y]


def _lower_concat(b, node, ins, at):
    """Concat of variable (and constant) tensors: a concat node, or gathers summed by adds."""
    base = node.output[0]
    ref = next(v for v in ins if isinstance(v, Var))
    parts = [v if isinstance(v, Var) else b.const_var(ref, v, base) for v in ins]
    rank = len(ref.shape)
    axis = int(at["axis"]) % rank
    shape = list(ref.shape)
    shape[axis] = sum(v.shape[axis] for v in parts)
    out = Var("", tuple(shape))
    if axis >= 1 and out.batched and all(v.batched for v in parts):
        return [b.emit(base, "concat", parts, shape, attrs={"axis": axis - 1})]
    total, start = None, 0
    for v in parts:
        idx = np.full(shape, -1, np.int64)
        sl = [slice(None)] * rank
        sl[axis] = slice(start, start + v.shape[axis])
        idx[tuple(sl)] = _index(v)
        start += v.shape[axis]
        piece = b.reindex(v, idx, base)
        total = piece if total is None else b.emit(base, "add", [total, piece], shape)
    return [total]


def _lower_reduce(b, node, ins, at):
    """ReduceSum / ReduceMean: gather the reduced axes last, then a linear with ones."""
    x, base = _var(ins[0]), node.output[0]
    axes = reduce_axes(x, ins, at)
    if axes is None:
        return [x]
    g = reduced_last(b, x, axes, base)
    width = g.shape[-1]
    scale = 1.0 / width if node.op_type == "ReduceMean" else 1.0
    y = _linear(b, g, np.full((1, width), scale), None, base)
    return [b.reindex(y, _index(y).reshape(reduced_shape(x, axes, at.get("keepdims", 1))), base)]


def _lower_identity(b, node, ins, at):
    """Identity / Dropout (inference): the input itself."""
    if node.op_type == "Dropout" and len(ins) > 2 and ins[2] is not None and bool(np.any(_const(ins[2]))):
        raise NodeUnsupported("training_mode=True")
    return [_var(ins[0])]


def _lower_cast(b, node, ins, at):
    """Cast of a variable tensor: identity between float types only."""
    if int(at.get("to", 0)) not in FLOAT_TYPES:
        raise NodeUnsupported("cast of a variable tensor to a non-float type")
    return [_var(ins[0])]


def _lower_shape(b, node, ins, at):
    """Shape / Size of a variable tensor: a constant (batch dim as 1)."""
    x = _var(ins[0])
    if node.op_type == "Size":
        return [np.array(x.size, np.int64)]
    shape = np.array(x.shape, np.int64)
    return [shape[at.get("start", 0):at.get("end", len(shape))]]


def _lower_product(b, node, ins, at):
    """Mul / Div with a variable divisor or two variable operands: ``reciprocal`` and ``mul``."""
    a, c, base = ins[0], ins[1], node.output[0]
    if node.op_type == "Div" and isinstance(c, Var):
        c = b.emit(base, "reciprocal", [c], c.shape)
        if not isinstance(a, Var):
            return [b.affine(c, np.asarray(_const(a), np.float64), None, base)]
    elif not (isinstance(a, Var) and isinstance(c, Var)):
        return _lower_binary(b, node, ins, at)
    shape = tuple(np.broadcast_shapes(a.shape, c.shape))
    a = a if a.shape == shape else b.expand(a, shape, base)
    c = c if c.shape == shape else b.expand(c, shape, base)
    return [b.emit(base, "mul", [a, c], shape)]


def _lower_matmul_any(b, node, ins, at):
    """MatMul; of two variables: a ``matmul`` node when the leading (batch) dim is 1, else gathers
    to [..., M, N, K], ``mul`` and a summing linear."""
    x1, x2, base = ins[0], ins[1], node.output[0]
    if not (isinstance(x1, Var) and isinstance(x2, Var)):
        return _lower_matmul(b, node, ins, at)
    if len(x1.shape) < 2 or len(x2.shape) < 2:
        raise NodeUnsupported("product of two variable tensors of rank < 2")
    (m, k), (k2, n) = x1.shape[-2:], x2.shape[-2:]
    if k != k2:
        raise NodeUnsupported(f"inner dims differ: {list(x1.shape)} @ {list(x2.shape)}")
    batch = tuple(np.broadcast_shapes(x1.shape[:-2], x2.shape[:-2]))
    if batch and batch[0] == 1:     # per-sample rank >= 2 on both sides: one matmul node
        x1 = x1 if x1.shape == batch + (m, k) else b.expand(x1, batch + (m, k), base)
        x2 = x2 if x2.shape == batch + (k, n) else b.expand(x2, batch + (k, n), base)
        return [b.emit(base, "matmul", [x1, x2], batch + (m, n))]
    full = batch + (m, n, k)
    i1 = np.broadcast_to(_index(x1)[..., :, None, :], full)
    i2 = np.broadcast_to(np.swapaxes(_index(x2), -1, -2)[..., None, :, :], full)
    prod = b.emit(base, "mul", [b.reindex(x1, i1, base), b.reindex(x2, i2, base)], full)
    y = _linear(b, prod, np.ones((1, k)), None, base)
    return [b.reindex(y, _index(y).reshape(batch + (m, n)), base)]


def _lower_pow(b, node, ins, at):
    """Pow with a constant scalar exponent: integer >= 2 -> pow, 1 -> x, -1 -> reciprocal, 0.5 -> sqrt."""
    x, e, base = _var(ins[0], "base"), _const(ins[1], "exponent"), node.output[0]
    if e.size != 1:
        raise NodeUnsupported("non-scalar exponent")
    shape = tuple(np.broadcast_shapes(x.shape, e.shape))
    x = x if x.shape == shape else b.expand(x, shape, base)
    p = float(e.reshape(-1)[0])
    if p == 1.0:
        return [x]
    if p == 0.5:
        return [b.emit(base, "sqrt", [x], shape)]
    if p == -1.0:
        return [b.emit(base, "reciprocal", [x], shape)]
    if p == int(p) and p >= 2:
        return [b.emit(base, "pow", [x], shape, attrs={"exponent": int(p)})]
    raise NodeUnsupported(f"exponent {p} (supported: integers >= 2, 1, -1, 0.5)")


SOFTMAX_CLIP = 60.0


def _softmax_axes(b, x: Var, at: dict) -> list[int]:
    """The axes one softmax normalises over (opset < 13: every axis from ``axis`` on)."""
    rank = len(x.shape)
    axis = int(at.get("axis", 1 if b.opset < 13 else -1)) % rank
    return list(range(axis, rank)) if b.opset < 13 else [axis]


def _lower_softmax(b, node, ins, at):
    """Softmax as 1 / (1 + sum_{j != i} exp(min(x_j - x_i, SOFTMAX_CLIP))) along the reduced axes.

    Lowered to a differences linear, the clip (``c - relu(c - d)``), exp, a chain of adds (exact
    interval sums, so the reciprocal's input stays >= 1), +1 and reciprocal. The clip keeps every value finite (an infinite exp would turn the dense linears'
    0 * inf into NaN); it changes an output only where the exact one is below exp(-SOFTMAX_CLIP),
    and then by less than that (about 1e-26), far below float32 resolution.
    """
    x, base = _var(ins[0]), node.output[0]
    red = _softmax_axes(b, x, at)
    kept = [d for d in range(len(x.shape)) if d not in red]
    n = int(np.prod([x.shape[d] for d in red]))
    lead = [x.shape[d] for d in kept]
    g = b.reindex(x, np.transpose(_index(x), kept + red).reshape(lead + [n]), base)
    if n == 1:
        y = b.const_var(g, np.ones(g.shape, np.float32), base)
    else:
        pairs = [(i, j) for i in range(n) for j in range(n) if j != i]
        diff = np.zeros((len(pairs), n))
        for r, (i, j) in enumerate(pairs):
            diff[r, j], diff[r, i] = 1.0, -1.0
        d = _linear(b, g, diff, None, base)
        d = b.affine(b.emit(base, "relu", [b.affine(d, -1.0, SOFTMAX_CLIP, base)], d.shape), -1.0, SOFTMAX_CLIP, base)
        e = b.emit(base, "exp", [d], d.shape)
        cols = _index(e).reshape(lead + [n, n - 1])
        s = None
        for k in range(n - 1):      # a chain of adds: exact interval sums (a linear's IBP would cancel)
            term = b.reindex(e, cols[..., k], base)
            s = term if s is None else b.emit(base, "add", [s, term], g.shape)
        y = b.emit(base, "reciprocal", [b.affine(s, None, 1.0, base)], g.shape)
    perm = kept + red
    inverse = list(np.argsort(perm))
    back = _index(y).reshape(lead + [x.shape[d] for d in red]).transpose(inverse)
    return [b.reindex(y, back, base)]


ONNX_OPS: dict[str, Callable] = {
    "Gemm": _lower_gemm,
    "MatMul": _lower_matmul_any,
    "Add": _lower_binary,
    "Sub": _lower_binary,
    "Mul": _lower_product,
    "Div": _lower_product,
    "Pow": _lower_pow,
    "Sin": _activation("sin"),
    "Cos": _activation("cos"),
    "Exp": _activation("exp"),
    "Sqrt": _activation("sqrt"),
    "Reciprocal": _activation("reciprocal"),
    "Softmax": _lower_softmax,
    "Neg": _lower_neg,
    "Relu": _activation("relu"),
    "LeakyRelu": _activation("leaky_relu"),
    "Sigmoid": _activation("sigmoid"),
    "Tanh": _activation("tanh"),
    "Sign": _activation("sign"),
    "Clip": _lower_clip,
    "Conv": _lower_conv,
    "ConvTranspose": _lower_conv_transpose,
    "BatchNormalization": _lower_batchnorm,
    "MaxPool": _lower_maxpool,
    "AveragePool": _lower_avgpool,
    "GlobalAveragePool": _lower_global_pool,
    "GlobalMaxPool": _lower_global_pool,
    "Flatten": _lower_reindex,
    "Reshape": _lower_reindex,
    "Transpose": _lower_reindex,
    "Slice": _lower_reindex,
    "Squeeze": _lower_reindex,
    "Unsqueeze": _lower_reindex,
    "Gather": _lower_reindex,
    "Split": _lower_reindex,
    "Expand": _lower_reindex,
    "Tile": _lower_reindex,
    "DepthToSpace": _lower_reindex,
    "SpaceToDepth": _lower_reindex,
    "Resize": _lower_reindex,
    "Upsample": _lower_reindex,
    "Pad": _lower_pad,
    "Concat": _lower_concat,
    "ReduceSum": _lower_reduce,
    "ReduceMean": _lower_reduce,
    "Identity": _lower_identity,
    "Dropout": _lower_identity,
    "Cast": _lower_cast,
    "Shape": _lower_shape,
    "Size": _lower_shape,
    "Erf": _activation("erf"),
    "Floor": _activation("floor"),
    "Ceil": _activation("ceil"),
    "Round": _activation("round"),
    **REDUCE_OPS,   # Abs, Max, Min, ReduceMax, ReduceMin, ReduceL2, LayerNormalization, Gelu
}
