"""Turn the proofs ``verify`` found into a certificate, and have the independent checker re-validate it.

Proof trees are built with raw numpy arrays (leaf boxes, alpha slopes); ``to_certificate`` moves
them into the certificate's array store. The checker (``verifier.check``) shares no code with the
bound engine or the search: a ``holds`` is reported only after it accepts.
"""
from __future__ import annotations

import numpy as np

from verifier.certificate import CertificateBuilder


def bound_leaf(row: int, bound: float, lower: np.ndarray, upper: np.ndarray,
               alphas: dict[str, np.ndarray] | None = None) -> dict:
    """A proof tree with one leaf: the whole region box refuted by one bound on row ``row``."""
    return {"leaf": {"row": int(row), "bound": float(bound), "box": [lower, upper], "alphas": alphas or {}, "betas": None}}


def _store(tree: dict, builder: CertificateBuilder) -> dict:
    """A copy of ``tree`` with every numpy array replaced by its key in ``builder``."""
    out: dict = {}
    stack = [(tree, out)]
    while stack:
        src, dst = stack.pop()
        if "split" in src:
            dst["split"] = dict(src["split"])
            dst["children"] = [{}, {}]
            stack.extend(zip(src["children"], dst["children"]))
            continue
        leaf = dict(src["leaf"])
        if leaf.get("box") is not None:
            leaf["box"] = [builder.add_array(np.asarray(v, dtype=np.float64), "float64") for v in leaf["box"]]
        leaf["alphas"] = {k: builder.add_array(np.clip(v, 0.0, 1.0), "float32") for k, v in (leaf.get("alphas") or {}).items()}
        if leaf.get("betas") is not None:
            leaf["betas"] = builder.add_array(np.maximum(leaf["betas"], 0.0), "float32")
        dst["leaf"] = leaf
    return out


def to_certificate(model_sha256: str, spec_sha256: str, proofs: list[tuple[int, int, dict]]) -> dict:
    """The certificate JSON for proofs given as (region, polytope, tree)."""
    builder = CertificateBuilder(model_sha256, spec_sha256)
    for region, polytope, tree in proofs:
        builder.add_proof(region, polytope, _store(tree, builder))
    return builder.to_json()


def certify(graph, spec, model_sha256: str, spec_sha256: str, proofs: list[tuple[int, int, dict]],
            deadline: float | None = None, only: set[str] | None = None):
    """Build the certificate and check it independently (by ``deadline``): (certificate, CheckReport).

    ``only``: re-derive just the leaves under these tree paths (see ``verifier.check.check``).
    """
    from verifier.check import check

    cert = to_certificate(model_sha256, spec_sha256, proofs)
    report = check(graph, spec, cert, model_sha256, spec_sha256, deadline=deadline, only=only)
    return cert, report
