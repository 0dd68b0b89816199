"""Verifying NAP specifications: "every input in the region that matches NAP_c is classified c",
and non-ambiguity of two classes' NAPs ("no input in the region matches both").

Each property is a ``Spec`` over the region box whose domain is restricted by the pattern's
neurons as FIXED ReLU split constraints (on: z >= 0, off: z <= 0; closed, so the proof also
covers the strict "on: z > 0"). Steps, each of which can settle the verdict:

1. attack: Adam on the box against the pattern's constraints (and the class margin); candidates
   are confirmed on onnxruntime with the ReLU outputs exposed (``witness.py``) -> violated;
2. branch and bound: ``relu_split`` with the pattern as the root domain's splits, one search per
   unsafe polytope (its internal attack's points go through the same confirmation);
3. certificate: the proofs, with the fixed splits as each proof's root ``splits``, are re-derived
   by the independent float64 checker, told the fixed splits by the property, not by the proof.

A property is identified by the sha256 of its canonical JSON (``property``), which the
certificate names as its ``spec_sha256``; ``check_certificate`` re-checks from the two documents.
The non-ambiguity of two NAPs that fix one neuron in opposite states needs no search: no input
has z > 0 and z <= 0 at once (method ``conflict``, the neuron is the evidence).
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from verifier.nap.pattern import Nap, NapError, as_model, canonical_sha256, inputs_of, load_naps
from verifier.nap.witness import HiddenRunner, attack, confirm, misclassified
from verifier.spec.spec import Polytope, Region, Spec


def region_box(graph, doc: dict, point=None, eps: float | None = None,
               clip: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(lower, upper, description) of the region: the valid input box, or an eps-ball around ``point`` in it.

    The valid box is ``clip`` (lo, hi), by default the NAP file's ``input_range``.
    """
    valid = clip if clip is not None else doc.get("input_range")
    if valid is None:
        raise NapError("no valid input range: the NAP file has none, give one (--clip LO HI)")
    lo, hi = (float(v) for v in valid)
    if not lo <= hi:
        raise NapError(f"empty input range [{lo}, {hi}]")
    n = graph.n_inputs
    if (point is None) != (eps is None):
        raise NapError("an eps-ball needs both a point and eps")
    if point is None:
        return np.full(n, lo), np.full(n, hi), {"kind": "box", "clip": [lo, hi]}
    if not float(eps) >= 0:
        raise NapError(f"eps must be >= 0, got {eps}")
    x = inputs_of(graph, point, "point")
    if x.shape[0] != 1:
        raise NapError(f"point: expected one sample, got {x.shape[0]}")
    lower, upper = np.clip(x[0] - eps, lo, hi), np.clip(x[0] + eps, lo, hi)
    if np.any(lower > upper):
        raise NapError(f"the point lies outside the input range [{lo}, {hi}]")
    return lower, upper, {"kind": "ball", "clip": [lo, hi], "eps": float(eps)}


def nap_property(model_sha256: str, label: int, nap: Nap, lower, upper, n_outputs: int) -> dict:
    """The canonical document of "inputs in [lower, upper] matching ``nap`` are classified ``label``"."""
    return {"kind": "nap-class", "model_sha256": model_sha256, "label": int(label), "n_outputs": int(n_outputs),
            "lower": [float(v) for v in lower], "upper": [float(v) for v in upper],
            "fixed": [list(c) for c in nap.constraints()]}


def spec_of(prop: dict) -> Spec:
    """The ``Spec`` of a property document (its fixed splits are not part of it: see ``fixed_of``)."""
    n_out, lower, upper = prop["n_outputs"], np.asarray(prop["lower"]), np.asarray(prop["upper"])
    if prop["kind"] == "nap-class":
        c = prop["label"]
        polys = []
        for j in range(n_out):
            if j != c:
                row = np.zeros((1, n_out))
                row[0, c], row[0, j] = 1.0, -1.0
                polys.append(Polytope(row, np.zeros(1)))   # unsafe: y_c - y_j <= 0
    elif prop["kind"] == "nap-non-ambiguity":
        polys = [Polytope(np.zeros((1, n_out)), np.zeros(1))]   # every output: unreachable iff the domain is empty
    else:
        raise NapError(f"unknown property kind {prop.get('kind')!r}")
    return Spec(lower.size, n_out, (Region(lower, upper, tuple(polys)),))


def fixed_of(prop: dict) -> list[tuple[str, int, int]]:
    """The property's fixed split constraints (relu node, flat index, sign)."""
    return [(str(n), int(k), int(s)) for n, k, s in prop["fixed"]]


