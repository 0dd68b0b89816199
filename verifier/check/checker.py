"""The independent certificate checker: structure, coverage, and float64 re-derivation of every leaf.

It trusts nothing in the certificate except as a hint: boxes are derived from the split path,
alphas and betas are only used if they lie in their sound ranges, and every claimed bound is
recomputed by the checker's own CROWN (``verifier.check.crown``), which shares no code with the
bound engine or the search.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from verifier import clock
from verifier.certificate import FORMAT, VERSION, CertificateError, load_certificate, sha256_file
from verifier.check.crown import SUPPORTED, Domains, Pass, intermediate_bounds, needs_bounds, objective_lower
from verifier.check.tree import ArrayStore, Leaf, Split, parent_path, root_alphas, root_splits, walk
from verifier.model.graph import Graph
from verifier.spec.spec import Spec

SUBDIVIDE_DEPTH = 6  # levels of the checker's own bisection of a leaf it cannot re-derive whole
CLAIM_TOL = 1e-9     # relative slack between a claimed and a re-derived bound
MAX_REASONS = 20     # failures listed individually before the rest are counted
BUDGET = 1 << 24     # float64 elements per coefficient tensor (about 128 MiB)
CHUNK = 32           # leaves re-derived together: small chunks keep CROWN rows to the few unstable neurons (ACAS Xu 1_4 prop 1, 3,993 leaves: 3.8 s at 64, 2.7-3.1 s at 32, 3.2 s at 16)


@dataclass(frozen=True)
class CheckReport:
    """The checker's answer: ``ok`` only if every proof is complete and every leaf re-derives > 0."""

    ok: bool
    reasons: list[str]
    leaves: int
    time: float
    notes: list[str] = field(default_factory=list)
    # leaves whose re-derived bound is not > 0: (region, polytope, leaf); a prover may split them further
    weak: list[tuple[int, int, Leaf]] = field(default_factory=list)
    failures: int = 0   # every failure found (``reasons`` lists at most MAX_REASONS of them)


def check(graph: Graph, spec: Spec, cert: dict, model_sha256: str | None = None, spec_sha256: str | None = None,
          strict: bool = False, device: str | torch.device = "cpu", deadline: float | None = None,
          only: set[str] | None = None, fixed: list[tuple[str, int, int]] | None = None) -> CheckReport:
    """Check certificate ``cert`` (a loaded JSON dict) for ``graph`` and ``spec``.

    ``fixed``: the split constraints (relu node, flat index, sign) the property itself restricts
    every region to (e.g. an activation pattern). Each proof must then carry exactly these as its
    root ``splits``; without ``fixed``, a proof that carries root splits is rejected (it would
    prove a weaker property than the spec's).

    ``only`` (in-process re-checks): re-derive just the leaves under these tree paths (e.g. the
    subtrees that replaced leaves an earlier check found weak); the structure is always checked
    in full. Every leaf outside them must have been accepted by an earlier check of the same tree.

    With ``strict``, a leaf whose claimed bound exceeds the re-derived one (beyond a 1e-9 relative
    tolerance) is rejected; by default it is accepted with a note as long as the re-derived bound
    is > 0 (the claim is then merely optimistic, the proof still holds).
    """
    t0 = time.monotonic()
    reasons, notes, weak, n_leaves = [], [], [], 0
    try:
        _check_header(cert, model_sha256, spec_sha256)
        _check_support(graph, spec)
        arrays = ArrayStore(cert.get("arrays", {}))
        g = graph.to(device=torch.device(device), dtype=torch.float64)
        values = set(needs_bounds(graph))
        roots: dict[tuple, dict] = {}   # bounds on each region box (per set of root alphas), shared by proofs
        for ri, pi, tree, entry, alphas in _proofs(cert, spec):
            region, poly = spec.regions[ri], spec.regions[ri].unsafe[pi]
            where = f"proof (region {ri}, polytope {pi})"
            splits = _root_splits(entry, fixed, graph, where)
            inner: dict[str, tuple] = {}
            leaves = walk(tree, region.lower.copy(), region.upper.copy(), poly.A.shape[0], graph, arrays, where,
                          inner, splits)
            n_leaves += len(leaves)
            if only is not None:
                leaves = [lf for lf in leaves if _under(lf.where, only)]
            key = (ri, json.dumps(alphas, sort_keys=True))
            if key not in roots:
                starts = None if alphas is None else _start_alphas(root_alphas(alphas, graph, arrays, where, values), g)
                roots[key] = root_bounds(g, region.lower, region.upper, splits, starts)
            failed = _check_leaves(g, poly.A, poly.b, leaves, strict, reasons, notes, deadline,
                                   Ancestry(where, inner, roots[key]))
            weak.extend((ri, pi, leaf) for leaf in failed)
    except CertificateError as e:
        reasons.append(str(e))
    failures = len(reasons)
    if len(reasons) > MAX_REASONS:
        reasons = reasons[:MAX_REASONS] + [f"... and {len(reasons) - MAX_REASONS} more failures"]
    return CheckReport(not reasons, reasons, n_leaves, time.monotonic() - t0, notes, weak, failures)


