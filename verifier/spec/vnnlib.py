"""VNN-LIB 1.0 text (as VNN-COMP 2021-2023 writes it) -> frozen ``Spec``.

The asserts of a VNN-LIB file describe a counterexample. Their conjunction is normalised to a
disjunctive normal form; each DNF term is an input box (simple bounds on ``X_i``) plus linear
output constraints ``A y <= b``. Terms with identical boxes share one ``Region``. Strict
comparisons are read as non-strict: the unsafe set is taken closed, which only enlarges it.

Numbers are read as float64 (as every VNN-COMP tool does). Input bounds that need arithmetic
(``(<= (+ X_0 0.1) 0.3)``, ``(<= (* 3 X_0) 1)``) are computed exactly on those floats and rounded
outward, so the box never loses a point; output rows are float64.

Pipeline: ``_TOKEN`` regex -> ``_read_forms`` (iterative S-expressions whose leaves are
token indices, so any error can name its line) -> ``_Reader`` (declarations, formulas to DNF
atoms) -> ``_assemble`` (boxes, polytopes, regions).
"""
from __future__ import annotations

import gzip
import math
import re
import zlib
from fractions import Fraction
from itertools import product
from pathlib import Path
from typing import NoReturn

import numpy as np

from verifier.spec.spec import Polytope, Region, Spec

MAX_TERMS = 100_000
MAX_DEPTH = 64  # real files nest 5 deep; bounded recursion in the formula reader

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_COMMENT = re.compile(r";[^\n]*")
_VARIABLE = re.compile(r"([XY])_(0|[1-9][0-9]*)\Z")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_IGNORED_COMMANDS = frozenset({"check-sat", "get-model", "set-logic", "set-info", "set-option", "exit"})
_LESS = frozenset({"<=", "<"})
_GREATER = frozenset({">=", ">"})

# Atom kinds: an input bound (kind, i, is_upper, value, tok) or an output row (kind, {j: a}, b, tok);
# the last field is always the token index of the comparison, for error lines.
_BOUND = 0
_ROW = 1


class VnnlibError(ValueError):
    """Malformed or unsupported VNN-LIB text; the message reads ``<source>:<line>: <reason>``."""


def round_outward(exact: Fraction, up: bool) -> float:
    """The float64 nearest ``exact`` on the outside (above when ``up``), so a box never loses a point.

    Raises ``OverflowError`` beyond the float range.
    """
    value = float(exact)
    if up and Fraction(value) < exact:
        value = math.nextafter(value, math.inf)
    elif not up and Fraction(value) > exact:
        value = math.nextafter(value, -math.inf)
    return value


