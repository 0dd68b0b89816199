"""VNN-LIB 2.0 queries end to end: compile, verify, confirm witnesses, print them, check certificates.

``verify_query(path, {"f": "f.onnx"})`` parses the query (``verifier.spec.vnnlib2``), compiles it
with its networks into one graph and ``Spec`` (``compile``), and runs the ordinary portfolio on
them. A counterexample is confirmed twice: the portfolio's onnxruntime check on the observed
vector (``runner``), then ``confirm`` re-evaluates one whole disjunct of the query exactly
(rational arithmetic on the values the networks received and returned, strict comparisons
strict). Certificates name the query's sha256 and the networks' combined hash, and record the
query version.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from verifier.query.compile import Compiled, EmptyQuery, QueryModel, compile_query
from verifier.spec.vnnlib2 import Query, QueryError, load_query, version_of

__all__ = ["Compiled", "QueryError", "QueryModel", "check_query", "compile_files", "confirm", "verify_query",
           "version_of", "witness_lines"]

QUERY_VERSION = "2.0"


def compile_files(query_path, networks: dict[str, str], float_as_real: bool = False) -> Compiled:
    """Parse and compile a 2.0 query file with its network files (``QueryError`` on any problem)."""
    return compile_query(load_query(query_path), {k: str(v) for k, v in networks.items()}, float_as_real)


def verify_query(query_path, networks: dict[str, str], config=None, float_as_real: bool = False, **kwargs):
    """``verifier.verify`` for a 2.0 query; returns (Result, Compiled | None).

    ``float_as_real``: accept float32/float64 declarations and decide them under real arithmetic
    (without it only ``real`` declarations are accepted, as the standard asks of a solver whose
    proofs are not float-sound).
    """
    import time

    from verifier.portfolio import verify
    from verifier.result import Result, Verdict

    t0 = time.monotonic()
    float_as_real = float_as_real or bool(getattr(config, "float_as_real", False))
    try:
        compiled = compile_files(query_path, networks, float_as_real)
    except EmptyQuery as exc:
        result = Result(Verdict.HOLDS)
        result.reason, result.certificate_checked = f"no input satisfies the query: {exc}", False
        result.timings["total"] = time.monotonic() - t0
        return result, None
    except (QueryError, OSError) as exc:
        result = Result(Verdict.ERROR)
        result.reason = str(exc).splitlines()[0]
        result.timings["total"] = time.monotonic() - t0
        return result, None
    if config is not None:
        from dataclasses import replace

        config = replace(config, timeout=max(config.timeout - (time.monotonic() - t0), 0.1))
    result = verify(compiled.model, compiled.spec, config, **kwargs)
    result.timings["compile"] = time.monotonic() - t0 - result.timings.get("total", 0.0)
    return result, compiled


def confirm(compiled: Compiled, z: np.ndarray, observed: np.ndarray) -> bool:
    """Whether (z, observed) satisfies every atom of some disjunct, in exact arithmetic."""
    values = _values(compiled, z, observed)
    return any(all(_holds(atom, values) for atom in term) for term in compiled.terms)


def _values(compiled: Compiled, z: np.ndarray, observed: np.ndarray) -> dict:
    """Every declared element's value as an exact rational, keyed like the query's atoms."""
    q = compiled.query
    u = compiled.inputs_of(np.asarray(z, dtype=np.float64))
    values: dict = {}
    offset = 0
    for net in compiled.networks:
        for d in net.observed:
            k = q.declarations.index(d)
            for i in range(d.size):
                values[(k, i)] = Fraction(float(observed[offset + i]))
            offset += d.size
        for d in net.inputs:
            k = q.declarations.index(d)
            for i in range(d.size):
                values[(k, i)] = Fraction(float(u[compiled.u_index((k, i))]))
    return values


def _holds(atom, values: dict) -> bool:
    total = atom.constant
    for mono, coeff in atom.terms:
        v = coeff
        for key in mono:
            v *= values[key]
        total += v
    return total < 0 if atom.op == "<" else total == 0 if atom.op == "==" else total <= 0


def witness_lines(compiled: Compiled, z: np.ndarray, observed: np.ndarray) -> list[str]:
    """The standard's witness: ``NAME[i,j]=value`` for every declared variable, in declaration order."""
    values = _values(compiled, z, observed)
    lines = []
    for k, d in enumerate(compiled.query.declarations):
        for i in range(d.size):
            lines.append(f"{d.element(i)}={np.format_float_positional(float(values[(k, i)]), unique=True, trim='0')}")
    return lines


def check_query(query_path, networks: dict[str, str], cert_path, strict: bool = False, float_as_real: bool = False):
    """Re-validate a certificate of a 2.0 query (the independent checker on the compiled graph)."""
    import time

    from verifier.certificate import load_certificate
    from verifier.check import CheckReport, check

    t0 = time.monotonic()
    try:
        compiled = compile_files(query_path, networks, float_as_real)
        cert = load_certificate(cert_path)
    except (OSError, ValueError) as e:
        return CheckReport(False, [f"{type(e).__name__}: {e}"], 0, time.monotonic() - t0)
    version = (cert.get("query") or {}).get("version") if isinstance(cert, dict) else None
    if version != QUERY_VERSION:
        return CheckReport(False, [f"certificate names query version {version!r}, this is a {QUERY_VERSION} query"],
                           0, time.monotonic() - t0)
    return check(compiled.model.graph, compiled.spec, cert, compiled.model.sha256, compiled.spec.sha256, strict=strict)