def check_files(model_path: str | Path, spec_path: str | Path, cert_path: str | Path, strict: bool = False,
                device: str = "cpu") -> CheckReport:
    """Check a certificate file against the ONNX model and VNN-LIB spec files it names by hash."""
    from verifier.model.onnx_loader import load_onnx
    from verifier.spec.vnnlib import load_vnnlib

    t0 = time.monotonic()
    try:
        model_hash, spec_hash = sha256_file(model_path), sha256_file(spec_path)
        cert = load_certificate(cert_path)
        _check_header(cert, model_hash, spec_hash)
        model, spec = load_onnx(model_path), load_vnnlib(spec_path)
    except (OSError, ValueError) as e:      # CertificateError and the loaders' errors are ValueErrors
        return CheckReport(False, [f"{type(e).__name__}: {e}"], 0, time.monotonic() - t0)
    return check(model.graph, spec, cert, model_hash, spec_hash, strict=strict, device=device)


def _under(path: str, prefixes: set[str]) -> bool:
    """Whether tree ``path`` is one of ``prefixes`` or lies below one."""
    while True:
        if path in prefixes:
            return True
        if len(path) < 2 or path[-2] != ".":
            return False
        path = parent_path(path)


def _check_header(cert: dict, model_sha256: str | None, spec_sha256: str | None) -> None:
    """Format, version, verdict, and the model/spec hashes when given."""
    if not isinstance(cert, dict) or cert.get("format") != FORMAT:
        raise CertificateError(f"not an {FORMAT} document")
    if cert.get("version") != VERSION:
        raise CertificateError(f"certificate version {cert.get('version')!r} is not supported (expected {VERSION})")
    if cert.get("verdict") != "holds":
        raise CertificateError(f"certificate verdict is {cert.get('verdict')!r}, only 'holds' can be certified")
    for what, given in (("model", model_sha256), ("spec", spec_sha256)):
        if given is not None and cert.get(f"{what}_sha256") != given:
            raise CertificateError(f"{what} sha256 mismatch: certificate names {cert.get(f'{what}_sha256')!r}, "
                                   f"the {what} file has {given!r}")


def _check_support(graph: Graph, spec: Spec) -> None:
    """Every op is one the checker bounds; graph and spec agree on input/output counts."""
    bad = sorted({n.op for n in graph.nodes if n.op not in SUPPORTED})
    if bad:
        raise CertificateError(f"checker does not support op {', '.join(bad)}")
    for n in graph.nodes:
        if n.op == "leaky_relu" and not float(n.attrs["alpha"]) >= 0:
            raise CertificateError(f"checker does not support leaky_relu with negative slope (node {n.name})")
        if n.op in ("conv", "maxpool") and len(n.shape) not in (2, 3):
            raise CertificateError(f"checker does not support {n.op} on per-sample shape {list(n.shape)} (node {n.name})")
    if graph.n_inputs != spec.n_inputs or graph.n_outputs != spec.n_outputs:
        raise CertificateError(f"graph has {graph.n_inputs} inputs / {graph.n_outputs} outputs, the spec "
                               f"{spec.n_inputs} / {spec.n_outputs}")


def _root_splits(entry, fixed, graph: Graph, where: str) -> tuple[Split, ...]:
    """A proof's root splits, which must be exactly the property's ``fixed`` ones (none without them)."""
    splits = () if entry is None else root_splits(entry, graph, where)
    want = {Split(str(n), int(k), int(s)) for n, k, s in (fixed or ())}
    if set(splits) != want:
        missing = sorted((s.node, s.index, s.sign) for s in want - set(splits))
        extra = sorted((s.node, s.index, s.sign) for s in set(splits) - want)
        raise CertificateError(f"{where}: root splits differ from the property's fixed splits "
                               f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                               f"extra {extra[:5]}{'...' if len(extra) > 5 else ''})")
    return splits


