"""A VNN-LIB 2.0 ``Query`` plus its ONNX files -> one graph and one ``Spec`` the engine decides.

Steps:
1. bind each declared network to a loaded file (``equal-to`` reuses the file it names), check
   every declared input, output and hidden tensor against the ONNX graph by position/name and shape;
2. solve the input equalities common to every disjunct exactly (``elimination``): the engine's
   input vector ``z`` is the free inputs, every network input is an affine image of z;
3. per disjunct: one-variable input constraints become the box; other input constraints stay as
   rows over passthrough copies of z (the box is then tightened by an LP over them); everything
   else becomes rows over the observed vector (outputs, hidden values, products);
4. build the product graph (``product``) whose output is that observed vector.

A single network with one input, no hidden nodes, no products and only box constraints on
the inputs needs none of this: its own graph is used, exactly as for a 1.0 file.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from verifier.query.elimination import CONST, InconsistentEqualities, eliminate, substitute
from verifier.spec.spec import Polytope, Region, Spec
from verifier.spec.vnnlib import round_outward
from verifier.spec.vnnlib2 import Atom, Declaration, Key, Query, QueryError

LP_WIDEN = 1e-9    # relative outward widening of LP-derived box bounds (LP round-off)
FLOAT_AS_REAL = ("float32", "float64")   # accepted under real semantics when the caller opts in


class EmptyQuery(QueryError):
    """No disjunct can hold: its input constraints contradict each other (the query is unsat)."""


@dataclass(frozen=True)
class Network:
    """A declared network bound to its file: where its inputs sit in u, what it observes."""

    name: str
    path: str
    sha256: str
    graph: object                 # verifier.model.graph.Graph: flat or the model's own input -> observed
    folded: tuple[str, ...]
    inputs: tuple[Declaration, ...]
    observed: tuple[Declaration, ...]   # outputs then hidden, the order of the graph's output
    u_offset: int


@dataclass(frozen=True, eq=False)
class QueryModel:
    """What ``verify`` and the checker take: the product graph plus how to run the original files."""

    graph: object
    path: str
    sha256: str
    folded: list
    compiled: "Compiled"

    @property
    def input_shape(self):
        return self.graph.input_shape

    @property
    def output_shape(self):
        return self.graph.output_shape

    def confirm(self, z, observed) -> bool:
        """The exact re-check of a witness against one whole disjunct of the query."""
        from verifier.query.witness import confirm

        return confirm(self.compiled, z, observed)

    def reference_runner(self):
        """onnxruntime on the original files, mapped to the product's flat z -> observed vector."""
        from verifier.query.runner import QueryRunner

        return QueryRunner(self.compiled)


@dataclass
class Compiled:
    """A compiled query: the networks, the map z -> u, the observed columns, the terms kept."""

    query: Query
    networks: list[Network]
    free: list[int]                      # u index of each z entry
    pivots: dict[int, dict[int, Fraction]]
    slacks: list[Atom] = field(default_factory=list)             # the inequality behind slack n_u + j
    n_u: int = 0                                                 # network inputs (slacks come after)
    effects: dict = field(default_factory=dict)                  # id(atom) -> (atom, its effects), see _effects
    passthrough: list[int] = field(default_factory=list)        # z indices copied into the observed vector
    monomials: list[tuple] = field(default_factory=list)        # (Key, ...) computed in the graph
    terms: list[tuple[Atom, ...]] = field(default_factory=list)  # disjunct of each polytope, in spec order
    spec: Spec | None = None
    model: QueryModel | None = None

    def head(self, net: Network) -> tuple[np.ndarray, np.ndarray]:
        """(M [n_in, n_z], c [n_in]) in float64 with the network's flat inputs u = M z + c."""
        zpos = {u: j for j, u in enumerate(self.free)}
        n_in = sum(d.size for d in net.inputs)
        M, const = np.zeros((n_in, len(self.free))), np.zeros(n_in)
        for i in range(n_in):
            u = net.u_offset + i
            for k, v in self.pivots.get(u, {u: Fraction(1)}).items():
                if k == CONST:
                    const[i] = float(v)
                else:
                    M[i, zpos[k]] = float(v)
        return M, const

    def factor(self, key: Key):
        """Where a monomial's factor lives (``product.Factor``): a network input or an observed element."""
        return _factor_of(self, key)

    def header(self) -> dict:
        """What a certificate records of the query: its version and the networks' file hashes."""
        return {"version": self.query.version, "networks": {n.name: n.sha256 for n in self.networks}}

    def u_index(self, key: Key) -> int:
        d = self.query.declarations[key[0]]
        net = next(n for n in self.networks if n.name == d.network)
        return net.u_offset + sum(x.size for x in net.inputs[:d.position]) + key[1]

    def inputs_of(self, z: np.ndarray) -> np.ndarray:
        """u (every network input, float64) for one z, computed as the reference runner feeds it."""
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        return np.concatenate([M @ z + c for M, c in (self.head(net) for net in self.networks)])


