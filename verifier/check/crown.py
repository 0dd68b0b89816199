"""The checker's own float64 CROWN: backward linear relaxation over a batch of leaf domains.

Shapes: ``B`` leaf domains, ``m`` linear objectives (rows) per pass, values ``[B, *shape]``,
coefficients ``A`` of a value ``[B, m, *shape]``. A backward step turns ``A`` on a node's output
into coefficients on its inputs plus a constant, such that for every point of the domain
``sum(A * y) >= sum_i sum(A_in_i * x_i) + bias``; at the graph input the linear function is
minimised over the leaf box.

Domains carry ReLU split constraints. Intermediate bounds (IBP intersected with CROWN) of every
pre-activation are clamped by the splits (z <= 0: u = min(u, 0); z >= 0: l = max(l, 0)); every
bound is then valid on the constrained domain, so a bound with l > u (beyond float64 noise)
proves the domain empty. The objective pass adds ``-beta * s * z`` for each split (s = -1 for
z <= 0, +1 for z >= 0), a term that is <= 0 on the domain, so the result stays a lower bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from verifier.check import forward, relaxation
from verifier.check.interval import INTERVAL, Interval
from verifier.model.graph import Graph, Node

NONLINEAR = frozenset({"relu", "leaky_relu", "sigmoid", "tanh", "erf", "floor", "ceil", "round", "maxpool"})
SUPPORTED = frozenset(INTERVAL)
FORWARD_MAX_INPUTS = 64  # forward linear bounds (intersected with IBP/CROWN) for inputs this small
EMPTY_TOL = 1e-9  # relative margin by which l must exceed u before a domain counts as empty
BOX_TIGHTEN_MAX = 4096  # inputs of boxed ops (no backward rule) up to this size get CROWN-tight bounds


@dataclass(frozen=True)
class Domains:
    """A batch of leaf domains: input boxes ``[B, *input_shape]`` and split masks per value."""

    lower: torch.Tensor
    upper: torch.Tensor
    inactive: dict[str, torch.Tensor] = field(default_factory=dict)   # value name -> bool [B, *shape]
    active: dict[str, torch.Tensor] = field(default_factory=dict)
    caps: dict[str, torch.Tensor] = field(default_factory=dict)       # interval splits: value <= cap (+inf: none)
    floors: dict[str, torch.Tensor] = field(default_factory=dict)     # ... value >= floor (-inf: none)


@dataclass(frozen=True)
class Pass:
    """What a backward pass needs: bounds of every value, and the objective-only parameters."""

    bounds: dict[str, Interval]
    alphas: dict[str, torch.Tensor] = field(default_factory=dict)     # relu node -> [B, *shape], NaN = default
    betas: dict[str, torch.Tensor] = field(default_factory=dict)      # split node -> -beta*s, [B, *shape]
    beta_constant: torch.Tensor | None = None                          # [B]: sum of beta*s*at (interval splits)
    relaxed: dict[str, relaxation.Relaxation] = field(default_factory=dict)  # cache: bounds are final once set


def _sum_rows(t: torch.Tensor) -> torch.Tensor:
    """[B, m, *shape] -> [B, m]."""
    return t.flatten(2).sum(2)


def _back_linear(node: Node, A: torch.Tensor, p: Pass):
    w, b = node.params["weight"], node.params.get("bias")
    bias = 0.0
    if b is not None:   # A [B, m, *lead, out] @ b: one product, then the leading dims summed
        bias = A @ b
        bias = bias if bias.dim() == 2 else bias.flatten(2).sum(2)
    return [A @ w], bias


def _tuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _back_conv(node: Node, A: torch.Tensor, p: Pass):
    w, b, a = node.params["weight"], node.params.get("bias"), node.attrs
    in_shape = p.bounds[node.inputs[0]][0].shape[1:]
    nd = len(in_shape) - 1
    stride, pad, dil = _tuple(a["stride"], nd), _tuple(a["padding"], nd), _tuple(a["dilation"], nd)
    out_sp, k = A.shape[3:], w.shape[2:]
    extra = tuple(in_shape[1 + i] - ((out_sp[i] - 1) * stride[i] - 2 * pad[i] + dil[i] * (k[i] - 1) + 1)
                  for i in range(nd))
    conv_t = {1: F.conv_transpose1d, 2: F.conv_transpose2d}[nd]
    flat = A.reshape((-1,) + tuple(A.shape[2:]))
    A_in = conv_t(flat, w, None, stride, pad, extra, a["groups"], dil).reshape(A.shape[:2] + tuple(in_shape))
    bias = (A.flatten(3).sum(3) * b).sum(2) if b is not None else 0.0
    return [A_in], bias


def _back_affine(node: Node, A: torch.Tensor, p: Pass):
    return [A * node.params["scale"]], _sum_rows(A * node.params["bias"])


def _back_add(node: Node, A: torch.Tensor, p: Pass):
    return [A, A], 0.0


def _back_reshape(node: Node, A: torch.Tensor, p: Pass):
    in_shape = p.bounds[node.inputs[0]][0].shape[1:]
    return [A.reshape(A.shape[:2] + tuple(in_shape))], 0.0


def _back_gather(node: Node, A: torch.Tensor, p: Pass):
    """Adjoint of out.flat[k] = x.flat[index[k]]: scatter-add the coefficients back."""
    in_shape = p.bounds[node.inputs[0]][0].shape[1:]
    index = node.params["index"].reshape(-1).to(A.device)
    valid = index >= 0
    flat = A.flatten(2)
    A_in = torch.zeros(A.shape[:2] + (math.prod(in_shape),), dtype=A.dtype, device=A.device)
    A_in.index_add_(2, index[valid], flat[:, :, valid])
    return [A_in.reshape(A.shape[:2] + tuple(in_shape))], 0.0


def _back_concat(node: Node, A: torch.Tensor, p: Pass):
    axis = node.attrs["axis"] + 2
    sizes = [p.bounds[i][0].shape[axis - 1] for i in node.inputs]
    return list(torch.split(A, sizes, dim=axis)), 0.0


def _relaxation(node: Node, p: Pass) -> relaxation.Relaxation:
    """The linear lines of an elementwise nonlinear node at its input bounds (computed once per pass)."""
    if node.name not in p.relaxed:
        p.relaxed[node.name] = _relax(node, p)
    return p.relaxed[node.name]


def _relax(node: Node, p: Pass) -> relaxation.Relaxation:
    l, u = p.bounds[node.inputs[0]]
    if node.op == "relu":
        alpha = p.alphas.get(node.name)
        if alpha is not None and alpha.dim() == l.dim() + 1:   # one slope per objective row: [B, m, *shape]
            return relaxation.relu(l.unsqueeze(1), u.unsqueeze(1), alpha)
        return relaxation.relu(l, u, alpha)
    if node.op == "leaky_relu":
        return relaxation.leaky_relu(l, u, float(node.attrs["alpha"]))
    if node.op in relaxation.STEP_FN:
        return relaxation.step(node.op, l, u)
    return {"sigmoid": relaxation.sigmoid, "tanh": relaxation.tanh, "erf": relaxation.erf}[node.op](l, u)


def _back_elementwise(node: Node, A: torch.Tensor, p: Pass):
    """Lower line where the coefficient is >= 0, upper line where it is < 0; plus beta terms."""
    lw, lb, uw, ub = (t if t.dim() == A.dim() else t.unsqueeze(1) for t in _relaxation(node, p))
    Ap = A.clamp(min=0)                       # A = Ap + An, so Ap*lw + An*uw = A*uw + Ap*(lw - uw)
    A_in = A * uw + Ap * (lw - uw)
    if node.name in p.betas:
        A_in = A_in + p.betas[node.name].unsqueeze(1)
    return [A_in], _rows_dot(A, ub) + _rows_dot(Ap, lb - ub)


def _rows_dot(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum(A * v) per row, [B, m], for ``v`` of shape [B, 1, *shape] (a product, not a temporary) or [B, m, *shape]."""
    if v.shape[1] != 1:
        return (A * v).flatten(2).sum(2)
    return torch.matmul(A.flatten(2), v.flatten(2).transpose(1, 2)).squeeze(-1)