def verify_nap(model, naps, label: int, *, point=None, eps: float | None = None, clip=None,
               timeout: float = 60.0, seed: int = 0) -> dict:
    """Decide "every input of the region matching NAP_label is classified label" (a JSON-able record).

    ``naps``: the NAPs file (path or dict) mined on ``model`` (path or loaded model). The region
    is the valid input box, or the eps-ball around ``point`` clipped to it (``region_box``).
    Verdicts: holds (with a checked certificate), violated (with an onnxruntime-confirmed
    witness), unknown or timeout (with the reason).
    """
    t0 = time.monotonic()
    m = as_model(model)
    doc, table = load_naps(naps, m)
    if label not in table:
        raise NapError(f"the NAP file has no pattern for class {label} (classes: {sorted(table)})")
    nap = table[label]
    lower, upper, region = region_box(m.graph, doc, point, eps, clip)
    prop = nap_property(m.sha256, label, nap, lower, upper, m.graph.n_outputs)
    out = _decide(m, prop, nap.signs(m.graph), misclassified(label), label, t0 + timeout, seed)
    return {"property": prop, "property_sha256": canonical_sha256(prop), "label": int(label), "nap_size": nap.size,
            "region": region, **out, "time": round(time.monotonic() - t0, 4)}


def non_ambiguity(model, naps, a: int, b: int, *, point=None, eps: float | None = None, clip=None,
                  timeout: float = 60.0, seed: int = 0) -> dict:
    """Decide "no input of the region matches both NAP_a and NAP_b" (a JSON-able record)."""
    t0 = time.monotonic()
    m = as_model(model)
    doc, table = load_naps(naps, m)
    for c in (a, b):
        if c not in table:
            raise NapError(f"the NAP file has no pattern for class {c} (classes: {sorted(table)})")
    if a == b:
        raise NapError("non-ambiguity needs two different classes")
    lower, upper, region = region_box(m.graph, doc, point, eps, clip)
    head = {"labels": [int(a), int(b)], "region": region}
    sign_a = {(n, k): s for n, k, s in table[a].constraints()}
    conflicts = [[n, k, s] for n, k, s in table[b].constraints() if sign_a.get((n, k)) == -s]
    if conflicts:
        node, index, sign = conflicts[0]
        state = lambda s: "on" if s > 0 else "off"  # noqa: E731
        return {**head, "verdict": "holds", "method": "conflict", "conflicts": conflicts, "certificate": None,
                "reason": f"neuron {index} of {node!r} is {state(-sign)} in NAP_{a} and {state(sign)} in NAP_{b}: "
                          "no input matches both", "time": round(time.monotonic() - t0, 4)}
    both = Nap(-1, _union(table[a].on, table[b].on), _union(table[a].off, table[b].off))
    prop = {"kind": "nap-non-ambiguity", "model_sha256": m.sha256, "labels": [int(a), int(b)],
            "n_outputs": int(m.graph.n_outputs), "lower": [float(v) for v in lower],
            "upper": [float(v) for v in upper], "fixed": [list(c) for c in both.constraints()]}
    out = _decide(m, prop, both.signs(m.graph), lambda y: -1, None, t0 + timeout, seed)
    return {"property": prop, "property_sha256": canonical_sha256(prop), **head, **out,
            "time": round(time.monotonic() - t0, 4)}


def _union(p: dict, q: dict) -> dict[str, tuple[int, ...]]:
    """Neuron sets per relu node, merged."""
    return {n: tuple(sorted(set(p.get(n, ())) | set(q.get(n, ())))) for n in set(p) | set(q)}


def _decide(m, prop: dict, signs: dict, unsafe, label: int | None, deadline: float, seed: int) -> dict:
    """A short attack, branch and bound per unsafe polytope, the certificate check; a long attack if
    the search ends unknown."""
    from verifier.threads import small_net_threads

    graph, spec, fixed = m.graph, spec_of(prop), fixed_of(prop)
    region = spec.regions[0]
    runner = HiddenRunner(m.path, sorted(signs))
    witness = lambda x: confirm(runner, graph, x, region.lower, region.upper, fixed, unsafe)  # noqa: E731
    hunt = lambda restarts, steps, seed: _hunt(graph, region, signs, label, witness, deadline,  # noqa: E731
                                               restarts, steps, seed)
    stats: dict = {}
    with small_net_threads(graph):
        found = hunt(16, 60, seed)
        stats["attack"] = found.pop("time")
        if "witness" in found:
            return {**found, "stats": stats}
        out = _prove(m, prop, spec, signs, fixed, witness, deadline, stats)
        if out["verdict"] == "unknown" and "certificate_checked" not in out:
            found = hunt(64, 300, seed + 1)
            stats["attack_after"] = found.pop("time")
            if "witness" in found:
                return {**found, "stats": stats}
    return out


def _hunt(graph, region, signs, label, witness, deadline, restarts: int, steps: int, seed: int) -> dict:
    """{"verdict": "violated", "method": "attack", "witness": ...} if the attack's candidates give a
    confirmed witness, else {}; with the time spent ("time")."""
    t = time.monotonic()
    for x in attack(graph, region.lower, region.upper, signs, label, deadline, restarts=restarts, steps=steps,
                    seed=seed):
        found = witness(x)
        if found is not None:
            return {"verdict": "violated", "method": "attack", "witness": found, "time": _since(t)}
    return {"time": _since(t)}


