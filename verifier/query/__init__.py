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

from verifier.query.compile import Compiled, EmptyQuery, QueryModel, compile_query
from verifier.query.witness import confirm, witness_lines
from verifier.spec.vnnlib2 import Query, QueryError, load_query, version_of

__all__ = ["Compiled", "QueryError", "QueryModel", "check_query", "compile_files", "confirm", "verify_query",
           "version_of", "witness_lines"]

QUERY_VERSION = "2.0"


def compile_files(query_path, networks: dict[str, str], float_as_real: bool = False) -> Compiled:
    """Parse (unless given a parsed ``Query``) and compile a 2.0 query with its network files
    (``QueryError`` on any problem)."""
    query = query_path if isinstance(query_path, Query) else load_query(query_path)
    return compile_query(query, {k: str(v) for k, v in networks.items()}, float_as_real)


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