def _pair(v, n: int, one: int) -> tuple[int, int]:
    """A 2-D (h, w) pair from a 1-D or 2-D attribute (1-D ops get ``one`` as the height)."""
    t = _tuple(v, n)
    return (one, t[0]) if n == 1 else (t[0], t[1])


def _windows(node: Node, in_shape: tuple[int, ...]) -> torch.Tensor:
    """Flat input index of every window element, [k, L] (-1 for padding), in output order."""
    a, n = node.attrs, len(in_shape) - 1
    H, W = (1, in_shape[1]) if n == 1 else in_shape[1:]
    (kh, kw), (sh, sw) = _pair(a["kernel"], n, 1), _pair(a["stride"], n, 1)
    (ph, pw), (dh, dw) = _pair(a["padding"], n, 0), _pair(a["dilation"], n, 1)
    Ho, Wo = (1, node.shape[1]) if n == 1 else node.shape[1:]
    eh = max(0, (Ho - 1) * sh + dh * (kh - 1) + 1 - (H + 2 * ph))   # ceil_mode windows past the edge
    ew = max(0, (Wo - 1) * sw + dw * (kw - 1) + 1 - (W + 2 * pw))
    idx = torch.arange(H * W, dtype=torch.float64).reshape(1, 1, H, W)
    idx = F.pad(idx, (pw, pw + ew, ph, ph + eh), value=-1.0)
    win = F.unfold(idx, (kh, kw), dilation=(dh, dw), stride=(sh, sw))[0]
    Lh = (idx.shape[2] - dh * (kh - 1) - 1) // sh + 1
    Lw = (idx.shape[3] - dw * (kw - 1) - 1) // sw + 1
    return win.reshape(kh * kw, Lh, Lw)[:, :Ho, :Wo].reshape(kh * kw, Ho * Wo).long()