def compile_query(query: Query, files: dict[str, str], float_as_real: bool = False) -> Compiled:
    """Bind ``files`` (network name -> ONNX path) and compile; ``QueryError`` names any problem.

    Declarations must be ``real``, or float32/float64 with ``float_as_real`` (nnverify's proofs
    hold over real arithmetic, and the standard asks a solver to refuse float types it cannot
    treat soundly); other element types are refused.
    """
    for n in query.networks:
        if n.isomorphic_to and n.isomorphic_to not in files and n.name not in files:
            raise QueryError(f"network {n.name} (isomorphic to {n.isomorphic_to}) needs its own file: --network {n.name}=PATH")
    networks = _bind(query, files, float_as_real)
    c = Compiled(query, networks, [], {})
    common = [a for a in query.terms[0] if _input_only(query, a) and a.linear and (a.op == "==" or len(a.terms) > 1)
              and all(a in t for t in query.terms[1:])] if query.terms else []
    n_u = sum(sum(d.size for d in net.inputs) for net in networks)
    equalities = []
    for a in common:
        expr = _affine(c, a)
        if a.op != "==":                     # expr <= 0  ->  expr + s == 0 with a slack s >= 0
            expr[n_u + len(c.slacks)] = Fraction(1)
            c.slacks.append(a)
        equalities.append(expr)
    try:
        c.pivots = eliminate(n_u, equalities)
    except InconsistentEqualities as exc:
        raise QueryError(f"{query.source}: {exc}") from None
    c.n_u = n_u
    c.free = [k for k in range(n_u + len(c.slacks)) if k not in c.pivots]
    simple = _simple(c, common)
    disjuncts = []
    for term in query.terms:
        box, rows = _term(c, [a for a in term if a not in common])
        if box is not None:                       # None: an empty disjunct (contradictory bounds)
            disjuncts.append((box, rows))
            c.terms.append(term)
    n_obs = _n_observed(c)
    regions: dict[tuple, list[Polytope]] = {}
    for (lo, hi), rows in disjuncts:
        regions.setdefault((lo.tobytes(), hi.tobytes()), []).append(_polytope(c, rows, n_obs))
    spec_regions = [Region(np.frombuffer(lo), np.frombuffer(hi), polys) for (lo, hi), polys in regions.items()]
    if not spec_regions:
        raise EmptyQuery(f"{query.source}: every disjunct of the asserts contradicts itself on the inputs")
    sha = hashlib.sha256(query.text.encode()).hexdigest() if query.text else ""
    c.spec = Spec(len(c.free), n_obs, spec_regions, query.source, sha)
    c.model = _model(c, simple)
    return c


