"""BoundEngine: IBP, CROWN and alpha-CROWN bounds of a canonical graph over input boxes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from verifier import clock
from verifier.bounds.alpha import AlphaSet, initial_alphas, optimise_alphas
from verifier.bounds.base import Bounds, ElementwiseOp, RelaxState
from verifier.bounds.beta import compute_domains
from verifier.bounds.crown import ancestors, backward_to_input, concretize_lower, one_hot_rows
from verifier.bounds.forward import RULES, concretize, input_fn
from verifier.bounds.problem import DeadlineReached, Domain, input_box, spec_rows
from verifier.bounds.registry import OPS, unsupported_ops
from verifier.config import AlphaConfig
from verifier.model.graph import Graph

METHODS = ("ibp", "crown", "alpha")


@dataclass
class BoundResult:
    """Bounds of C @ y_flat (or of y_flat), plus every node's bounds and the alphas used."""

    lower: torch.Tensor
    upper: torch.Tensor | None
    intermediate: dict[str, tuple[torch.Tensor, torch.Tensor]]
    alphas: dict[str, AlphaSet] | None = None
    # method "crown" with ``want_coeffs``: input coefficients of the lower-bound rows, [B|1, m, *input_shape]
    # (None where the graph's output does not depend on its input)
    coeffs: torch.Tensor | None = None


