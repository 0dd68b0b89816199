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


def to_certificate(model_sha256: str, spec_sha256: str, proofs: list[tuple[int, int, dict]],
                   fixed: list[tuple[str, int, int]] | None = None) -> dict:
    """The certificate JSON for proofs given as (region, polytope, tree).

    ``fixed``: split constraints (relu node, flat index, sign) every proof's root domain carries
    (written as each proof's root ``splits``; see ``verifier.certificate``). A tree's root may carry
    ``"root_alphas"`` (``ReluSplitLog.root_alphas``), written as the proof's ``alphas``.
    """
    builder = CertificateBuilder(model_sha256, spec_sha256)
    for region, polytope, tree in proofs:
        alphas = {value: {"rows": builder.add_array(np.asarray(rows, dtype=np.float64), "float64"),
                          "slopes": {relu: builder.add_array(np.clip(a, 0.0, 1.0), "float16") for relu, a in slopes.items()}}
                  for value, (rows, slopes) in (tree.get("root_alphas") or {}).items()}
        builder.add_proof(region, polytope, _store(tree, builder), fixed, alphas)
    return builder.to_json()


def certify(graph, spec, model_sha256: str, spec_sha256: str, proofs: list[tuple[int, int, dict]],
            deadline: float | None = None, only: set[str] | None = None, workers: int = 1):
    """Build the certificate and check it independently (by ``deadline``): (certificate, CheckReport).

    ``only``: re-derive just the leaves under these tree paths (see ``verifier.check.check``).
    ``workers`` > 1: split the leaves between this process and forked ones (CPU only: the
    checker's float64 work on a large input-split proof is as long as the search that made it).
    """
    from verifier.check import check

    cert = to_certificate(model_sha256, spec_sha256, proofs)
    parts = partition(proofs, workers) if workers > 1 and only is None else []
    if len(parts) < 2:
        return cert, check(graph, spec, cert, model_sha256, spec_sha256, deadline=deadline, only=only)
    return cert, _check_forked(lambda paths: check(graph, spec, cert, model_sha256, spec_sha256, deadline=deadline,
                                                   only=paths), parts, deadline)


PARALLEL_MIN_LEAVES = 512   # smaller proofs are checked faster than a process forks and reports


def partition(proofs: list[tuple[int, int, dict]], parts: int) -> list[set[str]]:
    """Split the proofs' leaves into ``parts`` sets of checker tree paths with about as many leaves
    each; [] when there are too few leaves to be worth it.

    Subtrees of at most 1/(8 parts) of the leaves are the units, dealt largest first to the
    lightest part.
    """
    counts, roots = {}, []
    for region, polytope, tree in proofs:
        roots.append((tree, f"proof (region {region}, polytope {polytope})"))
        order, stack = [], [tree]
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(node.get("children", ()))
        for node in reversed(order):
            counts[id(node)] = sum(counts[id(c)] for c in node["children"]) if "split" in node else 1
    total = sum(counts[id(tree)] for tree, _ in roots)
    if total < PARALLEL_MIN_LEAVES:
        return []
    units, stack = [], roots
    while stack:
        node, path = stack.pop()
        if "split" not in node or counts[id(node)] * 8 * parts <= total:
            units.append((counts[id(node)], path))
            continue
        steps = ("L", "H") if node["split"]["kind"] == "input" else ("I", "A")
        stack.extend((child, f"{path}.{step}") for child, step in zip(node["children"], steps))
    loads, sets = [0] * parts, [set() for _ in range(parts)]
    for count, path in sorted(units, reverse=True):
        k = loads.index(min(loads))
        loads[k] += count
        sets[k].add(path)
    return sets


def _check_forked(check_part, parts: list[set[str]], deadline: float | None):
    """Run ``check_part`` on every part, the first here and the others in forked processes; merge.

    A worker that dies or does not answer by the deadline (plus a grace second) fails the check.
    """
    import time

    from verifier.check.checker import CheckReport
    from verifier.forked import run_beside

    t0 = time.monotonic()
    own, theirs = run_beside(lambda: check_part(parts[0]), [lambda p=p: check_part(p) for p in parts[1:]], deadline)
    reports = [own] + theirs
    reasons = [r for rep in reports if rep is not None for r in rep.reasons]
    reasons += ["a checker worker process failed or did not answer in time"] * sum(rep is None for rep in reports)
    done = [rep for rep in reports if rep is not None]
    return CheckReport(not reasons, reasons, reports[0].leaves, time.monotonic() - t0,
                       [n for rep in done for n in rep.notes], [w for rep in done for w in rep.weak],
                       sum(rep.failures for rep in done) + len(reports) - len(done))
