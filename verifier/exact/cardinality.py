"""CNF building blocks for the BNN encoding: reified cardinality, exact pseudo-Boolean bounds,
the formula under construction, solver back-ends (interruptible in-process, or a killable child
process for solvers without interrupt support) and a forward RUP check of DRAT proofs.

Literals are DIMACS integers (``-v`` is the negation of ``v``); ``True`` / ``False`` stand for
constants. Every function returns clauses and allocates auxiliary variables from a pysat
``IDPool``, so the caller owns one formula.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pysat.card import CardEnc, EncType
from pysat.formula import IDPool
from pysat.solvers import Solver

from verifier import clock
from verifier.forked import die_with_parent

Lit = int | bool


class EncodingError(Exception):
    """The constraint cannot be encoded (e.g. a threshold band too wide to enumerate)."""

CARD_ENCODINGS: dict[str, int] = {
    "seqcounter": EncType.seqcounter,
    "totalizer": EncType.totalizer,
    "sortnetwrk": EncType.sortnetwrk,
    "cardnetwrk": EncType.cardnetwrk,
    "kmtotalizer": EncType.kmtotalizer,
    "mtotalizer": EncType.mtotalizer,
}

# "auto" picks by a size rule measured with pysat 1.9 (benchmarks/bnn.py, report): the sequential
# counter (about 2 n k clauses) wins while the effective bound k is small, the k-modulo totalizer
# (about n log n) beyond; e.g. n=40: k=3 -> 188 vs 474 clauses, k=20 -> 800 vs 425.


def auto_encoding(n: int, bound: int) -> str:
    """The cardinality encoding ``auto`` uses for n literals and this bound."""
    k = min(bound, n - bound) + 1
    return "seqcounter" if k <= n / 16 + 4 else "kmtotalizer"


def _card(lits: list[int], bound: int, top: int, encoding: str, at_least: bool) -> tuple[list[list[int]], int]:
    """CNF of ``sum(lits) >= bound`` (or ``<= bound``) with one pysat encoding; auxiliaries above ``top``."""
    enc = CARD_ENCODINGS[encoding]
    fn = CardEnc.atleast if at_least else CardEnc.atmost
    cnf = fn(lits=lits, bound=bound, top_id=top, encoding=enc)
    return cnf.clauses, max(cnf.nv, top)


def card_clauses(lits: list[int], bound: int, vpool: IDPool, encoding: str, at_least: bool) -> list[list[int]]:
    """CNF of a cardinality bound (``encoding='auto'``: chosen by ``auto_encoding``)."""
    name = auto_encoding(len(lits), bound) if encoding == "auto" else encoding
    cls, vpool.top = _card(lits, bound, vpool.top, name, at_least)
    return cls


def reified_at_least(lits: list[int], bound: int, vpool: IDPool, encoding: str = "auto") -> tuple[Lit, list[list[int]]]:
    """A literal r with ``r <-> sum(lits) >= bound`` (or a bool when the bound decides it) and its clauses.

    ``r -> atleast`` is the at-least CNF with ``-r`` added to each clause and ``-r -> atmost(bound-1)``
    the at-most CNF with ``r`` added: adding a literal to every clause of a CNF with private
    auxiliaries gives exactly the implication.
    """
    n = len(lits)
    if bound <= 0:
        return True, []
    if bound > n:
        return False, []
    if n == 1:
        return lits[0], []
    r = vpool.id()
    clauses = [[-r] + c for c in card_clauses(lits, bound, vpool, encoding, at_least=True)]
    clauses += [[r] + c for c in card_clauses(lits, bound - 1, vpool, encoding, at_least=False)]
    return r, clauses


def _full_adder(a: int, b: int, c: int, vpool: IDPool) -> tuple[int, int, list[list[int]]]:
    """Sum and carry literals of a + b + c with full equivalence clauses."""
    s, k = vpool.id(), vpool.id()
    cls = [[-a, -b, k], [-a, -c, k], [-b, -c, k], [a, b, -k], [a, c, -k], [b, c, -k]]
    for sa in (1, -1):
        for sb in (1, -1):
            for sc in (1, -1):
                parity_odd = (sa > 0) + (sb > 0) + (sc > 0)
                cls.append([-sa * a, -sb * b, -sc * c, s if parity_odd % 2 else -s])
    return s, k, cls


def _half_adder(a: int, b: int, vpool: IDPool) -> tuple[int, int, list[list[int]]]:
    """Sum and carry literals of a + b with full equivalence clauses."""
    s, k = vpool.id(), vpool.id()
    cls = [[-k, a], [-k, b], [-a, -b, k], [-s, a, b], [-s, -a, -b], [s, -a, b], [s, a, -b]]
    return s, k, cls


def binary_sum(weighted: list[tuple[int, int]], vpool: IDPool) -> tuple[list[Lit], list[list[int]]]:
    """Bits (least significant first) of ``sum(w * lit)`` for positive integer weights, via adder columns."""
    columns: dict[int, list[int]] = {}
    for w, lit in weighted:
        bit = 0
        while w:
            if w & 1:
                columns.setdefault(bit, []).append(lit)
            w >>= 1
            bit += 1
    bits: list[Lit] = []
    clauses: list[list[int]] = []
    k = 0
    while k <= max(columns, default=-1):
        col = columns.get(k, [])
        while len(col) >= 2:
            if len(col) >= 3:
                s, c, cls = _full_adder(col.pop(), col.pop(), col.pop(), vpool)
            else:
                s, c, cls = _half_adder(col.pop(), col.pop(), vpool)
            clauses += cls
            col.insert(0, s)
            columns.setdefault(k + 1, []).append(c)
        bits.append(col[0] if col else False)
        k += 1
    return bits, clauses


def pb_at_most(weighted: list[tuple[int, int]], bound: int, vpool: IDPool) -> list[list[int]] | None:
    """CNF of ``sum(w * lit) <= bound`` for integer weights (any sign); None when it is unsatisfiable.

    Exact for arbitrarily large integers: negative weights become complemented literals, the sum
    is built with binary adders, and ``bits <= bound`` is forbidden bit-wise (z > K iff some bit
    has z_i = 1, K_i = 0 and every higher 1-bit of K is also set in z).
    """
    pos: list[tuple[int, int]] = []
    for w, lit in weighted:
        if w > 0:
            pos.append((w, lit))
        elif w < 0:
            pos.append((-w, -lit))
            bound -= w  # w*l = w - w*(~l) = w + |w|*(~l)
    if bound < 0:
        return None
    if sum(w for w, _ in pos) <= bound:
        return []
    bits, clauses = binary_sum(pos, vpool)
    for i, z in enumerate(bits):
        if (bound >> i) & 1 or z is False:
            continue
        above = [bits[j] for j in range(i + 1, len(bits)) if (bound >> j) & 1]
        if any(b is False for b in above):
            continue  # a higher 1-bit of K that z cannot match: z <= K already at that bit
        clauses.append([-z] + [-b for b in above])
    return clauses


def neg(lit: Lit) -> Lit:
    """Negation of a literal or constant."""
    return (not lit) if isinstance(lit, bool) else -lit


@dataclass
class Formula:
    """The CNF under construction, with its variable pool and cardinality choice."""

    encoding: str = "auto"
    vpool: IDPool = field(default_factory=IDPool)
    clauses: list[list[int]] = field(default_factory=list)
    copies: dict[int, int] = field(default_factory=dict)

    def new(self) -> int:
        """A fresh variable."""
        return self.vpool.id()

    def add(self, clause: list[Lit]) -> None:
        """Add a clause over literals and constants (True satisfies it, False entries drop out)."""
        if any(lit is True for lit in clause):
            return
        self.clauses.append([lit for lit in clause if lit is not False])

    def copy(self, lit: int) -> int:
        """A fresh variable equivalent to ``lit`` (cardinality encoders want distinct inputs)."""
        if lit not in self.copies:
            v = self.new()
            self.clauses += [[-v, lit], [v, -lit]]
            self.copies[lit] = v
        return self.copies[lit]


@dataclass
class SumRow:
    """An integer sum S = const + sum(2l - 1 for l in two) + sum(la + lb - 1 for la, lb in three)."""

    const: int
    two: list[int]
    three: list[tuple[int, int]]
    cache: dict[int, Lit] = field(default_factory=dict)

    @property
    def lo(self) -> int:
        """Smallest value S can take."""
        return self.const - len(self.two) - len(self.three)

    @property
    def hi(self) -> int:
        """Largest value S can take."""
        return self.const + len(self.two) + len(self.three)

    def achievable(self, lo: int, hi: int) -> list[int]:
        """Integers in [lo, hi] that S can take (range, and parity when every term is +-1)."""
        lo, hi = max(lo, self.lo), min(hi, self.hi)
        if hi - lo > 100_000:
            raise EncodingError("sign threshold band too wide (near-zero scale)")
        step_ok = (lambda s: (s - self.lo) % 2 == 0) if not self.three else (lambda s: True)
        return [s for s in range(lo, hi + 1) if step_ok(s)]

    def ge(self, f: Formula, k: int) -> Lit:
        """A literal (or constant) equivalent to S >= k."""
        if k <= self.lo:
            return True
        if k > self.hi:
            return False
        if k not in self.cache:
            if not self.three:
                need = -(-(k - self.const + len(self.two)) // 2)
                lits = self.two
            else:
                need = k - self.const + len(self.two) + len(self.three)
                lits = self.two + [f.copy(l) for l in self.two] + [l for pair in self.three for l in pair]
            lit, cls = reified_at_least(lits, need, f.vpool, f.encoding)
            f.clauses += cls
            self.cache[k] = lit
        return self.cache[k]


def rup_check(clauses: list[list[int]], proof: list[str], deadline: float | None = None) -> tuple[bool, str]:
    """Forward-check a DRAT proof whose lemmas are all RUP, by unit propagation in a second solver.

    Deletions are ignored (keeping clauses only makes propagation stronger, never unsound). True
    iff every lemma is RUP and the empty clause is derived; RAT-only lemmas make it answer False.
    """
    with Solver(name="minisat22", bootstrap_with=clauses) as checker:
        for k, line in enumerate(proof):
            parts = line.split()
            if not parts or parts[0] == "d":
                continue
            if deadline is not None and k % 256 == 0 and clock.now() > deadline:
                return False, "RUP check ran out of time"
            lits = [int(v) for v in parts if v != "0"]
            no_conflict, _ = checker.propagate(assumptions=[-lit for lit in lits])
            if no_conflict:
                return False, f"lemma {k} is not RUP (a full DRAT checker is needed)"
            if not lits:
                return True, "every lemma is RUP and the empty clause is derived (minisat22 propagation)"
            checker.add_clause(lits)
    return False, "the proof does not derive the empty clause"


WATCH = 0.1   # seconds between looks at the clock while a solver runs

INTERRUPTIBLE = ("glucose3", "glucose4", "glucose42", "minisat22", "minisatgh", "maplechrono", "maplecm",
                 "maplesat", "mergesat3", "minicard", "gluecard3", "gluecard4")


class InProcessSolver:
    """A pysat solver that supports ``solve_limited`` + ``interrupt``: solved incrementally here."""

    def __init__(self, name: str, clauses: list[list[int]], with_proof: bool):
        """Create the solver over ``clauses``."""
        self.solver = Solver(name=name, bootstrap_with=clauses, with_proof=with_proof)

    def solve(self, deadline: float) -> tuple[bool | None, list[int] | None]:
        """(answer, model); answer None on timeout."""
        if clock.now() >= deadline:
            return None, None
        done = threading.Event()
        timer = threading.Thread(target=_interrupt_at, args=(self.solver, deadline, done), daemon=True)
        timer.start()
        try:
            answer = self.solver.solve_limited(expect_interrupt=True)
        finally:
            done.set()
            timer.join()
            self.solver.clear_interrupt()
        return answer, (self.solver.get_model() if answer else None)

    def add_clause(self, clause: list[int]) -> None:
        """Add a blocking clause."""
        self.solver.add_clause(clause)

    def write_proof(self, path: Path) -> int:
        """Write the proof of the last UNSAT answer; number of lines."""
        lines = self.solver.get_proof() or []
        path.write_text("\n".join(lines) + ("\n" if lines else ""))
        return len(lines)

    def close(self) -> None:
        """Free the solver."""
        self.solver.delete()


def _interrupt_at(solver, deadline: float, done: threading.Event) -> None:
    """Interrupt ``solver`` once ``deadline`` passes or the run is cancelled, unless ``done`` is set first."""
    while not done.wait(WATCH):
        if clock.now() >= deadline:
            solver.interrupt()
            return


def _answered(recv, deadline: float) -> bool:
    """Whether a child answers on ``recv`` by ``deadline`` (a cancel ends the wait)."""
    while clock.now() < deadline:
        if recv.poll(min(WATCH, max(deadline - time.monotonic(), 0.0))):
            return True
    return recv.poll(0)


def _child_solve(name: str, clauses: list[list[int]], proof: str | None, conn, parent: int) -> None:
    """Child process body: die with the parent; solve once, send (answer, model, proof line count)."""
    die_with_parent(parent)
    with Solver(name=name, bootstrap_with=clauses, with_proof=proof is not None) as sat:
        answer = sat.solve()
        lines = 0
        if not answer and proof is not None:
            text = sat.get_proof() or []
            Path(proof).write_text("\n".join(text) + ("\n" if text else ""))
            lines = len(text)
        conn.send((answer, sat.get_model() if answer else None, lines))
    conn.close()


class ForkedSolver:
    """A solver without interrupt support (CaDiCaL, Lingeling): each solve runs in a killable child."""

    def __init__(self, name: str, clauses: list[list[int]], with_proof: bool):
        """Remember the formula; nothing runs until ``solve``."""
        self.name, self.clauses, self.with_proof = name, list(clauses), with_proof
        self.proof_tmp: Path | None = None
        self.proof_lines = 0

    def solve(self, deadline: float) -> tuple[bool | None, list[int] | None]:
        """(answer, model); answer None on timeout (the child is killed)."""
        import multiprocessing as mp
        import tempfile

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        if self.with_proof and self.proof_tmp is None:
            self.proof_tmp = Path(tempfile.mkstemp(suffix=".drat")[1])
        recv, send = ctx.Pipe(duplex=False)
        proof = self.proof_tmp and str(self.proof_tmp)
        proc = ctx.Process(target=_child_solve, args=(self.name, self.clauses, proof, send, os.getpid()))
        proc.start()
        send.close()
        try:
            if not _answered(recv, deadline):
                return None, None
            answer, model, self.proof_lines = recv.recv()
            return answer, model
        except EOFError:
            raise RuntimeError(f"SAT solver {self.name} child process died (exit code {proc.exitcode})") from None
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join()
            recv.close()

    def add_clause(self, clause: list[int]) -> None:
        """Add a blocking clause (used by the next solve)."""
        self.clauses.append(clause)

    def write_proof(self, path: Path) -> int:
        """Move the child's proof of the last UNSAT answer to ``path``; number of lines."""
        if self.proof_tmp is None:
            return 0
        self.proof_tmp.replace(path)
        self.proof_tmp = None
        return self.proof_lines

    def close(self) -> None:
        """Remove a leftover proof file."""
        if self.proof_tmp is not None:
            self.proof_tmp.unlink(missing_ok=True)