def read_spec_file(path, error: type[ValueError] = None) -> bytes:
    """A spec file's bytes, gunzipped when gzip-compressed; ``error`` (default ``VnnlibError``) if corrupt."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise (error or VnnlibError)(f"{path}:1: corrupt gzip data ({exc})") from None
    return data


def load_vnnlib(path, max_terms: int = MAX_TERMS) -> Spec:
    """Parse a ``.vnnlib`` or gzip-compressed ``.vnnlib.gz`` file into a ``Spec``."""
    data = read_spec_file(path)
    return parse_vnnlib(data.decode("utf-8", errors="replace"), str(path), max_terms=max_terms)


def parse_vnnlib(text: str, source: str = "", max_terms: int = MAX_TERMS) -> Spec:
    """Parse VNN-LIB text into a ``Spec``; raise ``VnnlibError`` on anything malformed."""
    stripped = _COMMENT.sub("", text)
    tokens = _TOKEN.findall(stripped)
    reader = _Reader(tokens, stripped, source, max_terms)
    for form in _read_forms(tokens, reader.fail):
        reader.command(form)
    return reader.finish()


def _read_forms(tokens: list[str], fail) -> list[list]:
    """Group tokens into top-level lists; a list is ``[open_token_index, *children]``."""
    forms: list[list] = []
    stack: list[list] = []
    for k, tok in enumerate(tokens):
        if tok == "(":
            if len(stack) >= MAX_DEPTH:
                fail(k, f"expressions nested deeper than {MAX_DEPTH}")
            stack.append([k])
        elif tok == ")":
            if not stack:
                fail(k, "unbalanced parentheses: ')' without a matching '('")
            node = stack.pop()
            (stack[-1] if stack else forms).append(node)
        elif stack:
            stack[-1].append(k)
        else:
            fail(k, f"garbage outside parentheses: {tok!r}")
    if stack:
        fail(stack[0][0], "unbalanced parentheses: this '(' is never closed")
    return forms


class _Reader:
    """Reads top-level commands: remembers declarations and the DNF of every assert."""

    def __init__(self, tokens: list[str], stripped: str, source: str, max_terms: int):
        """Start with no declarations and an empty conjunction."""
        self.tokens = tokens
        self.stripped = stripped
        self.source = source
        self.max_terms = max_terms
        self.variables: dict[str, tuple[bool, int]] = {}  # name -> (is_output, index)
        self.declared_at: dict[str, int] = {}
        self.common: list[tuple] = []  # atoms of asserts whose DNF is a single term
        self.factors: list[list[list[tuple]]] = []  # DNFs (>= 2 terms) still to be multiplied
        self.factor_toks: list[int] = []
        self.infeasible = False
        self.last_tok = 0

    # ---- errors -------------------------------------------------------------------------
    def fail(self, tok: int, reason: str) -> NoReturn:
        """Raise ``VnnlibError`` located at token index ``tok``."""
        raise VnnlibError(f"{self.source or '<vnnlib>'}:{self.line_of(tok)}: {reason}")

    def line_of(self, tok: int) -> int:
        """1-based line of the token with index ``tok`` (re-tokenizes; errors only)."""
        if not self.tokens:
            return 1
        tok = min(max(tok, 0), len(self.tokens) - 1)
        for k, match in enumerate(_TOKEN.finditer(self.stripped)):
            if k == tok:
                return self.stripped.count("\n", 0, match.start()) + 1
        return 1

    def word(self, node, what: str) -> str:
        """The symbol at ``node``, which must be a leaf."""
        if isinstance(node, list):
            self.fail(node[0], f"expected {what}, got a parenthesised expression")
        return self.tokens[node]

    # ---- commands -----------------------------------------------------------------------
    def command(self, form: list):
        """Handle one top-level form: declare-const, assert, or a harmless SMT-LIB command."""
        if len(form) == 1:
            self.fail(form[0], "empty expression '()'")
        head = self.word(form[1], "a command")
        self.last_tok = form[0]
        if head == "declare-const":
            self.declare(form)
        elif head == "assert":
            if len(form) != 3:
                self.fail(form[0], f"assert takes exactly one formula, got {len(form) - 2}")
            self.add_assert(form[2], form[0])
        elif head not in _IGNORED_COMMANDS:
            self.fail(form[1], f"unknown command {head!r}")

    def declare(self, form: list):
        """``(declare-const X_i Real)`` / ``(declare-const Y_j Real)``."""
        if len(form) != 4:
            self.fail(form[0], "declare-const takes a name and a sort, e.g. (declare-const X_0 Real)")
        name = self.word(form[2], "a variable name")
        sort = self.word(form[3], "a sort")
        match = _VARIABLE.match(name)
        if match is None:
            self.fail(form[2], f"unknown variable {name!r}: only X_<i> (inputs) and Y_<j> (outputs) are supported")
        if sort != "Real":
            self.fail(form[3], f"unsupported sort {sort!r} for {name}: only Real")
        if name in self.variables:
            self.fail(form[2], f"variable {name} declared twice")
        self.variables[name] = (match.group(1) == "Y", int(match.group(2)))
        self.declared_at[name] = form[2]

    def add_assert(self, node, tok: int):
        """Add one assert: a single-term DNF joins the common part, a wider one becomes a factor."""
        terms = self.dnf(node)
        if not terms:
            self.infeasible = True
        elif len(terms) == 1:
            self.common.extend(terms[0])
        else:
            self.factors.append(terms)
            self.factor_toks.append(tok)

    # ---- formulas -> DNF ----------------------------------------------------------------
    def dnf(self, node) -> list[list[tuple]]:
        """DNF of a formula: a list of terms, each a list of atoms ([] = false, [[]] = true)."""
        if not isinstance(node, list):
            word = self.tokens[node]
            if word == "true":
                return [[]]
            if word == "false":
                return []
            self.fail(node, f"expected a formula, got {word!r}")
        if len(node) == 1:
            self.fail(node[0], "empty expression '()'")
        op = self.word(node[1], "an operator")
        if op in _LESS or op in _GREATER or op == "=":
            return self.comparison(node, op)
        if op == "and":
            return self.conjunction(node)
        if op == "or":
            return self.disjunction(node)
        self.fail(node[1], f"unknown operator {op!r} in a formula (supported: and, or, <=, >=, <, >, =)")

    def conjunction(self, node: list) -> list[list[tuple]]:
        """DNF of ``(and f1 f2 ...)``: the product of the children's DNFs."""
        acc: list[list[tuple]] = [[]]
        for child in node[2:]:
            terms = self.dnf(child)
            if len(terms) == 1:
                for term in acc:
                    term.extend(terms[0])
                continue
            if len(acc) * len(terms) > self.max_terms:
                self.fail(node[0], f"DNF has more than {self.max_terms} terms")
            acc = [left + right for left in acc for right in terms]
        return acc

    def disjunction(self, node: list) -> list[list[tuple]]:
        """DNF of ``(or f1 f2 ...)``: the concatenation of the children's DNFs."""
        acc: list[list[tuple]] = []
        for child in node[2:]:
            acc.extend(self.dnf(child))
            if len(acc) > self.max_terms:
                self.fail(node[0], f"DNF has more than {self.max_terms} terms")
        return acc

    def comparison(self, node: list, op: str) -> list[list[tuple]]:
        """DNF of a (chainable) comparison: one term of atoms, or [] if a constant one is false."""
        if len(node) < 4:
            self.fail(node[0], f"{op!r} needs at least two arguments")
        if len(node) == 4 and op != "=":
            atom = self.simple_bound(node, op in _LESS)
            if atom is not None:
                return [[atom]]
        sides = [self.linear(child, False) for child in node[2:]]
        if any(not self.variables[name][0] for side in sides for name in side[0]):
            sides = [self.linear(child, True) for child in node[2:]]  # input bounds: exact arithmetic
        atoms: list[tuple] = []
        for left, right in zip(sides, sides[1:]):
            if op in _LESS or op == "=":
                if not self.constraint(left, right, node[0], atoms):
                    return []
            if op in _GREATER or op == "=":
                if not self.constraint(right, left, node[0], atoms):
                    return []
        return [atoms]

    def simple_bound(self, node: list, less: bool) -> tuple | None:
        """Fast path for ``(<= X_i c)``-like bounds (the bulk of big files); None if not one."""
        left, right = node[2], node[3]
        if isinstance(left, list) or isinstance(right, list):
            return None
        var = self.variables.get(self.tokens[left])
        if var is None or var[0] or self.tokens[right] in self.variables:
            return None
        value = self.leaf(right)[1]
        return (_BOUND, var[1], less, value, node[0])

    def constraint(self, left: tuple, right: tuple, tok: int, atoms: list) -> bool:
        """Append the atom for ``left <= right``; return False if it is constantly false."""
        coeffs, rhs = _sum([right, _scale(left, -1)])
        coeffs = {name: -value for name, value in coeffs.items() if value != 0}
        if not coeffs:
            if isinstance(rhs, float) and not math.isfinite(rhs):
                self.fail(tok, "constant comparison overflows the float range")
            return rhs >= 0
        inputs = [name for name in coeffs if not self.variables[name][0]]
        if inputs and len(inputs) < len(coeffs):
            self.fail(tok, "unsupported: constraint mixing inputs (X) and outputs (Y)")
        if len(inputs) > 1:
            self.fail(tok, "unsupported: linear input constraint over " + ", ".join(sorted(inputs)))
        if inputs:
            atoms.append(self.input_bound(self.variables[inputs[0]][1], coeffs[inputs[0]], rhs, tok))
        else:
            atoms.append(self.output_row(coeffs, rhs, tok))
        return True

    def output_row(self, coeffs: dict, rhs, tok: int) -> tuple:
        """The row ``sum_j a_j Y_j <= rhs`` as a float64 atom; error if anything overflows."""
        try:
            row = {self.variables[name][1]: float(a) for name, a in coeffs.items()}
            b = float(rhs)
        except OverflowError:
            row, b = {}, math.inf
        if not math.isfinite(b) or not all(math.isfinite(a) for a in row.values()):
            self.fail(tok, "constraint coefficients overflow the float range")
        return (_ROW, row, b, tok)

    def input_bound(self, index: int, coeff: Fraction, rhs: Fraction, tok: int) -> tuple:
        """The bound ``coeff * X_index <= rhs`` (exact rationals) as an atom, rounded outward."""
        try:
            value = round_outward(rhs / coeff, up=coeff > 0)
        except OverflowError:
            self.fail(tok, f"input bound on X_{index} is out of float range")
        return (_BOUND, index, coeff > 0, value, tok)

    # ---- linear terms -------------------------------------------------------------------
    def linear(self, node, exact: bool) -> tuple[dict, float | Fraction]:
        """A linear term as (coefficients by variable name, constant); Fractions if ``exact``."""
        if not isinstance(node, list):
            coeffs, value = self.leaf(node)
            return ({name: Fraction(1) for name in coeffs}, Fraction(value)) if exact else (coeffs, value)
        if len(node) == 1:
            self.fail(node[0], "empty expression '()'")
        op = self.word(node[1], "an operator")
        args = [self.linear(child, exact) for child in node[2:]]
        if not args:
            self.fail(node[0], f"{op!r} needs arguments")
        if op == "+":
            return _sum(args)
        if op == "-":
            if len(args) == 1:
                return _scale(args[0], -1)
            return _sum([args[0]] + [_scale(a, -1) for a in args[1:]])
        if op == "*":
            return self.product_term(args, node[0])
        if op == "/":
            return self.quotient_term(args, node[0])
        self.fail(node[1], f"unknown operator {op!r} in a term (supported: +, -, *, /)")

    def leaf(self, k: int) -> tuple[dict[str, float], float]:
        """A declared variable or a finite decimal number."""
        word = self.tokens[k]
        if word in self.variables:
            return {word: 1.0}, 0.0
        if _VARIABLE.match(word):
            self.fail(k, f"undeclared variable {word} (declare-const it before use)")
        if _NUMBER.match(word) is None:
            self.fail(k, f"unknown variable or malformed number {word!r}")
        value = float(word)
        if not math.isfinite(value):
            self.fail(k, f"number out of range: {word}")
        return {}, value

    def product_term(self, args: list, tok: int) -> tuple[dict[str, float], float]:
        """``(* t1 t2 ...)`` with at most one non-constant factor."""
        variable = [a for a in args if a[0]]
        if len(variable) > 1:
            self.fail(tok, "unsupported: nonlinear term (product of variables)")
        factor = math.prod(a[1] for a in args if not a[0])
        return _scale(variable[0], factor) if variable else ({}, factor)

    def quotient_term(self, args: list, tok: int) -> tuple[dict[str, float], float]:
        """``(/ t c1 c2 ...)`` with constant non-zero divisors."""
        if len(args) < 2 or any(a[0] for a in args[1:]):
            self.fail(tok, "unsupported: division needs constant divisors")
        divisor = math.prod(a[1] for a in args[1:])
        if divisor == 0:
            self.fail(tok, "division by zero")
        return _scale(args[0], 1 / divisor)

    # ---- result -------------------------------------------------------------------------
    def finish(self) -> Spec:
        """Check declarations and build the ``Spec``."""
        n_inputs = self.count_declared(False, "X", "inputs")
        n_outputs = self.count_declared(True, "Y", "outputs")
        if self.infeasible:
            return Spec(n_inputs, n_outputs, (), self.source)
        total = math.prod(len(f) for f in self.factors)
        if total > self.max_terms:
            self.fail(self.factor_toks[-1], f"DNF has {total} terms, more than {self.max_terms}")
        return _assemble(self, n_inputs, n_outputs)

    def count_declared(self, is_output: bool, letter: str, what: str) -> int:
        """Number of declared X (or Y) variables; indices must be exactly 0..n-1."""
        indices = sorted(i for out, i in self.variables.values() if out == is_output)
        if not indices:
            self.fail(len(self.tokens) - 1, f"no {what} declared (expected {letter}_0, {letter}_1, ...)")
        if indices[-1] != len(indices) - 1:
            missing = next(i for i, j in enumerate(indices) if i != j)
            last = f"{letter}_{indices[-1]}"
            self.fail(self.declared_at[last], f"{letter}_{missing} is not declared but {last} is "
                      f"({what} must be {letter}_0..{letter}_<n-1> without gaps)")
        return len(indices)


