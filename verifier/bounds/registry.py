"""The explicit registry: canonical op name -> bound rule (and a one-line account of each rule)."""
from __future__ import annotations

from verifier.bounds.activation import LeakyReluOp, SignOp
from verifier.bounds.base import BoundOp
from verifier.bounds.linear import AddOp, AffineOp, ConcatOp, ConvOp, GatherOp, LinearOp, ReshapeOp
from verifier.bounds.nonlinear import CurveOp, MatMulOp, MulOp
from verifier.bounds.pool import MaxPoolOp
from verifier.bounds.smooth import SmoothOp
from verifier.bounds.step import StepOp

OPS: dict[str, BoundOp] = {
    "linear": LinearOp(),
    "conv": ConvOp(),
    "affine": AffineOp(),
    "add": AddOp(),
    "reshape": ReshapeOp(),
    "gather": GatherOp(),
    "concat": ConcatOp(),
    "relu": LeakyReluOp(),
    "leaky_relu": LeakyReluOp(),
    "sigmoid": SmoothOp(),
    "tanh": SmoothOp(),
    "erf": SmoothOp(),
    "sign": SignOp(),
    "floor": StepOp(),
    "ceil": StepOp(),
    "round": StepOp(),
    "maxpool": MaxPoolOp(),
    "mul": MulOp(),
    "matmul": MatMulOp(),
    "pow": CurveOp(),
    "sin": CurveOp(),
    "cos": CurveOp(),
    "exp": CurveOp(),
    "reciprocal": CurveOp(),
    "sqrt": CurveOp(),
}

_LINEAR = ("interval: centre / radius through the weights", "exact: A times the weights (transposed)")
_REINDEX = ("exact: both ends moved alike", "exact: A scattered back to the source positions")
_S_SHAPED = ("f at both ends in float64, rounded outwards",
             "tangent / chord lines (S-shaped: convex below 0, concave above); lower line by point symmetry")
_CURVE = ("exact range (interior extremes included), rounded outwards",
          "two parallel lines: chord slope, intercepts at the extremes of f(x) - s x")
_STEP = ("exact: f at both ends (monotone)",
         "hull lines at the midpoint: envelope {envelope}, chords through the step corners, "
         "constants a = f(l), b = f(u); exact where the interval holds no jump")

# op -> (IBP rule, CROWN rule), as ``op_rules`` reports them
RULE_TEXT: dict[str, tuple[str, str]] = {
    "linear": _LINEAR, "conv": _LINEAR,
    "affine": ("interval: both ends scaled and sorted", "exact: A times the scale"),
    "add": ("interval: sum of the ends", "exact: A to both inputs"),
    "reshape": _REINDEX, "gather": _REINDEX, "concat": _REINDEX,
    "relu": ("exact: max(0, ends)", "triangle: chord above, alpha-optimisable line through 0 below"),
    "leaky_relu": ("min / max over the ends and 0", "chord on one side, alpha-optimisable line through 0 on the other"),
    "sigmoid": _S_SHAPED, "tanh": _S_SHAPED, "erf": _S_SHAPED,
    "sign": ("exact: sign at both ends", "step lines through the jump at 0; exact where the sign is fixed"),
    "floor": (_STEP[0], _STEP[1].format(envelope="x - 1 <= floor(x) <= x")),
    "ceil": (_STEP[0], _STEP[1].format(envelope="x <= ceil(x) <= x + 1")),
    "round": (_STEP[0], _STEP[1].format(envelope="x - 1/2 <= round(x) <= x + 1/2 (ties to even)")),
    "maxpool": ("exact: max of the ends per window",
                "lower: the input with the largest lower bound; upper: it if it dominates, else the max upper bound"),
    "mul": ("min / max of the four corner products", "mean of the two McCormick planes on each side"),
    "matmul": ("corner products of every term, summed", "mean McCormick planes of every term, summed"),
    "pow": _CURVE, "sin": _CURVE, "cos": _CURVE, "exp": _CURVE,
    "reciprocal": (_CURVE[0] + "; refuses 0 in the interval", _CURVE[1]),
    "sqrt": (_CURVE[0] + "; refuses negative inputs", _CURVE[1]),
}


def unsupported_ops(graph) -> list[str]:
    """Every node whose op has no bound rule, as 'name (op)'."""
    return [f"{n.name} ({n.op})" for n in graph.nodes if n.op not in OPS]


def op_rules(graph) -> dict[str, dict[str, str]]:
    """For each canonical op of ``graph`` (sorted): the IBP, CROWN and checker rules it gets.

    ``{"floor": {"ibp": ..., "crown": ..., "checker": ...}, ...}``; an op without a rule reads
    "none (unsupported)".
    """
    from verifier.check.crown import CHECK_RULES   # the checker's own account of its rules

    none = "none (unsupported)"
    out = {}
    for op in sorted({n.op for n in graph.nodes}):
        ibp, crown = RULE_TEXT.get(op, (none, none)) if op in OPS else (none, none)
        out[op] = {"ibp": ibp, "crown": crown, "checker": CHECK_RULES.get(op, none)}
    return out