# ---------------------------------------------------------------------------------------- binding
def _bind(query: Query, files: dict[str, str], float_as_real: bool) -> list[Network]:
    """Load every declared network's file and check its declarations against the ONNX graph."""
    from verifier.certificate import sha256_file

    unknown = sorted(set(files) - {n.name for n in query.networks})
    if unknown:
        raise QueryError(f"--network names {unknown} that the query does not declare "
                         f"(it declares {[n.name for n in query.networks]})")
    out, offset = [], 0
    for net in query.networks:
        path = files.get(net.name) or files.get(net.equal_to)
        if path is None:
            raise QueryError(f"no ONNX file for network {net.name}: pass --network {net.name}=PATH")
        inputs, hidden = query.of(net.name, "input"), query.of(net.name, "hidden")
        outputs = query.of(net.name, "output")
        for d in inputs + hidden + outputs:
            if d.dtype != "real" and not (float_as_real and d.dtype in FLOAT_AS_REAL):
                hint = " (pass --float-as-real to decide it under real arithmetic)" if d.dtype in FLOAT_AS_REAL else ""
                raise QueryError(f"{d.kind} {d.name} of network {net.name} has element type {d.dtype}: nnverify's "
                                 f"proofs hold over real arithmetic and are not sound for {d.dtype}{hint}")
        graph, folded = _load(path, inputs, hidden, outputs, net.name)
        out.append(Network(net.name, str(path), sha256_file(path), graph, tuple(folded), tuple(inputs),
                           tuple(outputs + hidden), offset))
        offset += sum(d.size for d in inputs)
    return out


def _load(path: str, inputs: list[Declaration], hidden: list[Declaration], outputs: list[Declaration], name: str):
    """The network's graph: the loader's own for 1 input / 1 output / no hidden, else a flat one."""
    from verifier.model.onnx_file import read_file, read_model
    from verifier.model.onnx_loader import graph_inputs, load_onnx, lower_flat

    import os

    try:
        model = read_model(read_file(path), os.path.dirname(os.path.abspath(path)), 200_000_000)
        declared_in = graph_inputs(model)
        declared_out = [(o.name, _shape(o)) for o in model.graph.output]
        _match(name, "input", inputs, declared_in)
        _match(name, "output", outputs, declared_out)
        _match_types(name, inputs + outputs, [i for i in model.graph.input if i.name in dict(declared_in)]
                     + list(model.graph.output))
        if len(inputs) == 1 and len(outputs) == 1 and not hidden:
            m = load_onnx(path)
            return m.graph, m.folded
        graph, folded = lower_flat(model, [n for n, _ in declared_out] + [d.onnx_name for d in hidden])
    except QueryError:
        raise
    except (ValueError, OSError) as exc:
        raise QueryError(f"network {name} ({path}): {str(exc).splitlines()[0]}") from None
    _check_hidden(name, hidden, graph, [n for n, _ in declared_out], outputs)
    return graph, folded


def _shape(value_info) -> tuple[int, ...] | None:
    dims = value_info.type.tensor_type.shape.dim
    if not dims and not value_info.type.tensor_type.HasField("shape"):
        return None
    return tuple(int(d.dim_value) if d.HasField("dim_value") else 1 for d in dims)


def _match(net: str, kind: str, decls: list[Declaration], onnx_values: list) -> None:
    """Declarations bind to the ONNX graph's inputs / outputs by position; shapes must agree."""
    if len(decls) != len(onnx_values):
        raise QueryError(f"network {net} declares {len(decls)} {kind}(s) but the ONNX graph has {len(onnx_values)}: "
                         f"{[n for n, _ in onnx_values]}")
    for d, (onnx_name, shape) in zip(decls, onnx_values):
        if shape is None:
            continue
        if tuple(s for s in shape if s != 1) != tuple(s for s in d.shape if s != 1):   # only size-1 dims may differ
            raise QueryError(f"{kind} {d.name} of network {net} is declared {list(d.shape)} but ONNX {kind} "
                             f"{onnx_name!r} has shape {list(shape)}")


_ONNX_TYPES = {1: "float32", 11: "float64", 10: "float16", 16: "bfloat16"}


