"""VNN-LIB 2.0 queries -> a typed, verifier-side ``Query`` (declarations + the DNF of the asserts).

The official parser (PyPI ``vnnlib``, a pybind11 build of the standard's grammar) reads the text
and type-checks it: declarations, element types, index bounds, mixed types. Everything after
that is ours. The package's own ``to_dnf`` / ``compat.transform`` are not used: they mishandle
``and``-rooted assertions, ``==``, ``!=``, several inputs, hidden nodes and several networks.
We walk its typed AST instead:

* arithmetic becomes a polynomial with exact rational coefficients, read from each literal's
  lexeme (``0.1`` is the rational 1/10, not its float64 rounding); a product of variables is a
  monomial of degree >= 2;
* a comparison ``lhs OP rhs`` becomes one atom ``p(v) OP 0`` with ``p = lhs - rhs`` and OP one of
  ``<=``, ``<``, ``==`` (``>=`` and ``>`` negate p; ``!=`` becomes ``p < 0 or -p < 0``);
* the conjunction of all asserts is normalised to a DNF of atoms (at most ``MAX_TERMS`` terms).

Strictness is kept: a witness must satisfy ``<`` strictly, while a proof may treat the unsafe set
as closed (proving the closure empty proves the open set empty).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from itertools import product

MAX_TERMS = 100_000
MAX_MONOMIALS = 10_000       # per polynomial, after expanding products
VERSION_HEADER = re.compile(rb"\(\s*vnnlib-version\s*<\s*([0-9]+)\.([0-9]+)\s*>\s*\)")
FLOAT_TYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16", "Real": "real"}

Key = tuple[int, int]                  # (declaration index, flat element index)
Monomial = tuple[Key, ...]             # sorted; () is the constant


class QueryError(ValueError):
    """A VNN-LIB 2.0 query that is malformed or uses something nnverify cannot decide soundly."""


@dataclass(frozen=True)
class Declaration:
    """One declared tensor: a network's input, hidden node or output."""

    name: str
    kind: str                    # "input" | "hidden" | "output"
    dtype: str                   # "real", "float32", ... (see ``FLOAT_TYPES``)
    shape: tuple[int, ...]
    network: str
    position: int                # order among the network's declarations of this kind
    onnx_name: str | None = None  # the ONNX tensor a hidden declaration names

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def element(self, flat: int) -> str:
        """The element's name as the query writes it, e.g. ``X[0,3]``."""
        idx, rest = [], flat
        for d in reversed(self.shape):
            idx.append(rest % d)
            rest //= d
        return f"{self.name}[{','.join(str(i) for i in reversed(idx))}]"


@dataclass(frozen=True)
class NetworkDecl:
    """A declared network; ``equal_to`` / ``isomorphic_to`` name an earlier one (or are empty)."""

    name: str
    equal_to: str
    isomorphic_to: str


@dataclass(frozen=True)
class Atom:
    """``sum(coeff * prod(vars)) + constant  OP  0`` with OP in ``<=``, ``<``, ``==``."""

    terms: tuple[tuple[Monomial, Fraction], ...]   # sorted by monomial, no zero coefficients
    constant: Fraction
    op: str
    line: int = 0

    @property
    def keys(self) -> set[Key]:
        """Every variable element the atom reads."""
        return {k for mono, _ in self.terms for k in mono}

    @property
    def linear(self) -> bool:
        return all(len(mono) == 1 for mono, _ in self.terms)

    def negated(self) -> "Atom":
        """The atom with its polynomial negated (same OP)."""
        return Atom(tuple((m, -c) for m, c in self.terms), -self.constant, self.op, self.line)

    def value(self, values) -> float:
        """The polynomial's value (float64) given ``values[key]``."""
        total = float(self.constant)
        for mono, coeff in self.terms:
            v = float(coeff)
            for key in mono:
                v *= float(values[key])
            total += v
        return total


@dataclass(frozen=True)
class Query:
    """A parsed 2.0 query: declarations in order and the DNF (list of conjunctions) of its asserts."""

    version: str
    networks: tuple[NetworkDecl, ...]
    declarations: tuple[Declaration, ...]
    terms: tuple[tuple[Atom, ...], ...]
    source: str = ""
    text: str = ""        # the query text (its sha256 identifies the query in certificates)

    def of(self, network: str, kind: str) -> list[Declaration]:
        """The declarations of one kind of one network, in declaration order."""
        return [d for d in self.declarations if d.network == network and d.kind == kind]

    def only_network(self) -> str:
        """The one network a query binds when given a single model (``equal-to`` copies share its file)."""
        names = [n.name for n in self.networks if not n.equal_to]
        if len(names) != 1:
            raise QueryError(f"the query declares networks {names}: bind each one with --network NAME=PATH")
        return names[0]

    def name_of(self, key: Key) -> str:
        """``X[0,3]`` for a variable key."""
        return self.declarations[key[0]].element(key[1])