def _proofs(cert: dict, spec: Spec):
    """(region, polytope, tree, root splits or None, root alphas or None) of every proof, after checking there is exactly one per goal."""
    proofs = cert.get("proofs")
    if not isinstance(proofs, list):
        raise CertificateError("proofs must be a list")
    wanted = {(r, p) for r, reg in enumerate(spec.regions) for p in range(len(reg.unsafe))}
    seen = set()
    for proof in proofs:
        if not isinstance(proof, dict) or set(proof) - {"splits", "alphas"} != {"region", "polytope", "tree"}:
            raise CertificateError("each proof needs exactly region, polytope and tree (and optionally splits, alphas)")
        goal = (proof["region"], proof["polytope"])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in goal) or goal not in wanted:
            raise CertificateError(f"proof names (region, polytope) {goal}, which the spec does not have")
        if goal in seen:
            raise CertificateError(f"two proofs for (region, polytope) {goal}")
        seen.add(goal)
    missing = sorted(wanted - seen)
    if missing:
        raise CertificateError(f"no proof for (region, polytope) {', '.join(map(str, missing))}")
    return [(p["region"], p["polytope"], p["tree"], p.get("splits"), p.get("alphas")) for p in proofs]


@dataclass
class Ancestry:
    """The split nodes of one proof tree (path -> domain) and the bounds on its root domain."""

    root_path: str
    inner: dict[str, tuple]
    root: dict


def _check_leaves(graph: Graph, A: np.ndarray, b: np.ndarray, leaves: list[Leaf], strict: bool,
                  reasons: list[str], notes: list[str], deadline: float | None = None,
                  tree: Ancestry | None = None) -> list[Leaf]:
    """Re-derive the leaves' bounds and compare them with the claims; the leaves not > 0.

    Every leaf is first bounded with the root domain's bounds intersected in (a leaf with splits
    first without backward passes for its intermediate bounds, as the search's "root" mode bounds
    it, then, if that is not > 0, with them). A leaf that is not
    > 0 that way is bounded again the way a branch and bound search bounds it: each domain on its
    path, from the root down, intersected with its parent's bounds (all derived here), with every
    neuron tightened by CROWN (a batched search tightens the neurons unstable anywhere in its
    batch, which sharpens stable neurons' intervals too). An input-box leaf still not > 0 is
    bisected by the checker itself, up to SUBDIVIDE_DEPTH levels (``_subdivide``).
    """
    root = tree.root if tree is not None else None
    whole = [i for i, lf in enumerate(leaves) if root is not None and lf.where == tree.root_path and not lf.splits]
    rest = sorted(set(range(len(leaves))) - set(whole))
    values = [-math.inf] * len(leaves)
    if whole:   # the leaf is the region box itself: the root's bounds are its bounds
        for i, v in zip(whole, _whole_box_values(graph, A, b, [leaves[i] for i in whole], root)):
            values[i] = v
    split = [i for i in rest if leaves[i].splits and root is not None]
    if split:   # split leaves inside the root box: first without backward passes (the search's "root" mode)
        for i, v in zip(split, _leaf_values(graph, A, b, [leaves[i] for i in split], lambda part: root, deadline,
                                            len(leaves), crown=False)):
            values[i] = v
        rest = [i for i in rest if not (leaves[i].splits and values[i] > 0)]
    for i, v in zip(rest, _leaf_values(graph, A, b, [leaves[i] for i in rest], lambda part: root, deadline,
                                       len(leaves))):
        values[i] = max(values[i], v)
    again = [i for i, v in enumerate(values) if not v > 0]
    if again and tree is not None and tree.inner:
        parents = _parent_bounds(graph, [leaves[i] for i in again], tree, deadline)
        redo = [leaves[i] for i in again]
        values_again = _leaf_values(graph, A, b, redo, lambda part: _stack([parents[parent_path(lf.where)] for lf in part]),
                                    deadline, len(leaves), tighten_all=True)
        for i, v in zip(again, values_again):
            values[i] = max(values[i], v)
        still = [i for i in again if not values[i] > 0 and not leaves[i].splits]
        if still:
            known = [parents[parent_path(leaves[i].where)] for i in still]
            for i, v in zip(still, _subdivide(graph, A, b, [leaves[i] for i in still], known, deadline)):
                values[i] = max(values[i], v)
    failed: list[Leaf] = []
    for leaf, value in zip(leaves, values):
        _judge(leaf, value, strict, reasons, notes)
        if not value > 0:
            failed.append(leaf)
    return failed