def _sum(args: list) -> tuple[dict, float | Fraction]:
    """Sum of linear terms (floats or Fractions)."""
    coeffs: dict = {}
    const = 0
    for term, c in args:
        for name, value in term.items():
            coeffs[name] = coeffs.get(name, 0) + value
        const += c
    return coeffs, const


def _scale(arg: tuple, factor) -> tuple[dict, float | Fraction]:
    """A linear term times a constant."""
    return {name: value * factor for name, value in arg[0].items()}, arg[1] * factor


def _split(atoms: list[tuple], lower: list, upper: list, rows: list) -> None:
    """Intersect the bound atoms into ``lower``/``upper`` (in place); append row atoms to ``rows``."""
    for atom in atoms:
        if atom[0] == _BOUND:
            _, i, is_upper, value, _ = atom
            if is_upper:
                if value < upper[i]:
                    upper[i] = value
            elif value > lower[i]:
                lower[i] = value
        else:
            rows.append(atom)


def _polytope(rows: list[tuple], n_outputs: int) -> Polytope:
    """Output rows ``sum_j a_j Y_j <= b`` as a ``Polytope``."""
    A = np.zeros((len(rows), n_outputs))
    b = np.empty(len(rows))
    for r, (_, coeffs, rhs, _) in enumerate(rows):
        for j, a in coeffs.items():
            A[r, j] = a
        b[r] = rhs
    return Polytope(A, b)