def _back_maxpool(node: Node, A: torch.Tensor, p: Pass):
    """max(window) >= x[j*] (j* = argmax of the lower bounds); <= x[j*] if x[j*] dominates, else <= max u."""
    l, u = p.bounds[node.inputs[0]]
    win = _windows(node, tuple(l.shape[1:])).to(l.device)
    B, m, C = A.shape[:3]
    pad = win < 0
    lw = l.reshape(B, C, -1)[:, :, win.clamp(min=0)].masked_fill(pad, -math.inf)     # [B, C, k, L]
    uw = u.reshape(B, C, -1)[:, :, win.clamp(min=0)].masked_fill(pad, -math.inf)
    l_star, j = lw.max(2)
    others = uw.scatter(2, j.unsqueeze(2), -math.inf).max(2).values
    dominated = l_star >= others
    src = win.expand(B, C, -1, -1).gather(2, j.unsqueeze(2)).squeeze(2)             # [B, C, L]
    Ap, An = A.clamp(min=0).reshape(B, m, C, -1), A.clamp(max=0).reshape(B, m, C, -1)
    coef = Ap + An * dominated.unsqueeze(1)
    top = torch.where(dominated, torch.zeros_like(l_star), uw.max(2).values)
    A_in = torch.zeros((B, m, C, l[0, 0].numel()), dtype=A.dtype, device=A.device)
    A_in.scatter_add_(3, src.reshape(B, 1, C, -1).expand(B, m, C, -1), coef)
    return [A_in.reshape(A.shape[:2] + tuple(l.shape[1:]))], (An * top.unsqueeze(1)).flatten(2).sum(2)


# ---------------------------------------------------------------------------------- smooth ops
_PERIOD = 2 * math.pi


def _shifted(a: torch.Tensor, l: torch.Tensor) -> list[torch.Tensor]:
    """a + 2 pi k for the k that put it in [l, l + 4 pi)."""
    k = torch.floor((l - a) / _PERIOD)
    return [a + _PERIOD * (k + j) for j in range(3)]


def _stationary(node: Node, s: torch.Tensor, l: torch.Tensor) -> list[torch.Tensor]:
    """Points where f'(z) = s for the smooth op of ``node`` (extra points are harmless)."""
    op = node.op
    if op == "pow":
        n = int(node.attrs["exponent"])
        r = (s.abs() / n) ** (1.0 / (n - 1))
        return [r, -r]
    if op in ("sin", "cos"):
        a = torch.acos(s.clamp(-1.0, 1.0))
        off = 0.0 if op == "sin" else -math.pi / 2          # cos z = sin(z + pi/2)
        return _shifted(a + off, l) + _shifted(-a + off, l)
    if op == "exp":
        return [torch.log(s.clamp(min=1e-300))]
    if op == "reciprocal":
        r = torch.sqrt(1.0 / (-s).clamp(min=1e-300))
        return [r, -r]
    return [0.25 / (s * s).clamp(min=1e-300)]          # sqrt


