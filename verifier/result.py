"""The answer of ``verify``: verdict, evidence (certificate or counterexample), and how it was reached."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Verdict(str, enum.Enum):
    """What nnverify concluded about the property."""

    HOLDS = "holds"          # VNN-COMP unsat: no counterexample exists
    VIOLATED = "violated"    # VNN-COMP sat: a validated counterexample exists
    UNKNOWN = "unknown"
    TIMEOUT = "timeout"
    ERROR = "error"

    @property
    def vnncomp(self) -> str:
        """The word VNN-COMP uses for this verdict."""
        return {"holds": "unsat", "violated": "sat"}.get(self.value, self.value)


@dataclass
class Result:
    """Outcome of one verification run (mutable while ``verify`` assembles it)."""

    verdict: Verdict
    reason: str = ""
    method: str = ""
    counterexample: Any = None          # verifier.counterexample.Counterexample
    certificate: dict | None = None
    certificate_checked: bool | None = None
    bounds: list[dict] = field(default_factory=list)   # per (region, polytope): best lower bounds
    timings: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    route: str = ""
    route_reason: str = ""
    query: dict | None = None   # a VNN-LIB 2.0 query: its version, networks and (on violated) named witness

    def counterexample_json(self) -> dict | None:
        """The counterexample record (``verifier.counterexample.to_json``), plus the 2.0 query's part."""
        if self.counterexample is None:
            return None
        from verifier.counterexample import to_json

        record = to_json(self.counterexample)
        if self.query is not None:
            record["query"] = self.query
        return record

    def vnncomp_text(self) -> str:
        """The VNN-COMP result block (``sat`` + witness, or a single word)."""
        if self.verdict is Verdict.VIOLATED and self.counterexample is not None:
            from verifier.counterexample import to_vnncomp

            return to_vnncomp(self.counterexample)
        return self.verdict.vnncomp + "\n"

    def to_json(self) -> dict:
        """A JSON-serialisable summary (the counterexample and certificate included)."""
        cex = self.counterexample_json()
        return {
            "verdict": self.verdict.value,
            "result": self.verdict.vnncomp,
            "reason": self.reason,
            "method": self.method,
            "route": self.route,
            "route_reason": self.route_reason,
            "time": round(self.timings.get("total", 0.0), 4),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "bounds": self.bounds,
            "counterexample": cex,
            "certificate_checked": self.certificate_checked,
            "log": self.log,
        }