def _subdivide(graph: Graph, A, b, leaves: list[Leaf], known: list[dict], deadline: float | None) -> list[float]:
    """The checker's own bisection of input-box leaves: min over the pieces of the re-derived bound.

    A float32 search may claim a margin of 1e-4 on a leaf where its batched bounds were a little
    tighter than any bound re-derived here; splitting the leaf's box (widest dim relative to the
    leaf, each piece intersected with its parent piece's bounds) recovers such margins. A leaf is
    given up (its least value returned) once a piece SUBDIVIDE_DEPTH levels deep is still not > 0.
    """
    worst = [math.inf] * len(leaves)
    work = [(k, leaf.lower, leaf.upper, known[k], 0) for k, leaf in enumerate(leaves)]
    chunk = _chunk(graph)
    while work:
        _in_time(deadline, f"while subdividing {len(leaves)} leaves")
        part, work = [w for w in work[:chunk] if worst[w[0]] > 0], work[chunk:]   # a failed leaf's pieces are moot
        if not part:
            continue
        doms = [Leaf(leaves[k].where, lo, hi, (), leaves[k].row, 1.0) for k, lo, hi, _, _ in part]
        bounds, empty = domain_bounds(graph, doms, _stack([kn for _, _, _, kn, _ in part]), tighten_all=True)
        value = _row_values(graph, A, b, doms, Pass(bounds), empty).tolist()
        for j, (k, lo, hi, _, depth) in enumerate(part):
            rel = (hi - lo) / np.maximum(leaves[k].upper - leaves[k].lower, 1e-300)
            dim = int(np.argmax(rel))
            mid = (lo[dim] + hi[dim]) / 2
            if value[j] > 0 or depth >= SUBDIVIDE_DEPTH or not lo[dim] < mid < hi[dim]:
                worst[k] = min(worst[k], value[j])
                continue
            mine = {name: (l[j:j + 1], u[j:j + 1]) for name, (l, u) in bounds.items()}
            low_hi, high_lo = hi.copy(), lo.copy()
            low_hi[dim] = high_lo[dim] = mid
            work += [(k, lo, low_hi, mine, depth + 1), (k, high_lo, hi, mine, depth + 1)]
    return worst


def _whole_box_values(graph: Graph, A, b, leaves: list[Leaf], root: dict) -> list[float]:
    """Bounds of leaves whose domain is the whole region box, from the region's bounds (objective pass only)."""
    n = len(leaves)
    _, alphas, (betas, constant) = _split_tensors(graph, leaves, _device_of(graph))
    bounds = {k: (lo.expand((n,) + tuple(lo.shape[1:])), hi.expand((n,) + tuple(hi.shape[1:])))
              for k, (lo, hi) in root.items()}
    return _row_values(graph, A, b, leaves, Pass(bounds, alphas, betas, beta_constant=constant)).tolist()