_SMOOTH_F = {"pow": lambda node, z: z ** int(node.attrs["exponent"]), "sin": lambda node, z: torch.sin(z),
             "cos": lambda node, z: torch.cos(z), "exp": lambda node, z: torch.exp(z),
             "reciprocal": lambda node, z: 1.0 / z, "sqrt": lambda node, z: torch.sqrt(z.clamp(min=0))}


def _smooth_lines(node: Node, l: torch.Tensor, u: torch.Tensor):
    """(s, b_lo, b_hi): s z + b_lo <= f(z) <= s z + b_hi on [l, u], s = chord slope (0 if degenerate).

    The intercepts are the extremes of f(z) - s z, attained at an end or a stationary point.
    Outside the op's domain (reciprocal across 0, sqrt below 0) the lines are infinite.
    """
    f = _SMOOTH_F[node.op]
    width = u - l
    flat = width <= 1e-12 * (1 + l.abs() + u.abs())
    s = torch.where(flat, torch.zeros_like(l), (f(node, u) - f(node, l)) / torch.where(flat, torch.ones_like(l), width))
    cands = [l, u] + [torch.where((z >= l) & (z <= u), z, l) for z in _stationary(node, s, l)]
    g = torch.stack([f(node, z) - s * z for z in cands])
    b_lo, b_hi = g.amin(0), g.amax(0)
    pad = 1e-9 * (1 + b_lo.abs() + b_hi.abs() + s.abs() * (l.abs() + u.abs()))
    b_lo, b_hi = b_lo - pad, b_hi + pad
    if node.op in ("sin", "cos"):
        full = width >= _PERIOD
        s = torch.where(full, torch.zeros_like(s), s)
        b_lo, b_hi = torch.where(full, -torch.ones_like(s), b_lo), torch.where(full, torch.ones_like(s), b_hi)
    bad = ~(torch.isfinite(s) & torch.isfinite(b_lo) & torch.isfinite(b_hi))
    if node.op == "reciprocal":
        bad |= (l <= 0) & (u >= 0)
    if node.op == "sqrt":
        bad |= l < 0
    inf = torch.full_like(s, math.inf)
    return torch.where(bad, torch.zeros_like(s), s), torch.where(bad, -inf, b_lo), torch.where(bad, inf, b_hi)


def _signed_bias(A: torch.Tensor, b_lo: torch.Tensor, b_hi: torch.Tensor) -> torch.Tensor:
    """sum(A+ * b_lo + A- * b_hi) over the value dims, NaN-free for infinite intercepts where A = 0."""
    zero = torch.zeros_like(A)
    return _sum_rows(torch.where(A > 0, A * b_lo, zero) + torch.where(A < 0, A * b_hi, zero))


def _back_smooth(node: Node, A: torch.Tensor, p: Pass):
    """Two parallel lines: A_in = A * s; intercept by the sign of A."""
    l, u = p.bounds[node.inputs[0]]
    s, b_lo, b_hi = (t.unsqueeze(1) for t in _smooth_lines(node, l, u))
    return [A * s], _signed_bias(A, b_lo, b_hi)


def _back_mul(node: Node, A: torch.Tensor, p: Pass):
    """x * y >= / <= the mean of the two McCormick planes of each side."""
    (lx, ux), (ly, uy) = ((t[0].unsqueeze(1), t[1].unsqueeze(1)) for t in (p.bounds[i] for i in node.inputs))
    b_lo, b_hi = -(lx * ly + ux * uy) / 2, -(lx * uy + ux * ly) / 2
    return [A * (ly + uy) / 2, A * (lx + ux) / 2], _signed_bias(A, b_lo, b_hi)


def _back_matmul(node: Node, A: torch.Tensor, p: Pass):
    """x1 @ x2: the mean McCormick planes of every product term, summed over the inner dim."""
    (l1, u1), (l2, u2) = ((t[0].unsqueeze(1), t[1].unsqueeze(1)) for t in (p.bounds[i] for i in node.inputs))
    b_lo, b_hi = -(l1 @ l2 + u1 @ u2) / 2, -(l1 @ u2 + u1 @ l2) / 2
    A1 = A @ ((l2 + u2) / 2).transpose(-1, -2)
    A2 = ((l1 + u1) / 2).transpose(-1, -2) @ A
    return [A1, A2], _signed_bias(A, b_lo, b_hi)