def _match_types(net: str, decls: list[Declaration], values) -> None:
    """A declared float type must be the ONNX tensor's own (``real`` accepts any)."""
    for d, v in zip(decls, values):
        onnx_type = _ONNX_TYPES.get(v.type.tensor_type.elem_type, f"ONNX type {v.type.tensor_type.elem_type}")
        if d.dtype != "real" and d.dtype != onnx_type:
            raise QueryError(f"{d.kind} {d.name} of network {net} is declared {d.dtype} but ONNX tensor {v.name!r} "
                             f"is {onnx_type}")


def _check_hidden(net: str, hidden: list[Declaration], graph, out_names: list[str], outputs) -> None:
    """Each hidden declaration's size equals its ONNX tensor's (the flat graph concatenates them)."""
    declared = sum(d.size for d in outputs) + sum(d.size for d in hidden)
    if graph.n_outputs != declared:
        raise QueryError(f"network {net}: the declared outputs and hidden nodes hold {declared} values, the ONNX "
                         f"tensors they name hold {graph.n_outputs} (check the hidden shapes)")


# ---------------------------------------------------------------------------------------- atoms
def _input_only(query: Query, atom: Atom) -> bool:
    return all(query.declarations[k[0]].kind == "input" for k in atom.keys)


def _affine(c: Compiled, atom: Atom) -> dict[int, Fraction]:
    """A linear input atom's polynomial over u indices (constant under ``CONST``)."""
    out = {CONST: atom.constant}
    for mono, coeff in atom.terms:
        k = c.u_index(mono[0])
        out[k] = out.get(k, Fraction(0)) + coeff
    return out


def _simple(c: Compiled, common: list[Atom]) -> bool:
    """One network, its own graph, no equalities, every input atom a one-variable bound, linear rows."""
    q = c.query
    if len(c.networks) != 1 or common or c.networks[0].graph.n_outputs != sum(d.size for d in c.networks[0].observed):
        return False
    if len(c.networks[0].inputs) != 1 or any(d.kind == "hidden" for d in q.declarations):
        return False
    for term in q.terms:
        for a in term:
            if not a.linear:
                return False
            if _input_only(q, a) and (len(a.terms) != 1 or a.op == "=="):
                return False
            if not _input_only(q, a) and any(q.declarations[k[0]].kind == "input" for k in a.keys):
                return False
    return True


def _term(c: Compiled, atoms: list[Atom]):
    """One disjunct -> (box (lo, hi) over z, rows [(coeffs over observed columns, rhs, strict)])."""
    n_z = len(c.free)
    zpos = {u: j for j, u in enumerate(c.free)}
    lo, hi = np.full(n_z, -np.inf), np.full(n_z, np.inf)
    lo[[j for j, u in enumerate(c.free) if u >= c.n_u]] = 0.0          # slacks are non-negative
    input_rows, rows = [], []
    for atom in atoms:
        for effect in _effects(c, atom, zpos):
            if effect[0] == "false":
                return None, None
            if effect[0] == "upper":
                hi[effect[1]] = min(hi[effect[1]], effect[2])
            elif effect[0] == "lower":
                lo[effect[1]] = max(lo[effect[1]], effect[2])
            elif effect[0] == "input-row":
                input_rows.append(effect[1])
            else:
                rows.append(effect[1])
    if np.any(lo > hi):
        return None, None
    for coeffs, rhs, op in input_rows:
        for j in coeffs:
            if j not in c.passthrough:
                c.passthrough.append(j)
    if input_rows:
        lo, hi = _lp_box(lo, hi, input_rows)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        bad = int(np.argmax(~(np.isfinite(lo) & np.isfinite(hi))))
        raise QueryError(f"{_name_of(c, c.free[bad])} has no finite bound in some disjunct: "
                         "bound every input (a box or linear constraints that enclose it)")
    rows += [({("z", j): v for j, v in coeffs.items()}, rhs, op) for coeffs, rhs, op in input_rows]
    return (lo, hi), rows