def _chunk(graph: Graph) -> int:
    """Domains bounded together: CHUNK, fewer for wide graphs (BUDGET)."""
    widest = max([graph.n_inputs] + [n.size for n in graph.nodes])
    return max(1, min(CHUNK, BUDGET // (64 * widest)))


def _leaf_values(graph, A, b, leaves: list[Leaf], known_of, deadline, total: int, tighten_all=False,
                 crown: bool = True) -> list[float]:
    """Re-derived bounds of ``leaves`` in chunks; ``known_of(chunk)`` gives the bounds to intersect."""
    chunk, out = _chunk(graph), []
    for start in range(0, len(leaves), chunk):
        _in_time(deadline, f"after {start} of {len(leaves)} leaves (of {total})")
        part = leaves[start:start + chunk]
        out.extend(leaf_bounds(graph, A, b, part, known_of(part), tighten_all, crown).tolist())
    return out


def _in_time(deadline: float | None, where: str) -> None:
    """``CertificateError`` once ``deadline`` has passed."""
    if deadline is not None and clock.now() > deadline:
        raise CertificateError(f"check stopped at its deadline {where}")


def _stack(bounds: list[dict]) -> dict:
    """Per-domain bound dicts ([1, *shape] each) -> one dict of [B, *shape] tensors."""
    return {k: (torch.cat([d[k][0] for d in bounds]), torch.cat([d[k][1] for d in bounds])) for k in bounds[0]}


def _parent_bounds(graph: Graph, leaves: list[Leaf], tree: Ancestry, deadline: float | None) -> dict[str, dict]:
    """Bounds on the parent domain of each leaf, derived top-down from the root (path -> bounds)."""
    needed: set[str] = set()
    for leaf in leaves:
        path = leaf.where
        while path != tree.root_path:
            path = parent_path(path)
            needed.add(path)
    done = {tree.root_path: tree.root}
    levels: dict[int, list[str]] = {}
    for path in needed - {tree.root_path}:
        levels.setdefault(len(path), []).append(path)
    chunk = _chunk(graph)
    for depth in sorted(levels):
        paths = levels[depth]
        for start in range(0, len(paths), chunk):
            _in_time(deadline, f"while re-deriving {len(needed)} split domains")
            part = paths[start:start + chunk]
            doms = [Leaf(p, *tree.inner[p], row=0, bound=1.0) for p in part]
            bounds, _ = domain_bounds(graph, doms, _stack([done[parent_path(p)] for p in part]), tighten_all=True)
            for k, p in enumerate(part):
                done[p] = {name: (lo[k:k + 1], hi[k:k + 1]) for name, (lo, hi) in bounds.items()}
    return done


def _judge(leaf: Leaf, value: float, strict: bool, reasons: list[str], notes: list[str]) -> None:
    """Accept or reject one leaf given its re-derived bound."""
    if not value > 0:
        reasons.append(f"{leaf.where}: re-derived bound {value:.6g} of row {leaf.row} is not > 0 "
                       f"(claimed {leaf.bound:.6g})")
    elif value < leaf.bound - CLAIM_TOL * (1 + abs(leaf.bound)):
        msg = f"{leaf.where}: claimed bound {leaf.bound:.9g} exceeds the re-derived {value:.9g}"
        (reasons if strict else notes).append(msg + ("" if strict else " (still > 0: accepted)"))
    elif math.isinf(value):
        notes.append(f"{leaf.where}: the split constraints make this domain empty")


def root_bounds(graph: Graph, lower: np.ndarray, upper: np.ndarray, splits: tuple[Split, ...] = (),
                start_alphas: dict | None = None) -> dict:
    """Bounds of every value on the whole region box under the root's fixed splits (valid on every leaf inside it).

    ``start_alphas``: the proof's root alphas as torch tensors (see ``intermediate_bounds``).
    """
    leaf = Leaf("root", np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64), tuple(splits), 0, 1.0)
    bounds, _ = domain_bounds(graph, [leaf], start_alphas=start_alphas)
    return bounds


def _start_alphas(alphas: dict[str, tuple], graph: Graph) -> dict[str, tuple]:
    """Validated root alphas (numpy) as float64 tensors on the graph's device."""
    dev = _device_of(graph)
    return {value: (torch.as_tensor(rows, device=dev),
                    {relu: torch.as_tensor(a, dtype=torch.float64, device=dev) for relu, a in slopes.items()})
            for value, (rows, slopes) in alphas.items()}


def leaf_bounds(graph: Graph, A: np.ndarray, b: np.ndarray, leaves: list[Leaf], known: dict | None = None,
                tighten_all: bool = False, crown: bool = True) -> torch.Tensor:
    """Re-derived lower bound [len(leaves)] of each leaf's row ``A_i y - b_i`` (+inf if its domain is empty).

    ``known``: bounds on domains containing the leaves (the region box's, ``[1, *shape]``, or each
    leaf's parent's, ``[B, *shape]``), intersected in. ``crown``: see ``intermediate_bounds``.
    """
    bounds, empty, (alphas, (betas, constant)) = domain_bounds(graph, leaves, known, tighten_all, with_params=True,
                                                               crown=crown)
    return _row_values(graph, A, b, leaves, Pass(bounds, alphas, betas, beta_constant=constant), empty)


def _row_values(graph: Graph, A, b, leaves: list[Leaf], p: Pass, empty: torch.Tensor | None = None) -> torch.Tensor:
    """Lower bound [len(leaves)] (on the CPU) of each leaf's row ``A_i y - b_i`` given the pass; +inf where empty."""
    dev, f64 = _device_of(graph), torch.float64
    rows = torch.as_tensor(np.stack([A[lf.row] for lf in leaves]), dtype=f64, device=dev)
    rhs = torch.as_tensor(np.array([b[lf.row] for lf in leaves]), dtype=f64, device=dev)
    value = objective_lower(graph, p, rows, rhs)
    if empty is not None:
        value = torch.where(empty, torch.full_like(value, math.inf), value)
    return value.cpu()


def domain_bounds(graph: Graph, domains: list[Leaf], known: dict | None = None, tighten_all: bool = False,
                  with_params: bool = False, start_alphas: dict | None = None, crown: bool = True):
    """Bounds of every value on each domain (its box and relu splits), and the mask of empty domains.

    ``known``, ``tighten_all``, ``start_alphas`` and ``crown``: see ``intermediate_bounds``.
    With ``with_params`` also the leaves' (alphas, betas) tensors for the objective pass.
    """
    dev, f64 = _device_of(graph), torch.float64
    shape = (len(domains),) + tuple(graph.input_shape)
    lower = torch.as_tensor(np.stack([d.lower for d in domains]), dtype=f64, device=dev).reshape(shape)
    upper = torch.as_tensor(np.stack([d.upper for d in domains]), dtype=f64, device=dev).reshape(shape)
    masks, alphas, betas = _split_tensors(graph, domains, dev)
    bounds, empty = intermediate_bounds(graph, Domains(lower, upper, *masks), BUDGET, known, tighten_all, start_alphas,
                                        crown)
    return (bounds, empty, (alphas, betas)) if with_params else (bounds, empty)


def _device_of(graph: Graph) -> torch.device:
    """The device of the graph's parameters (cpu for a parameterless graph)."""
    for n in graph.nodes:
        for t in n.params.values():
            if t is not None:
                return t.device
    return torch.device("cpu")


def _split_tensors(graph: Graph, leaves: list[Leaf], dev):
    """Split masks per value (relu splits), caps / floors per value (interval splits), alphas (NaN =
    default) and beta coefficients per relu node."""
    nodes, B, f64 = graph.node_map, len(leaves), torch.float64
    inactive, active, caps, floors, alphas, betas = {}, {}, {}, {}, {}, {}
    constant = torch.zeros(B, dtype=f64)       # interval splits' multipliers: sum of beta * s * at

    def slot(table, key, fill, dtype):
        if key not in table:
            table[key] = torch.full((B, nodes[key].size if key in nodes else graph.n_inputs), fill, dtype=dtype)
        return table[key]

    for k, leaf in enumerate(leaves):
        for j, s in enumerate(leaf.splits):
            value = nodes[s.node].inputs[0]
            if nodes[s.node].op != "relu":       # an interval split: z <= at (sign -1) or z >= at
                if s.sign < 0:
                    cap = slot(caps, value, math.inf, f64)
                    cap[k, s.index] = min(float(cap[k, s.index]), s.at)
                else:
                    floor = slot(floors, value, -math.inf, f64)
                    floor[k, s.index] = max(float(floor[k, s.index]), s.at)
                if leaf.betas is not None and leaf.betas[j] != 0:   # -beta s (z - at): -beta s on z, + beta s at
                    slot(betas, s.node, 0.0, f64)[k, s.index] += -leaf.betas[j] * s.sign
                    constant[k] += leaf.betas[j] * s.sign * s.at
                continue
            slot(inactive if s.sign < 0 else active, value, False, torch.bool)[k, s.index] = True
            if leaf.betas is not None and leaf.betas[j] != 0:
                slot(betas, s.node, 0.0, f64)[k, s.index] = -leaf.betas[j] * s.sign
        for name, a in leaf.alphas.items():
            slot(alphas, name, math.nan, f64)[k] = torch.as_tensor(a.reshape(-1), dtype=f64)

    def shaped(table, shape_of):
        return {k: v.reshape((B,) + tuple(shape_of(k))).to(dev) for k, v in table.items()}

    value_shape = graph.shape_of
    node_shape = lambda k: nodes[k].shape  # noqa: E731
    return ((shaped(inactive, value_shape), shaped(active, value_shape), shaped(caps, value_shape),
             shaped(floors, value_shape)), shaped(alphas, node_shape), (shaped(betas, node_shape), constant.to(dev)))