SMOOTH = frozenset(_SMOOTH_F) | {"mul", "matmul"}


BACKWARD: dict[str, Callable] = {
    "linear": _back_linear, "conv": _back_conv, "affine": _back_affine, "add": _back_add,
    "reshape": _back_reshape, "gather": _back_gather, "concat": _back_concat, "maxpool": _back_maxpool,
    "relu": _back_elementwise, "leaky_relu": _back_elementwise,
    "sigmoid": _back_elementwise, "tanh": _back_elementwise, "erf": _back_elementwise,
    "floor": _back_elementwise, "ceil": _back_elementwise, "round": _back_elementwise,
    "pow": _back_smooth, "sin": _back_smooth, "cos": _back_smooth, "exp": _back_smooth,
    "reciprocal": _back_smooth, "sqrt": _back_smooth, "mul": _back_mul, "matmul": _back_matmul,
}

_S_SHAPED = "ends (monotone); tangent / chord lines, min-derivative lines on mixed intervals"
_STEP = "ends (monotone); hull lines at the midpoint (envelope {}, chords through the step corners, constants)"
_SMOOTH_RULE = "interval rule; chord-slope parallel lines, intercepts at stationary points"
# op -> the checker's interval and backward rules, in words (``verifier.bounds.registry.op_rules``)
CHECK_RULES: dict[str, str] = {
    "linear": "weights split by sign; exact backward", "conv": "kernel split by sign; exact backward",
    "affine": "scale split by sign; exact backward", "add": "sum of ends; exact backward",
    "reshape": "moves both ends; exact backward", "gather": "moves both ends; exact backward",
    "concat": "moves both ends; exact backward",
    "relu": "ends (monotone); triangle relaxation, certificate alphas and betas",
    "leaky_relu": "ends (monotone); chord and line through 0 (slope >= 0 only)",
    "sigmoid": _S_SHAPED, "tanh": _S_SHAPED, "erf": _S_SHAPED + "; ends padded",
    "floor": _STEP.format("z - 1 <= floor(z) <= z"), "ceil": _STEP.format("z <= ceil(z) <= z + 1"),
    "round": _STEP.format("z - 1/2 <= round(z) <= z + 1/2"),
    "maxpool": "window max of ends; lower at the best lower bound, upper if it dominates",
    "mul": "corner products; mean McCormick planes", "matmul": "corner products summed; mean McCormick planes",
    "pow": _SMOOTH_RULE, "sin": _SMOOTH_RULE, "cos": _SMOOTH_RULE, "exp": _SMOOTH_RULE,
    "reciprocal": _SMOOTH_RULE + "; infinite across 0", "sqrt": _SMOOTH_RULE + "; NaN (rejected) below 0",
}


def backward(graph: Graph, start: str, A: torch.Tensor, p: Pass) -> torch.Tensor:
    """Lower bounds [B, m] of ``sum(A * value(start))`` over the leaf boxes."""
    acc = {start: A}
    bias = torch.zeros(A.shape[:2], dtype=A.dtype, device=A.device)
    for node in reversed(graph.nodes):
        if node.name not in acc:
            continue
        if node.op not in BACKWARD:     # no linear rule: treat the node as its interval (a box)
            bias = bias + _box_lower(acc.pop(node.name), p.bounds[node.name])
            continue
        ins, add = BACKWARD[node.op](node, acc.pop(node.name), p)
        bias = bias + add
        for name, A_in in zip(node.inputs, ins):
            acc[name] = acc[name] + A_in if name in acc else A_in
    A_x = acc.get(graph.input_name)
    if A_x is None:
        return bias
    l, u = (t.unsqueeze(1) for t in p.bounds[graph.input_name])
    return bias + _sum_rows(A_x.clamp(min=0) * l + A_x.clamp(max=0) * u)


def _box_lower(A: torch.Tensor, lu: Interval) -> torch.Tensor:
    """min of sum(A * y) over the box y in [l, u]: [B, m] (NaN-free for infinite ends with A = 0)."""
    l, u = (t.unsqueeze(1) for t in lu)
    zero = torch.zeros_like(A)
    return _sum_rows(torch.where(A > 0, A * l, zero) + torch.where(A < 0, A * u, zero))