def _prove(m, prop: dict, spec: Spec, signs: dict, fixed: list, witness, deadline: float, stats: dict) -> dict:
    """Branch and bound with the pattern as fixed root splits, one search per unsafe polytope, then
    the independent check of the certificate."""
    from verifier.bounds import BoundEngine, DeadlineReached
    from verifier.certify import to_certificate
    from verifier.check import check
    from verifier.config import BabConfig
    from verifier.search.relu_split import relu_split

    graph, region = m.graph, spec.regions[0]
    engine = BoundEngine(graph)
    engine.deadline = deadline
    proofs, root = [], []
    t = time.monotonic()
    try:
        for j, poly in enumerate(region.unsafe):
            out = relu_split(engine, graph, region.lower, region.upper, poly.A, poly.b, witness, deadline,
                             BabConfig(), root_splits=signs)
            stats.setdefault("bab", []).append({"polytope": j, "status": out.status, **out.stats})
            if out.status == "violated":
                return {"verdict": "violated", "method": "bab-relu", "witness": out.counterexample, "stats": stats}
            if out.status != "holds":
                return {"verdict": "timeout" if out.status == "timeout" else "unknown", "method": "bab-relu",
                        "reason": f"branch and bound: {out.status} on polytope {j} {out.stats.get('note', '')}".strip(),
                        "stats": stats}
            proofs.append((0, j, out.log.tree()))
            root = out.log.root
    except DeadlineReached:
        return {"verdict": "timeout", "method": "bab-relu", "reason": "budget spent in bound propagation",
                "stats": stats}
    stats["bab_time"] = _since(t)
    cert = to_certificate(m.sha256, canonical_sha256(prop), proofs, root)
    report = check(graph, spec, cert, m.sha256, canonical_sha256(prop), fixed=fixed)
    stats["check"] = {"ok": report.ok, "leaves": report.leaves, "time": round(report.time, 4)}
    if not report.ok:
        return {"verdict": "unknown", "method": "bab-relu", "certificate_checked": False, "stats": stats,
                "reason": "certificate rejected by the independent checker: " + "; ".join(report.reasons[:3])}
    return {"verdict": "holds", "method": "bab-relu", "certificate": cert, "certificate_checked": True,
            "stats": stats}


def _since(t: float) -> float:
    """Seconds since ``t``, rounded."""
    return round(time.monotonic() - t, 4)


def check_certificate(model, prop: dict, cert: dict) -> dict:
    """Re-check a NAP certificate against its property document: {"ok", "reasons", "leaves", "time"}."""
    from verifier.check import check

    m = as_model(model)
    if not isinstance(prop, dict) or prop.get("model_sha256") != m.sha256:
        return {"ok": False, "reasons": ["the property names another model"], "leaves": 0, "time": 0.0}
    try:
        spec, fixed, sha = spec_of(prop), fixed_of(prop), canonical_sha256(prop)
    except (KeyError, TypeError, ValueError) as exc:
        return {"ok": False, "reasons": [f"malformed property document: {exc!r}"], "leaves": 0, "time": 0.0}
    report = check(m.graph, spec, cert, m.sha256, sha, fixed=fixed)
    return {"ok": report.ok, "reasons": report.reasons, "leaves": report.leaves, "time": round(report.time, 4)}


def verify_naps(model, naps, labels: Sequence[int] | None = None, pairs: Sequence[tuple[int, int]] | None = None, *,
                point=None, eps: float | None = None, clip=None, timeout: float = 60.0, seed: int = 0) -> dict:
    """The classes' properties and the pairs' non-ambiguity within one budget (what ``nap verify`` runs).

    Neither ``labels`` nor ``pairs``: every class and every pair of classes. The budget left is
    shared evenly by the properties still to run.
    """
    m = as_model(model)
    doc, table = load_naps(naps, m)
    if labels is None and pairs is None:
        labels = sorted(table)
        pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    jobs = [("class", int(c)) for c in labels or ()] + [("pair", (int(a), int(b))) for a, b in pairs or ()]
    for kind, what in jobs:
        for c in ([what] if kind == "class" else what):
            if c not in table:
                raise NapError(f"the NAP file has no pattern for class {c} (classes: {sorted(table)})")
        if kind == "pair" and what[0] == what[1]:
            raise NapError("non-ambiguity needs two different classes")
    region_box(m.graph, doc, point, eps, clip)   # bad regions fail before any work
    deadline = time.monotonic() + timeout
    classes, ambiguity = [], []
    for k, (kind, what) in enumerate(jobs):
        share = max((deadline - time.monotonic()) / (len(jobs) - k), 0.05)
        kw = {"point": point, "eps": eps, "clip": clip, "timeout": share, "seed": seed}
        if kind == "class":
            classes.append(verify_nap(m, doc, what, **kw))
        else:
            ambiguity.append(non_ambiguity(m, doc, *what, **kw))
    return {"model_sha256": m.sha256, "classes": classes, "non_ambiguity": ambiguity}
