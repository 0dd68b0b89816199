"""The explicit registry: canonical op name -> bound rule."""
from __future__ import annotations

from verifier.bounds.activation import LeakyReluOp, SignOp
from verifier.bounds.base import BoundOp
from verifier.bounds.linear import AddOp, AffineOp, ConcatOp, ConvOp, GatherOp, LinearOp, ReshapeOp
from verifier.bounds.nonlinear import CurveOp, MatMulOp, MulOp
from verifier.bounds.pool import MaxPoolOp
from verifier.bounds.smooth import SmoothOp

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
    "sign": SignOp(),
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


def unsupported_ops(graph) -> list[str]:
    """Every node whose op has no bound rule, as 'name (op)'."""
    return [f"{n.name} ({n.op})" for n in graph.nodes if n.op not in OPS]