def _assemble(reader: _Reader, n_inputs: int, n_outputs: int) -> Spec:
    """Expand the DNF over the common part; group terms by input box into regions."""
    lower, upper, rows = [-math.inf] * n_inputs, [math.inf] * n_inputs, []
    _split(reader.common, lower, upper, rows)
    first_tok = reader.common[0][-1] if reader.common else reader.last_tok
    boxes: dict[tuple, list] = {}  # (lower, upper) -> [first token, polytopes]
    common_key = (tuple(lower), tuple(upper))
    for combination in product(*reader.factors):
        term_rows, bounds = list(rows), []
        for atoms in combination:
            for atom in atoms:
                (bounds if atom[0] == _BOUND else term_rows).append(atom)
        key = common_key
        if bounds:  # copy the common box only for terms that narrow it
            term_lower, term_upper = list(lower), list(upper)
            _split(bounds, term_lower, term_upper, term_rows)
            key = (tuple(term_lower), tuple(term_upper))
        if key not in boxes:
            tok = next((atoms[0][-1] for atoms in combination if atoms), first_tok)
            boxes[key] = [tok, []]
        boxes[key][1].append(_polytope(term_rows, n_outputs))
    regions = [_region(reader, key, tok, polys) for key, (tok, polys) in boxes.items()]
    return Spec(n_inputs, n_outputs, tuple(regions), reader.source)


def _region(reader: _Reader, key: tuple, tok: int, polytopes: list[Polytope]) -> Region:
    """Validate one input box (finite, non-empty) and build its ``Region``."""
    lower = np.array(key[0], dtype=np.float64) + 0.0  # + 0.0 turns -0.0 into 0.0
    upper = np.array(key[1], dtype=np.float64) + 0.0
    for bound, what in ((lower, "lower"), (upper, "upper")):
        if not np.all(np.isfinite(bound)):
            i = int(np.argmin(np.isfinite(bound)))
            reader.fail(tok, f"missing bounds: X_{i} has no {what} bound in this input region")
    if np.any(lower > upper):
        i = int(np.argmax(lower > upper))
        reader.fail(tok, f"empty input box: X_{i} has lower bound {float(lower[i])!r} > upper bound {float(upper[i])!r}")
    return Region(lower, upper, tuple(polytopes))