def needs_bounds(graph: Graph) -> dict[str, bool]:
    """Values feeding a nonlinear op -> whether all neurons need CROWN (True) or only unstable ones.

    Inputs of the smooth / bilinear ops and of ops without a backward rule (boxed in ``backward``)
    are tightened in full when they have at most ``BOX_TIGHTEN_MAX`` neurons (IBP beyond that).
    """
    need: dict[str, bool] = {}
    sizes = {n.name: n.size for n in graph.nodes}
    for node in graph.nodes:
        if node.op in NONLINEAR:
            v = node.inputs[0]
            need[v] = need.get(v, False) or node.op not in ("relu", "leaky_relu")
        elif node.op in SMOOTH or node.op not in BACKWARD:
            for v in node.inputs:
                if v != graph.input_name and sizes[v] <= BOX_TIGHTEN_MAX:
                    need[v] = True
    return need


def _row_bounds(graph: Graph, name: str, lu: Interval, rows: torch.Tensor, budget: int,
                pass_of: Callable[[int, int], Pass]) -> Interval:
    """``lu`` with the flat ``rows`` of value ``name`` intersected with CROWN bounds, row chunk by row
    chunk; ``pass_of(start, r)`` is the pass for rows ``[start, start + r)``."""
    l, u = lu
    B, shape = l.shape[0], l.shape[1:]
    fl, fu = l.flatten(1).clone(), u.flatten(1).clone()
    widest = max([graph.n_inputs] + [n.size for n in graph.nodes])
    step = max(1, budget // (2 * B * widest))
    for start in range(0, rows.numel(), step):
        idx = rows[start:start + step]
        r = idx.numel()
        A = torch.zeros((B, 2 * r, fl.shape[1]), dtype=l.dtype, device=l.device)
        A[:, torch.arange(r), idx] = 1.0
        A[:, r + torch.arange(r), idx] = -1.0
        low = backward(graph, name, A.reshape((B, 2 * r) + tuple(shape)), pass_of(start, r))
        fl[:, idx] = torch.maximum(fl[:, idx], low[:, :r])
        fu[:, idx] = torch.minimum(fu[:, idx], -low[:, r:])
    return fl.reshape(l.shape), fu.reshape(u.shape)


def _tighten(graph: Graph, name: str, lu: Interval, p: Pass, every: bool, budget: int) -> Interval:
    """IBP bounds of value ``name`` intersected with CROWN bounds (every neuron, or the unstable ones)."""
    fl, fu = (t.flatten(1) for t in lu)
    rows = torch.arange(fl.shape[1], device=fl.device) if every else \
        torch.nonzero(((fl < 0) & (fu > 0)).any(0)).flatten()
    return _row_bounds(graph, name, lu, rows, budget, lambda start, r: p)


def _tighten_rows(graph: Graph, name: str, lu: Interval, bounds: dict, rows: torch.Tensor,
                  slopes: dict[str, torch.Tensor], budget: int) -> Interval:
    """``lu`` intersected with CROWN bounds of the flat ``rows`` of value ``name`` under given relu slopes.

    ``slopes[relu]``: ``[2k or 1, *shape]`` lower slopes in [0, 1]; entry j < k is used for the lower
    bound of ``rows[j]``, entry k + j for its upper bound (one entry: shared by all).
    """
    B, k = lu[0].shape[0], rows.numel()

    def pass_of(start: int, r: int) -> Pass:
        pick = torch.cat([torch.arange(start, start + r), k + torch.arange(start, start + r)])
        return Pass(bounds, {relu: (t if t.shape[0] == 1 else t[pick]).unsqueeze(0).expand((B,) + (-1,) * t.dim())
                             for relu, t in slopes.items()})

    return _intersect(lu, _row_bounds(graph, name, lu, rows, budget, pass_of))


def _intersect(lu: Interval, other: Interval) -> Interval:
    """Per-element intersection of two sound intervals; where rounding makes them cross, the first one."""
    l, u = torch.maximum(lu[0], other[0]), torch.minimum(lu[1], other[1])
    cross = l > u
    return torch.where(cross, lu[0], l), torch.where(cross, lu[1], u)


def _clamp(name: str, lu: Interval, dom: Domains, empty: torch.Tensor) -> Interval:
    """Apply the split constraints on value ``name``; mark domains whose bounds cross as empty."""
    l, u = lu
    if name in dom.inactive:
        u = torch.where(dom.inactive[name], u.clamp(max=0), u)
    if name in dom.active:
        l = torch.where(dom.active[name], l.clamp(min=0), l)
    if name in dom.caps:
        u = torch.minimum(u, dom.caps[name])
    if name in dom.floors:
        l = torch.maximum(l, dom.floors[name])
    tol = EMPTY_TOL * (1 + l.abs() + u.abs())
    empty |= (l > u + tol).flatten(1).any(1)
    return torch.minimum(l, u), torch.maximum(l, u)


def intermediate_bounds(graph: Graph, dom: Domains, budget: int = 1 << 24,
                        known: dict[str, Interval] | None = None,
                        tighten_all: bool = False, start_alphas: dict | None = None, crown: bool = True
                        ) -> tuple[dict[str, Interval], torch.Tensor]:
    """Bounds of every value on each leaf domain, and the mask [B] of domains proved empty.

    ``known``: bounds valid on a domain containing each leaf (the region box, or the leaf's parent
    domain), shape [1 or B, *shape]. They are intersected in before CROWN tightens a value, so
    neurons they already settle get no backward rows. ``tighten_all``: CROWN tightens every neuron
    that feeds a nonlinear op, stable ones too (tighter intervals downstream; slower).
    ``start_alphas``: value -> (flat rows [k], {relu node: slopes [2k or 1, *shape]}): those rows
    are also bounded by a backward pass with the given lower slopes (alpha-CROWN's intermediate
    bounds, re-derived), intersected in. ``crown=False``: no backward passes at all (interval and
    forward bounds intersected with ``known`` and clamped by the splits: cheap, and as tight as the
    search's "root" mode when ``known`` holds the root's alpha-CROWN bounds).
    """
    empty = torch.zeros(dom.lower.shape[0], dtype=torch.bool, device=dom.lower.device)
    need = needs_bounds(graph)
    box = _clamp(graph.input_name, (dom.lower, dom.upper), dom, empty)
    bounds = {graph.input_name: box}
    p = Pass(bounds)
    n = graph.n_inputs
    fns = {graph.input_name: forward.input_fn(box[0])} if n <= FORWARD_MAX_INPUTS else None
    for node in graph.nodes:
        lu = INTERVAL[node.op](node, [bounds[i] for i in node.inputs])
        fn = forward.step(node, fns, bounds, n) if fns is not None else None
        if fn is not None:
            f_lo, f_hi = forward.concretize(fn, *box)
            lu = (torch.maximum(lu[0], f_lo), torch.minimum(lu[1], f_hi))
        if known is not None and node.name in known:
            lu = _intersect(lu, known[node.name])
        if node.name in need:
            if crown and node.op in BACKWARD:     # a boxed node (no backward rule) cannot tighten itself
                lu = _tighten(graph, node.name, lu, p, need[node.name] or tighten_all, budget)
            if start_alphas and node.name in start_alphas:
                lu = _tighten_rows(graph, node.name, lu, bounds, *start_alphas[node.name], budget)
            lu = _clamp(node.name, lu, dom, empty)
        bounds[node.name] = lu
        if fns is not None:
            fns[node.name] = fn if fn is not None else forward.box(lu, n)
    return bounds, empty


def objective_lower(graph: Graph, p: Pass, rows: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Lower bound [B] of ``rows[k] . y - rhs[k]`` on leaf k (rows: [B, n_outputs], rhs: [B]).

    The better of the backward pass and the row applied to the output's interval: on small
    inputs the forward bounds make each output's interval tight, and a difference of two outputs
    taken from them can beat the backward pass, whose relaxations add up along the row (ACAS Xu
    3_3 prop 2: 2.7e-4 from the intervals where the backward pass gives -1.6e-3).
    """
    A = rows.reshape((rows.shape[0], 1) + tuple(graph.output_shape))
    back = backward(graph, graph.output_name, A, p)[:, 0] - rhs
    if p.beta_constant is not None:
        back = back + p.beta_constant
    lo, hi = (t.flatten(1) for t in p.bounds[graph.output_name])
    interval = (rows.clamp(min=0) * lo + rows.clamp(max=0) * hi).sum(1) - rhs
    return torch.maximum(back, torch.nan_to_num(interval, nan=-math.inf))