def _effects(c: Compiled, atom: Atom, zpos: dict[int, int]) -> list[tuple]:
    """What one atom does to a disjunct: box bounds, input rows, observed rows, or "false".

    Computed once per atom: a DNF shares its atoms between disjuncts (a 10 MB query repeats one
    box in every disjunct), so the exact arithmetic is not redone per disjunct.
    """
    cached = c.effects.get(id(atom))
    if cached is not None:
        return cached[1]
    out: list[tuple] = []
    if _input_only(c.query, atom) and atom.linear:
        expr = substitute(_affine(c, atom), c.pivots)
        for e, op in _split_eq(expr, atom.op):
            variables = [k for k in e if k != CONST]
            const = e.get(CONST, Fraction(0))
            if not variables:
                if _false(const, op):
                    out.append(("false",))
            elif len(variables) == 1:
                a = e[variables[0]]            # a z + const <= 0 (closed: witnesses are re-checked exactly)
                try:
                    bound = round_outward(-const / a, up=a > 0)
                except OverflowError:
                    raise QueryError(f"{c.query.source}:{atom.line}: an input bound is out of the float range") from None
                out.append(("upper" if a > 0 else "lower", zpos[variables[0]], bound))
            else:
                out.append(("input-row", ({zpos[k]: v for k, v in e.items() if k != CONST}, -const, op)))
    else:
        for sign, op in ((1, atom.op),) if atom.op != "==" else ((1, "<="), (-1, "<=")):
            out.append(("row", _observed_row(c, atom, sign, op)))
    c.effects[id(atom)] = (atom, out)       # the atom is kept so its id stays unique
    return out


def _split_eq(expr: dict[int, Fraction], op: str):
    if op == "==":
        return [(expr, "<="), ({k: -v for k, v in expr.items()}, "<=")]
    return [(expr, op)]


def _false(constant: Fraction, op: str) -> bool:
    """Whether ``constant OP 0`` is false."""
    return constant > 0 if op == "<=" else constant >= 0


def _lp_box(lo: np.ndarray, hi: np.ndarray, input_rows) -> tuple[np.ndarray, np.ndarray]:
    """Tighten the box to the polytope's extent (LP per variable, widened outward)."""
    from scipy.optimize import linprog

    n = len(lo)
    A = np.zeros((len(input_rows), n))
    b = np.zeros(len(input_rows))
    for r, (coeffs, rhs, _) in enumerate(input_rows):
        for j, v in coeffs.items():
            A[r, j] = float(v)
        b[r] = float(rhs)
    bounds = [(None if not np.isfinite(a) else a, None if not np.isfinite(z) else z) for a, z in zip(lo, hi)]
    lo, hi = lo.copy(), hi.copy()
    for j in range(n):
        for sense in (1.0, -1.0):
            cost = np.zeros(n)
            cost[j] = sense
            res = linprog(cost, A_ub=A, b_ub=b, bounds=bounds, method="highs")
            if res.status == 2:
                raise QueryError("the input constraints of a disjunct are infeasible or numerically degenerate")
            if res.status != 0:
                continue                      # unbounded in this direction: keep the box side
            v = float(res.fun) * sense
            pad = LP_WIDEN * (1.0 + abs(v))
            if sense > 0:
                lo[j] = max(lo[j], v - pad)
            else:
                hi[j] = min(hi[j], v + pad)
    return lo, hi


def _name_of(c: Compiled, u: int) -> str:
    """A z entry's name: the input it is, or the slack of an inequality (by line)."""
    if u >= c.n_u:
        return f"the slack of the input inequality on line {c.slacks[u - c.n_u].line}"
    return "input " + c.query.name_of(_key_of(c, u))


def _key_of(c: Compiled, u: int) -> Key:
    for net in c.networks:
        off = net.u_offset
        for d in net.inputs:
            if u < off + d.size:
                return c.query.declarations.index(d), u - off
            off += d.size
    raise KeyError(u)