class BoundEngine:
    """Bound propagation over one graph; holds only prepared (moved / cast) weights."""

    def __init__(self, graph: Graph, device=None, dtype=torch.float32, *, max_A_elements: int = 1 << 25,
                 backward_budget: float = 1e11, forward_max_inputs: int = 64):
        """Prepare ``graph`` on ``device`` (None: where its params are; inputs are moved there) in ``dtype``.

        Tuning knobs (keyword only):

        ``max_A_elements`` caps one backward pass's A ([B, rows, *shape]) by splitting start rows;
        an intermediate node whose CROWN pass would cost more than ``backward_budget``
        multiply-adds per batch entry keeps its IBP / forward-mode bounds; forward-mode linear
        bounds (``forward.py``) are computed for every node when the input has at most
        ``forward_max_inputs`` scalars.
        """
        self.max_A_elements = max_A_elements
        self.backward_budget = backward_budget
        missing = unsupported_ops(graph)
        if missing:
            raise NotImplementedError(f"no bound rule for: {', '.join(missing)}")
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else _param_device(graph)
        full_precision_on(self.device)
        # a time.monotonic() value: propagation raises DeadlineReached once it has passed (or the run
        # is cancelled: see verifier.clock)
        self.deadline: float | None = None
        self.graph = graph.to(device=self.device, dtype=dtype)
        self.nodes = self.graph.node_map
        self.scope = {name: anc | {name} for name, anc in ancestors(self.graph).items()}
        consumers = self.graph.consumers()
        self.nonlinear_consumers = {
            name: [self.nodes[c] for c in cs if OPS[self.nodes[c].op].nonlinear] for name, cs in consumers.items()}
        self.refined = {name for name, cs in self.nonlinear_consumers.items()
                        if cs and name != self.graph.input_name}
        self.split_input = {n.name: n.inputs[0] for n in self.graph.nodes if n.op in ("relu", "leaky_relu")}
        cost = {n.name: _row_cost(n) for n in self.graph.nodes}
        self.row_cost = {name: sum(cost.get(n, 0) for n in scope) for name, scope in self.scope.items()}
        self.forward_mode = self.graph.n_inputs <= forward_max_inputs

    # ------------------------------------------------------------------ public API
    def compute(self, lower, upper, C=None, *, method="crown", alpha=AlphaConfig(), intermediate=None,
                splits=None, alphas=None, want_upper=True, deadline=None, want_coeffs=False) -> BoundResult:
        """Bounds of ``C @ y_flat`` (rows) over the box [lower, upper] (see package docs).

        ``alphas`` (method "alpha"): initial alpha values, e.g. a previous result's ``alphas``;
        with ``alpha.iterations == 0`` the bound is evaluated once with them (certificate check).
        ``want_upper=False`` skips the upper bound (``upper`` is then None). ``deadline``
        (``time.monotonic()``) ends the alpha iterations early, keeping the best bound so far.
        ``want_coeffs`` (method "crown"): also return the rows' linear coefficients on the input
        (``BoundResult.coeffs``; a split heuristic reads |coefficient| x width as a dimension's share
        of the bound's slack).
        """
        if method not in METHODS:
            raise ValueError(f"unknown bound method {method!r} (known: {', '.join(METHODS)})")
        box = input_box(self.graph, lower, upper, self.device, self.dtype)
        dom = Domain(intermediate, splits)
        A_spec, m = spec_rows(self.graph, C, box[0], want_upper, self.dtype)
        with torch.no_grad():
            bounds, plan = self.propagate(box, dom, crown=method != "ibp")
            low = self._ibp_rows(A_spec, bounds)
            coeffs = {} if want_coeffs else None
            if method != "ibp":
                low = torch.maximum(self.spec_lower(A_spec, bounds, None, {}, coeffs), low)
        if method != "alpha":
            res = self._result(low, m, want_upper, bounds, None)
            if coeffs and coeffs.get("x") is not None:
                res = dataclasses.replace(res, coeffs=coeffs["x"][:, :m].detach())
            return res
        init = initial_alphas(self, bounds, plan, A_spec.shape[1], alphas)
        low, bounds, best = optimise_alphas(self, box, dom, A_spec, m, alpha, bounds, plan, init, low, deadline)
        return self._result(low, m, want_upper, bounds, best)

    def compute_domains(self, lower, upper, C, splits=None, **kwargs):
        """beta-CROWN bounds on ReLU-split subdomains: see ``verifier.bounds.beta.compute_domains``."""
        return compute_domains(self, lower, upper, C, splits, **kwargs)

    def check_time(self) -> None:
        """Raise ``DeadlineReached`` once ``self.deadline`` has passed."""
        if self.deadline is not None and clock.now() > self.deadline:
            raise DeadlineReached("bound propagation stopped at the deadline")

    # ------------------------------------------------------------------ propagation
    def propagate(self, box: Bounds, dom: Domain, *, crown: bool, plan=None, alphas=None, reference=None,
                  forward: bool = True):
        """One pass in topological order: IBP everywhere, CROWN on inputs of nonlinear nodes.

        Returns (bounds of every value, plan: node -> flat indices refined by CROWN).
        ``plan`` fixes the refined rows (alpha iterations); ``reference`` bounds are intersected;
        ``forward=False`` skips forward-mode bounds (plain IBP + CROWN, as the certificate checker derives them).
        """
        bounds = {self.graph.input_name: box}
        cache: dict = {}
        new_plan = {}
        fns = {self.graph.input_name: input_fn(box)} if crown and forward and self.forward_mode else None
        for node in self.graph.nodes:
            self.check_time()
            in_bounds = [bounds[i] for i in node.inputs]
            lo, hi = OPS[node.op].ibp(node, in_bounds)
            lo, hi = self._tighten(node.name, lo, hi, dom, reference)
            if fns is not None:
                lo, hi = self._forward_fn(node, fns, bounds, lo, hi, dom)
            if crown and node.name in self.refined:
                rows = plan[node.name] if plan is not None else self._unstable_rows(node.name, lo, hi)
                if plan is None and 2 * rows.numel() * self.row_cost[node.name] > self.backward_budget:
                    rows = rows[:0]  # too costly: keep the IBP / forward-mode bounds
                new_plan[node.name] = rows
                if rows.numel():
                    aset = alphas.get(node.name) if alphas else None
                    lo, hi = self._crown_rows(node.name, rows, lo, hi, bounds, aset, cache)
                    lo, hi = self._tighten(node.name, lo, hi, dom, None)
            bounds[node.name] = (lo, hi)
        return bounds, new_plan

    def _forward_fn(self, node, fns, bounds, lo, hi, dom):
        """Forward-mode linear functions of ``node`` (stored in ``fns``); bounds intersected with them."""
        op = OPS[node.op]
        lines = op.relax(node, *bounds[node.inputs[0]]) if isinstance(op, ElementwiseOp) else None
        fn = RULES[node.op](node, [fns[i] for i in node.inputs], [bounds[i] for i in node.inputs], lines)
        fns[node.name] = fn
        f_lo, f_hi = concretize(fn, bounds[self.graph.input_name])
        return self._tighten(node.name, torch.maximum(lo, f_lo), torch.minimum(hi, f_hi), dom, None)

    def spec_lower(self, A_spec, bounds, aset: AlphaSet | None, cache, coeffs: dict | None = None) -> torch.Tensor:
        """CROWN lower bound of every spec row (A_spec: [B|1, R, *output_shape]); [B, R].

        ``coeffs``, when given, receives the rows' input coefficients under key "x" ([B|1, R, *input_shape]).
        """
        out = self.graph.output_name
        if out == self.graph.input_name:
            if coeffs is not None:
                coeffs["x"] = A_spec
            return concretize_lower(A_spec, 0.0, bounds[out], A_spec.shape[1])
        relax = self._relax_fn(bounds, aset, cache)
        A_x, bias = backward_to_input(self.graph, out, A_spec, bounds, relax, self.scope[out])
        if coeffs is not None:
            coeffs["x"] = A_x
        return concretize_lower(A_x, bias, bounds[self.graph.input_name], A_spec.shape[1])

    def _crown_rows(self, name, rows, lo, hi, bounds, aset, cache):
        """Tighten (lo, hi) of node ``name`` at the flat ``rows`` with CROWN, in row chunks."""
        k = rows.numel()
        per_row = lo.shape[0] * max(self.nodes[n].size for n in self.scope[name])
        chunk = max(1, self.max_A_elements // (2 * per_row))
        lows, highs = [], []
        for s in range(0, k, chunk):
            self.check_time()
            e = min(k, s + chunk)
            sub = None if aset is None else _alpha_rows(aset, k, s, e)
            start, A0, bias0 = self._start_matrix(name, rows[s:e], lo)
            relax = self._relax_fn(bounds, sub, cache)
            if start == self.graph.input_name:
                A_x, bias = A0, 0.0
            else:
                A_x, bias = backward_to_input(self.graph, start, A0, bounds, relax, self.scope[start])
            low = concretize_lower(A_x, bias + bias0, bounds[self.graph.input_name], 2 * (e - s))
            lows.append(low[:, : e - s])
            highs.append(-low[:, e - s:])
        low, high = torch.cat(lows, 1), torch.cat(highs, 1)
        flat_lo, flat_hi = lo.flatten(1), hi.flatten(1)
        new_lo = flat_lo.index_copy(1, rows, torch.maximum(flat_lo[:, rows], low))
        new_hi = flat_hi.index_copy(1, rows, torch.minimum(flat_hi[:, rows], high))
        return new_lo.reshape(lo.shape), new_hi.reshape(hi.shape)

    def _start_matrix(self, name, rows, like):
        """Where a backward pass for ``rows`` of ``name`` starts: (node, A, bias).

        One-hot rows at ``name`` in general; for a vector-valued linear node the rows of its
        weight at its input directly (skips a one-hot matmul).
        """
        node = self.nodes[name]
        if node.op == "linear" and len(node.shape) == 1:
            w, b = node.params["weight"][rows], node.params.get("bias")
            A = torch.cat([w, -w]).unsqueeze(0).reshape((1, 2 * rows.numel()) + tuple(self.graph.shape_of(node.inputs[0])))
            bias = 0.0 if b is None else torch.cat([b[rows], -b[rows]]).unsqueeze(0)
            return node.inputs[0], A, bias
        return name, one_hot_rows(rows, node.shape, like.dtype, like.device), 0.0

    def _relax_fn(self, bounds, aset: AlphaSet | None, cache):
        """Relaxation lines per elementwise node; alpha-dependent ones for nodes in ``aset``."""

        def relax(node) -> RelaxState:
            op: ElementwiseOp = OPS[node.op]
            lo, hi = bounds[node.inputs[0]]
            if aset is not None and node.name in aset.slopes:
                return RelaxState(*op.relax(node, lo, hi, aset.slopes[node.name]))
            if node.name not in cache:
                cache[node.name] = RelaxState(*(t.unsqueeze(1) for t in op.relax(node, lo, hi)))
            return cache[node.name]

        return relax

    # ------------------------------------------------------------------ helpers
    def _ibp_rows(self, A_spec, bounds) -> torch.Tensor:
        """Interval lower bound of every spec row from the output box; [B, R]."""
        return concretize_lower(A_spec, 0.0, bounds[self.graph.output_name], A_spec.shape[1])

    def _tighten(self, name, lo, hi, dom: Domain, reference):
        """Intersect with given / reference bounds, then clamp at relu splits."""
        for known in (dom.intermediate, reference):
            if known and name in known:
                k_lo, k_hi = known[name]
                lo, hi = torch.maximum(lo, k_lo.to(lo)), torch.minimum(hi, k_hi.to(hi))
        if dom.splits:
            for relu, pre in self.split_input.items():
                if pre == name and relu in dom.splits:
                    s = dom.splits[relu].to(lo.device).reshape(lo.shape)  # flat [B, n] or [B, *shape]
                    lo = torch.where(s > 0, lo.clamp(min=0), lo)
                    hi = torch.where(s < 0, hi.clamp(max=0), hi)
        return lo, hi

    def _unstable_rows(self, name, lo, hi) -> torch.Tensor:
        """Flat indices (union over the batch) of neurons some nonlinear consumer relaxes inexactly."""
        mask = torch.zeros_like(lo, dtype=torch.bool)
        for c in self.nonlinear_consumers[name]:
            mask |= OPS[c.op].unstable(c, lo, hi)
        return mask.flatten(1).any(0).nonzero().flatten()

    def _result(self, low, m, want_upper, bounds, alphas) -> BoundResult:
        """Split lower rows into (lower of C, upper of C) and package."""
        upper = -low[:, m:2 * m] if want_upper else None
        inter = {k: (v[0].detach(), v[1].detach()) for k, v in bounds.items()}
        return BoundResult(low[:, :m].detach(), None if upper is None else upper.detach(), inter, alphas)


def _alpha_rows(aset: AlphaSet, k: int, s: int, e: int) -> AlphaSet:
    """The alphas of start rows [s, e) (and their upper-bound twins [k + s, k + e))."""
    slopes = {}
    for name, t in aset.slopes.items():
        slopes[name] = t if t.shape[1] == 1 else torch.cat([t[:, s:e], t[:, k + s:k + e]], dim=1)
    return AlphaSet(aset.rows[s:e], slopes)


def _row_cost(node) -> int:
    """Multiply-adds of one backward row through ``node`` (its size for non-matmul ops)."""
    if node.op == "linear":
        w = node.params["weight"]
        return node.size // w.shape[0] * w.numel()
    if node.op == "conv":
        return node.size * node.params["weight"][0].numel()
    return node.size


def _param_device(graph: Graph) -> torch.device:
    """Device of the graph's parameters (cpu for a graph without any)."""
    for node in graph.nodes:
        for t in node.params.values():
            if t is not None:
                return t.device
    return torch.device("cpu")


def full_precision_on(device: torch.device) -> None:
    """On CUDA, turn TF32 off for matmul and cuDNN convolutions (process-wide).

    TF32 keeps 10 mantissa bits: PyTorch enables it for cuDNN convolutions by default, and a
    GPU CROWN bound on a conv net then exceeded the network's sampled minimum (VNN-COMP 2022
    collins_rul_cnn, H200: by 0.011). Bounds need full float32 products.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
