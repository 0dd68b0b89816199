"""Configuration: one frozen dataclass per subsystem, composed into ``VerifyConfig``.

Unknown keys fail loudly (``from_dict``), so a misspelt option is an error, never ignored.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AttackConfig:
    """PGD falsification inside the input box."""

    restarts: int = 32
    steps: int = 100
    step_size: float = 0.1  # fraction of the box width per step, decayed
    seed: int = 0


@dataclass(frozen=True)
class AlphaConfig:
    """alpha-CROWN: optimise the lower-bound slopes of relaxed neurons with Adam."""

    iterations: int = 20
    lr: float = 0.1
    lr_decay: float = 0.98
    early_stop: bool = True  # stop once every objective is certified (> 0)


@dataclass(frozen=True)
class BoundsConfig:
    """Bound propagation."""

    device: str = "auto"  # "auto" = cuda when available, else cpu
    dtype: str = "float32"
    # torch CPU threads during verify (restored after): 0 = auto, i.e. 1 for graphs under
    # ``small_graph_params`` parameters (small ops gain nothing from threads and lose a lot
    # when cores are shared), else torch's default
    threads: int = 0
    small_graph_params: int = 1_000_000
    alpha: AlphaConfig = field(default_factory=AlphaConfig)


@dataclass(frozen=True)
class BabConfig:
    """Branch and bound (input splitting and ReLU splitting)."""

    batch: int = 2048            # domains bounded per batched call
    max_domains: int = 1_000_000  # pending domains kept at most; beyond it the search stops (unknown)
    input_split_max_dims: int = 16  # input splitting is chosen only for inputs this small
    method: str = "crown"        # bound method per domain: crown | alpha
    # input splitting's dimension score, |sensitivity| x width: "coeff" takes the sensitivity from
    # the CROWN bound's input coefficients, "gradient" from the network's gradient at the box
    # centre, "both" sums the two (each scaled to 1)
    input_branching: str = "both"
    samples: int = 1024          # input splitting: random points tried in the open boxes per batch
    local_share: float = 0.1     # input splitting: share of the search time given to local search
    local_steps: int = 30        # generations per round of local search (short rounds from fresh starts pay best)
    parallel_after: float = 2.0  # input splitting with workers > 1: seconds of one-process search first
    distribute_after: float = 5.0  # branch and bound with an offload (a worker pool): seconds before chunks ship

    def __post_init__(self):
        if self.input_branching not in ("coeff", "gradient", "both"):
            raise ValueError(f"bab.input_branching must be coeff, gradient or both, not {self.input_branching!r}")


@dataclass(frozen=True)
class ExactConfig:
    """When ``verify`` falls back to exact methods."""

    milp_max_unstable: int = 64   # auto route: MILP only when CROWN leaves at most this many unstable ReLUs


@dataclass(frozen=True)
class VerifyConfig:
    """Everything ``verifier.verify`` needs besides the model and the spec."""

    timeout: float = 60.0
    method: str = "auto"  # auto | attack | ibp | crown | alpha | bab | milp | sat
    check_certificates: bool = True
    workers: int = 2   # processes for long input-split searches and large certificate checks (CPU, one thread)
    # False admits witnesses whose X values lie exactly in the box but that the network's float32
    # input type rounds (the network sees the rounded value, as onnxruntime does); marked in the result.
    exact_inputs: bool = False
    # VNN-LIB 2.0 queries: decide float32/float64 declarations under real arithmetic (docs/vnnlib2.md);
    # without it only `real` declarations are accepted.
    float_as_real: bool = False
    seed: int = 0
    attack: AttackConfig = field(default_factory=AttackConfig)
    bounds: BoundsConfig = field(default_factory=BoundsConfig)
    bab: BabConfig = field(default_factory=BabConfig)
    exact: ExactConfig = field(default_factory=ExactConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VerifyConfig":
        """Build from nested plain dicts; any unknown key raises ``ValueError``."""
        return _build(cls, data, "config")


def _build(cls, data: dict[str, Any], where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {where} keys: {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)