def version_of(data: bytes | str) -> str | None:
    """``"2.0"`` when the text starts (after comments) with a ``(vnnlib-version <M.m>)`` header."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="replace")
    head = re.sub(rb";[^\n]*", b"", data[:4096].removeprefix(b"\xef\xbb\xbf")).lstrip()
    match = VERSION_HEADER.match(head)
    return None if match is None else f"{int(match.group(1))}.{int(match.group(2))}"


def load_query(path, max_terms: int = MAX_TERMS) -> Query:
    """Parse a VNN-LIB 2.0 file (plain text) into a ``Query``."""
    from verifier.spec.vnnlib import read_spec_file

    data = read_spec_file(path, QueryError)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QueryError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_query(text, str(path), max_terms)


def parse_query(text: str, source: str = "", max_terms: int = MAX_TERMS) -> Query:
    """Parse and type-check 2.0 text with the official parser, then build our ``Query``."""
    import vnnlib

    version = version_of(text)
    where = source or "<vnnlib2>"
    if version is None:
        raise QueryError(f"{where}:1: no (vnnlib-version <2.0>) header: not a VNN-LIB 2.0 query")
    if version != "2.0":
        raise QueryError(f"{where}:1: VNN-LIB version {version} is not supported (2.0 is)")
    try:
        ast = vnnlib.parse_query_string(text)
    except vnnlib.VNNLibException as exc:
        raise QueryError(f"{where}: {_official_error(str(exc))}") from None
    return _Builder(ast, where, max_terms).build(version, text)


def _official_error(message: str) -> str:
    """One line from the official parser's error (a JSON report or a plain parse error)."""
    import json

    try:
        report = json.loads(message)
    except ValueError:
        return message.strip().splitlines()[0] if message.strip() else "parse error"
    errors = report.get("errors") or [{}]
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return (f"line {first.get('line', '?')}: {first.get('message', 'error')}: {first.get('hint', '')} "
            f"[{first.get('offendingSymbol', '')}]{more}")