def _observed_row(c: Compiled, atom: Atom, sign: int, op: str):
    """An atom reading outputs/hidden (and maybe inputs) as a row over observed columns."""
    coeffs: dict = {}
    for mono, coeff in atom.terms:
        v = coeff * sign
        if len(mono) > 1:
            if mono not in c.monomials:
                c.monomials.append(mono)
            col = ("mono", c.monomials.index(mono))
            coeffs[col] = coeffs.get(col, Fraction(0)) + v
            continue
        key = mono[0]
        d = c.query.declarations[key[0]]
        if d.kind != "input":
            col = ("obs", key)
            coeffs[col] = coeffs.get(col, Fraction(0)) + v
            continue
        expr = substitute({c.u_index(key): Fraction(1)}, c.pivots)
        for u, w in expr.items():
            if u == CONST:
                continue
            j = c.free.index(u)
            if j not in c.passthrough:
                c.passthrough.append(j)
            coeffs[("z", j)] = coeffs.get(("z", j), Fraction(0)) + v * w
        atom_const = expr.get(CONST, Fraction(0)) * v
        coeffs[("const",)] = coeffs.get(("const",), Fraction(0)) + atom_const
    rhs = -atom.constant * sign - coeffs.pop(("const",), Fraction(0))
    return coeffs, rhs, op


# ---------------------------------------------------------------------------------------- spec
def _n_observed(c: Compiled) -> int:
    return sum(net.graph.n_outputs for net in c.networks) + len(c.passthrough) + len(c.monomials)


def _column(c: Compiled, col) -> int:
    """The observed-vector index of a row column."""
    if col[0] == "obs":
        d = c.query.declarations[col[1][0]]
        offset = 0
        for net in c.networks:
            if net.name == d.network:
                for o in net.observed:
                    if o is d or o == d:
                        return offset + col[1][1]
                    offset += o.size
            else:
                offset += net.graph.n_outputs
        raise KeyError(col)
    base = sum(net.graph.n_outputs for net in c.networks)
    if col[0] == "z":
        return base + c.passthrough.index(col[1])
    return base + len(c.passthrough) + col[1]


def _polytope(c: Compiled, rows, n_obs: int) -> Polytope:
    """Rows over symbolic columns -> ``A y <= b`` (a disjunct with no rows: the always-true row 0 <= 0)."""
    if not rows:
        return Polytope(np.zeros((1, n_obs)), np.zeros(1))
    A = np.zeros((len(rows), n_obs))
    b = np.zeros(len(rows))
    for r, (coeffs, rhs, _) in enumerate(rows):
        for col, v in coeffs.items():
            A[r, _column(c, col)] += float(v)
        b[r] = float(rhs)
    aux = np.array([all(col[0] == "z" for col in coeffs) for coeffs, _, _ in rows])
    return Polytope(A, b, np.array([op == "<" for _, _, op in rows]), aux)


def _model(c: Compiled, simple: bool) -> QueryModel:
    """The graph the engine sees: the network's own (simple case) or the product graph."""
    from verifier.query.product import Part, product_graph

    if simple:
        net = c.networks[0]
        graph = net.graph
    else:
        parts = [Part(net.name, net.graph, *c.head(net)) for net in c.networks]
        graph = product_graph(len(c.free), parts, c.passthrough, [tuple(c.factor(k) for k in mono) for mono in c.monomials])
    names = ",".join(f"{n.name}={n.path}" for n in c.networks)
    digest = hashlib.sha256("".join(f"{n.name}={n.sha256}\n" for n in c.networks).encode()).hexdigest()
    if simple:
        digest = c.networks[0].sha256
    folded = [line for n in c.networks for line in n.folded]
    return QueryModel(graph, names, digest, folded, c)


def _factor_of(c: Compiled, key: Key):
    """``Compiled.factor``'s body."""
    from verifier.query.product import Factor

    d = c.query.declarations[key[0]]
    k = next(i for i, n in enumerate(c.networks) if n.name == d.network)
    net = c.networks[k]
    if d.kind == "input":
        return Factor("input", k, c.u_index(key) - net.u_offset)
    offset = 0
    for o in net.observed:
        if o == d:
            return Factor("output", k, offset + key[1])
        offset += o.size
    raise KeyError(key)