class _Builder:
    """Walks the official typed AST into declarations and a DNF of ``Atom``."""

    def __init__(self, ast, where: str, max_terms: int):
        self.ast, self.where, self.max_terms = ast, where, max_terms
        self.decls: list[Declaration] = []
        self.index: dict[tuple[str, str], int] = {}    # (network, name) -> declaration index

    def fail(self, line: int, reason: str):
        raise QueryError(f"{self.where}:{line}: {reason}")

    def build(self, version: str, text: str) -> Query:
        networks = []
        for net in self.ast.networks:
            networks.append(NetworkDecl(net.name, net.equal_to or "", net.isometric_to or ""))
            for kind, group in (("input", net.inputs), ("hidden", net.hidden), ("output", net.outputs)):
                for pos, d in enumerate(group):
                    self._declare(net.name, kind, pos, d)
        terms: list[tuple[Atom, ...]] = [()]
        for assertion in self.ast.assertions:
            terms = self._and(terms, self._dnf(assertion.expr))
        return Query(version, tuple(networks), tuple(self.decls), tuple(terms), self.where, text)

    def _declare(self, network: str, kind: str, pos: int, d) -> None:
        dtype = FLOAT_TYPES.get(d.dtype.name)
        if dtype is None:
            self.fail(0, f"{kind} {d.name} of network {network} has element type {d.dtype.name}: "
                         "only real and floating-point tensors are supported")
        onnx_name = d.onnx_name.strip('"') if d.onnx_name else None
        self.index[(network, d.name)] = len(self.decls)
        self.decls.append(Declaration(d.name, kind, dtype, tuple(int(s) for s in d.shape), network, pos, onnx_name))

    # ---- boolean structure ------------------------------------------------------------------
    def _dnf(self, expr) -> list[tuple[Atom, ...]]:
        """DNF of a boolean expression: a list of conjunctions."""
        import vnnlib

        if isinstance(expr, vnnlib.And):
            terms: list[tuple[Atom, ...]] = [()]
            for child in expr.args:
                terms = self._and(terms, self._dnf(child))
            return terms
        if isinstance(expr, vnnlib.Or):
            out = [t for child in expr.args for t in self._dnf(child)]
            self._check_size(len(out))
            return out
        if isinstance(expr, vnnlib.Comparison):
            return self._comparison(expr)
        self.fail(0, f"unsupported formula {str(expr)[:80]!r}")

    def _and(self, left: list[tuple[Atom, ...]], right: list[tuple[Atom, ...]]) -> list[tuple[Atom, ...]]:
        self._check_size(len(left) * len(right))
        return [a + b for a, b in product(left, right)]

    def _check_size(self, n: int) -> None:
        if n > self.max_terms:
            self.fail(0, f"the asserts expand to more than {self.max_terms} disjuncts")

    def _comparison(self, cmp) -> list[tuple[Atom, ...]]:
        import vnnlib

        line = _line_of(cmp)
        poly = _sub(self._poly(cmp.lhs), self._poly(cmp.rhs))
        atom = _atom(poly, "<=", line)
        if isinstance(cmp, vnnlib.LessEqual):
            return [(atom,)]
        if isinstance(cmp, vnnlib.LessThan):
            return [(_atom(poly, "<", line),)]
        if isinstance(cmp, vnnlib.GreaterEqual):
            return [(atom.negated(),)]
        if isinstance(cmp, vnnlib.GreaterThan):
            return [(_atom(poly, "<", line).negated(),)]
        if isinstance(cmp, vnnlib.Equal):
            return [(_atom(poly, "==", line),)]
        if isinstance(cmp, vnnlib.NotEqual):
            strict = _atom(poly, "<", line)
            return [(strict,), (strict.negated(),)]
        self.fail(line, f"unsupported comparison {str(cmp)[:80]!r}")

    # ---- arithmetic ---------------------------------------------------------------------------
    def _poly(self, expr) -> dict[Monomial, Fraction]:
        """The expression as {monomial: exact coefficient}."""
        import vnnlib

        if isinstance(expr, vnnlib.Var):
            key = (self.index[(expr.network_name, expr.name)], _flat(expr.indices, expr.shape))
            return {(key,): Fraction(1)}
        if isinstance(expr, vnnlib.Literal):
            return {(): _exact(expr.lexeme, expr.line, self)}
        if isinstance(expr, vnnlib.Negate):
            return {m: -c for m, c in self._poly(expr.expr).items()}
        if isinstance(expr, vnnlib.Plus):
            out: dict[Monomial, Fraction] = {}
            for arg in expr.args:
                out = _add(out, self._poly(arg))
            return out
        if isinstance(expr, vnnlib.Minus):
            out = self._poly(expr.head)
            for arg in expr.rest:
                out = _sub(out, self._poly(arg))
            return out
        if isinstance(expr, vnnlib.Multiply):
            out = {(): Fraction(1)}
            for arg in expr.args:
                out = self._mul(out, self._poly(arg))
            return out
        self.fail(0, f"unsupported arithmetic {str(expr)[:80]!r}")

    def _mul(self, a: dict[Monomial, Fraction], b: dict[Monomial, Fraction]) -> dict[Monomial, Fraction]:
        if len(a) * len(b) > MAX_MONOMIALS:
            self.fail(0, f"a product expands to more than {MAX_MONOMIALS} monomials")
        out: dict[Monomial, Fraction] = {}
        for ma, ca in a.items():
            for mb, cb in b.items():
                mono = tuple(sorted(ma + mb))
                out[mono] = out.get(mono, Fraction(0)) + ca * cb
        return {m: c for m, c in out.items() if c != 0}


def _line_of(cmp) -> int:
    """The line of the first variable or literal inside a comparison (0 if none says)."""
    for side in (cmp.lhs, cmp.rhs):       # the common case: a variable or a literal on a side
        line = getattr(side, "line", None)
        if isinstance(line, int) and line > 0:
            return line
    stack = [cmp]
    while stack:
        node = stack.pop()
        line = getattr(node, "line", None)
        if isinstance(line, int) and line > 0:
            return line
        stack.extend(reversed(node.children()))
    return 0


def _exact(lexeme: str, line: int, builder: _Builder) -> Fraction:
    try:
        return Fraction(lexeme)
    except (ValueError, ZeroDivisionError):
        builder.fail(line, f"cannot read the number {lexeme!r}")


def _flat(indices, shape) -> int:
    flat = 0
    for i, d in zip(indices, shape):
        flat = flat * int(d) + int(i)
    return flat


def _add(a: dict[Monomial, Fraction], b: dict[Monomial, Fraction]) -> dict[Monomial, Fraction]:
    if not a.keys() & b.keys():          # the common case (X[i] <= c): nothing to add up
        return {**a, **b}
    out = dict(a)
    for m, c in b.items():
        out[m] = out.get(m, Fraction(0)) + c
    return {m: c for m, c in out.items() if c != 0}


def _sub(a: dict[Monomial, Fraction], b: dict[Monomial, Fraction]) -> dict[Monomial, Fraction]:
    return _add(a, {m: -c for m, c in b.items()})


def _atom(poly: dict[Monomial, Fraction], op: str, line: int) -> Atom:
    terms = tuple(sorted((m, c) for m, c in poly.items() if m))
    return Atom(terms, poly.get((), Fraction(0)), op, line)
