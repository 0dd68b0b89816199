"""Tests for the VNN-LIB parser: features, errors, random formulas, and the benchmark files."""
from __future__ import annotations

import gzip
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from verifier.spec import Spec, VnnlibError, load_vnnlib, parse_vnnlib
from verifier.shared_data import absent_reason, benchmarks_root

BENCHMARKS = benchmarks_root()


def _decls(n_in: int, n_out: int) -> str:
    """Declarations of X_0..X_{n_in-1} and Y_0..Y_{n_out-1}."""
    xs = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in))
    ys = "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    return xs + ys


def _box(n_in: int, lo: float = 0.0, hi: float = 1.0) -> str:
    """Asserts bounding every input to [lo, hi]."""
    return "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n" for i in range(n_in))


def _only_polytope(spec: Spec):
    """The single polytope of a single-region spec."""
    assert len(spec.regions) == 1 and len(spec.regions[0].unsafe) == 1
    return spec.regions[0].unsafe[0]


def _error(text: str, line: int, *words: str) -> str:
    """Parse ``text`` expecting a VnnlibError at ``line`` whose message contains ``words``."""
    with pytest.raises(VnnlibError) as info:
        parse_vnnlib(text, "prop.vnnlib")
    message = str(info.value)
    assert message.startswith(f"prop.vnnlib:{line}: "), message
    for word in words:
        assert word in message, message
    return message


# ---- features ------------------------------------------------------------------------------

def test_output_comparison_between_variables():
    spec = parse_vnnlib(_decls(2, 2) + _box(2) + "(assert (<= Y_1 Y_0))", "p")
    poly = _only_polytope(spec)
    np.testing.assert_array_equal(poly.A, [[-1.0, 1.0]])
    np.testing.assert_array_equal(poly.b, [0.0])
    assert (spec.n_inputs, spec.n_outputs, spec.source) == (2, 2, "p")
    np.testing.assert_array_equal(spec.regions[0].lower, [0.0, 0.0])
    np.testing.assert_array_equal(spec.regions[0].upper, [1.0, 1.0])


def test_output_comparison_with_constant_and_strict_ops():
    text = _decls(1, 2) + _box(1) + "(assert (>= Y_0 3))\n(assert (< Y_1 -2))\n(assert (> 4 Y_1))"
    poly = _only_polytope(parse_vnnlib(text))
    np.testing.assert_array_equal(poly.A, [[-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    np.testing.assert_array_equal(poly.b, [-3.0, -2.0, 4.0])


def test_declarations_in_any_order_comments_and_whitespace():
    text = """; header comment (with parens
    (declare-const Y_0 Real) ; trailing comment )
    (declare-const X_1 Real)(declare-const X_0 Real)
    (assert
       (<=
         X_0 ; inline
         .5))
    (assert (>= X_0 -3.2E+2))
    (assert (<= X_1 5.))
    (assert (>= X_1 1e-05))
    (assert (<= Y_0 +2.5e0))
    """
    spec = parse_vnnlib(text)
    np.testing.assert_array_equal(spec.regions[0].lower, [-320.0, 1e-05])
    np.testing.assert_array_equal(spec.regions[0].upper, [0.5, 5.0])
    np.testing.assert_array_equal(_only_polytope(spec).b, [2.5])


def test_linear_output_terms():
    text = _decls(1, 3) + _box(1) + "(assert (<= (+ Y_0 (* 2 Y_1) (- Y_2) 1) (- Y_1 3)))\n" \
        "(assert (>= (* Y_2 0.5) (/ Y_0 4)))"
    poly = _only_polytope(parse_vnnlib(text))
    np.testing.assert_allclose(poly.A, [[1.0, 1.0, -1.0], [0.25, 0.0, -0.5]])
    np.testing.assert_allclose(poly.b, [-4.0, 0.0])


def test_cancelling_terms_become_constants():
    text = _decls(1, 2) + _box(1) + "(assert (<= (- Y_0 Y_0) 1))\n(assert (<= Y_1 2))"
    poly = _only_polytope(parse_vnnlib(text))
    np.testing.assert_array_equal(poly.A, [[0.0, 1.0]])


def test_or_of_ands_gives_one_region_with_polytopes():
    text = _decls(1, 3) + _box(1) + "(assert (or (and (<= Y_1 Y_0)) (and (<= Y_2 Y_0) (>= Y_2 0))))"
    spec = parse_vnnlib(text)
    assert len(spec.regions) == 1
    first, second = spec.regions[0].unsafe
    np.testing.assert_array_equal(first.A, [[-1.0, 1.0, 0.0]])
    np.testing.assert_array_equal(second.A, [[-1.0, 0.0, 1.0], [0.0, 0.0, -1.0]])


def test_disjunction_over_input_boxes_crosses_output_disjunction():
    text = _decls(1, 2) + """
    (assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))
    (assert (or (<= Y_0 0) (<= Y_1 0)))"""
    spec = parse_vnnlib(text)
    assert [(r.lower[0], r.upper[0]) for r in spec.regions] == [(0.0, 1.0), (2.0, 3.0)]
    for region in spec.regions:
        assert [p.A.tolist() for p in region.unsafe] == [[[1.0, 0.0]], [[0.0, 1.0]]]


def test_inputs_and_outputs_in_same_disjuncts_group_by_box():
    text = _decls(1, 1) + """(assert (or
      (and (>= X_0 0.1) (<= X_0 0.2) (<= Y_0 0.5))
      (and (>= X_0 0.1) (<= X_0 0.2) (>= Y_0 0.7))
      (and (>= X_0 0.3) (<= X_0 0.4) (<= Y_0 0.9))))"""
    spec = parse_vnnlib(text)
    assert len(spec.regions) == 2
    assert [len(r.unsafe) for r in spec.regions] == [2, 1]
    np.testing.assert_array_equal(spec.regions[0].unsafe[1].A, [[-1.0]])
    np.testing.assert_array_equal(spec.regions[0].unsafe[1].b, [-0.7])


def test_repeated_bounds_intersect_and_equality():
    text = _decls(3, 1) + """(assert (<= X_0 1)) (assert (<= X_0 0.5)) (assert (>= X_0 -1))
    (assert (>= X_0 -2)) (assert (>= X_1 1)) (assert (<= X_1 1)) (assert (= X_2 (- 4)))
    (assert (<= 0 Y_0 3))"""
    spec = parse_vnnlib(text)
    np.testing.assert_array_equal(spec.regions[0].lower, [-1.0, 1.0, -4.0])
    np.testing.assert_array_equal(spec.regions[0].upper, [0.5, 1.0, -4.0])
    np.testing.assert_array_equal(_only_polytope(spec).b, [0.0, 3.0])


def test_scaled_input_bound_rounds_outward():
    spec = parse_vnnlib(_decls(1, 1) + "(assert (<= (* 3 X_0) 1)) (assert (>= (* 3 X_0) -1)) (assert (<= Y_0 0))")
    lower, upper = spec.regions[0].lower[0], spec.regions[0].upper[0]
    assert Fraction(upper) * 3 >= 1 and Fraction(lower) * 3 <= -1
    assert upper == pytest.approx(1 / 3) and lower == pytest.approx(-1 / 3)
    flipped = parse_vnnlib(_decls(1, 1) + "(assert (<= (* -1 X_0) 1)) (assert (<= X_0 2)) (assert (<= Y_0 0))")
    assert (flipped.regions[0].lower[0], flipped.regions[0].upper[0]) == (-1.0, 2.0)


def test_input_bound_arithmetic_is_exact_then_outward():
    rng = np.random.default_rng(3)
    for c1, c2, k in zip(*(rng.uniform(lo, hi, 50).tolist() for lo, hi in ((-1, 1), (1, 2), (0.5, 3)))):
        text = _decls(1, 1) + f"(assert (<= (+ X_0 {c1!r}) {c2!r}))(assert (>= (* {k!r} (+ X_0 {c1!r})) {-c2!r}))" \
            "(assert (<= Y_0 0))"
        region = parse_vnnlib(text).regions[0]
        upper, lower = Fraction(region.upper[0]), Fraction(region.lower[0])
        exact_upper = Fraction(c2) - Fraction(c1)
        exact_lower = Fraction(-c2) / Fraction(k) - Fraction(c1)
        assert upper >= exact_upper and Fraction(np.nextafter(region.upper[0], -np.inf)) < exact_upper
        assert lower <= exact_lower and Fraction(np.nextafter(region.lower[0], np.inf)) > exact_lower


def test_constant_comparisons_drop_rows_or_terms():
    text = _decls(1, 2) + _box(1) + "(assert (<= 0 1))\n(assert (or (and (<= 1 0) (<= Y_0 0)) (<= Y_1 0) true))"
    spec = parse_vnnlib(text)
    assert len(spec.regions) == 1
    first, second = spec.regions[0].unsafe
    np.testing.assert_array_equal(first.A, [[0.0, 1.0]])
    assert second.A.shape == (0, 2)  # `true`: every output in the box is unsafe
    assert spec.violation(np.array([0.5]), np.array([5.0, 5.0])) == (0, 1)


def test_unsatisfiable_spec_has_no_regions():
    spec = parse_vnnlib(_decls(1, 1) + _box(1) + "(assert (or (<= 1 0) false))")
    assert spec.regions == ()
    assert spec.violation(np.array([0.5]), np.array([0.0])) is None


def test_nested_and_or_products():
    text = _decls(1, 2) + _box(1) + "(assert (and (or (<= Y_0 0) (<= Y_1 0)) (or (>= Y_0 1) (>= Y_1 1))))"
    spec = parse_vnnlib(text)
    assert len(spec.regions[0].unsafe) == 4
    assert spec.regions[0].unsafe[1].A.tolist() == [[1.0, 0.0], [0.0, -1.0]]


def test_ignored_smtlib_commands():
    spec = parse_vnnlib("(set-logic QF_LRA)" + _decls(1, 1) + _box(1) + "(assert (<= Y_0 0))(check-sat)(get-model)")
    assert spec.n_inputs == 1 and len(spec.regions) == 1


def test_load_plain_and_gzip(tmp_path):
    text = _decls(2, 2) + _box(2) + "(assert (or (<= Y_1 Y_0) (>= Y_0 3)))"
    plain = tmp_path / "p.vnnlib"
    plain.write_text(text)
    packed = tmp_path / "p.vnnlib.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    a, b = load_vnnlib(plain), load_vnnlib(packed)
    assert a.source == str(plain) and b.source == str(packed)
    for pa, pb in zip(a.regions[0].unsafe, b.regions[0].unsafe):
        np.testing.assert_array_equal(pa.A, pb.A)
        np.testing.assert_array_equal(pa.b, pb.b)
    broken = tmp_path / "q.vnnlib.gz"
    broken.write_bytes(gzip.compress(text.encode())[:30])
    with pytest.raises(VnnlibError, match=r"q\.vnnlib\.gz:1: corrupt gzip"):
        load_vnnlib(broken)


# ---- errors --------------------------------------------------------------------------------

HEAD = _decls(2, 2)  # 4 lines; asserts below start on line 5


def test_error_unbalanced_parentheses():
    _error(HEAD + _box(2) + "(assert (<= Y_0 1)", 9, "unbalanced", "never closed")
    _error(HEAD + _box(2) + "(assert (<= Y_0 1)))", 9, "unbalanced", "')'")


def test_error_undeclared_and_unknown_variables():
    _error(HEAD + "(assert (<= X_7 1))", 5, "undeclared variable X_7")
    _error(HEAD + "(assert (<= Z_0 1))", 5, "'Z_0'")
    _error("(declare-const Z_0 Real)", 1, "unknown variable 'Z_0'")
    _error("(declare-const X_01 Real)", 1, "unknown variable 'X_01'")
    _error(HEAD + "(declare-const X_0 Real)", 5, "declared twice")
    _error("(declare-const X_0 Int)", 1, "unsupported sort 'Int'")


def test_error_index_gaps_and_missing_declarations():
    _error("(declare-const X_0 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)", 2, "X_1 is not declared")
    _error("(declare-const X_0 Real)\n(declare-const Y_1 Real)", 2, "Y_0 is not declared")
    _error("(declare-const X_0 Real)\n(assert (<= X_0 1))", 2, "no outputs declared")
    _error("", 1, "no inputs declared")


def test_error_unknown_operator_and_command():
    _error(HEAD + _box(2) + "(assert (not (<= Y_0 1)))", 9, "unknown operator 'not'")
    _error(HEAD + _box(2) + "(assert (<= (max Y_0 Y_1) 1))", 9, "unknown operator 'max'")
    _error(HEAD + "(define-fun f () Real 1)", 5, "unknown command 'define-fun'")
    _error(HEAD + "(assert X_0)", 5, "expected a formula")
    _error(HEAD + "(assert (<= Y_0 1) (<= Y_1 1))", 5, "exactly one formula")
    _error(HEAD + "(assert ())", 5, "empty expression")
    _error(HEAD + "(assert ((<= Y_0 1)))", 5, "expected an operator")
    _error(HEAD + "(assert (<= Y_0))", 5, "at least two arguments")


def test_error_missing_bounds_and_empty_box():
    _error(HEAD + "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))", 5, "missing bounds", "X_1", "upper")
    text = HEAD + "(assert (<= Y_0 0))\n(assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1))\n" \
        "(and (<= X_0 1) (>= X_1 0) (<= X_1 1))))"
    _error(text, 7, "X_0 has no lower bound")
    _error(HEAD + _box(2) + "(assert (>= X_1 2))", 5, "empty input box", "X_1")


def test_error_garbage_and_bad_numbers():
    _error(HEAD + "hello", 5, "garbage", "'hello'")
    _error(HEAD + _box(2) + "(assert (<= Y_0 abc))", 9, "malformed number 'abc'")
    for bad in ("nan", "inf", "1_000", "1e", "--1", "0x10"):
        _error(HEAD + _box(2) + f"(assert (<= Y_0 {bad}))", 9, repr(bad))
    _error(HEAD + _box(2) + "(assert (<= Y_0 1e999))", 9, "out of range")
    _error(HEAD + _box(2) + "(assert (<= (* 1e308 10 Y_0) 1))", 9, "overflow")
    _error(HEAD + _box(2) + "(assert (<= (* 1e308 10) (* 1e308 10)))", 9, "overflow")
    _error(HEAD + "(assert (<= (/ X_0 1e308 10) 1e300))", 5, "out of float range")


def test_error_unsupported_linear_forms():
    _error(HEAD + _box(2) + "(assert (<= X_0 X_1))", 9, "unsupported: linear input constraint")
    _error(HEAD + _box(2) + "(assert (<= (+ X_0 Y_0) 1))", 9, "unsupported: constraint mixing inputs")
    _error(HEAD + _box(2) + "(assert (<= (* Y_0 Y_1) 1))", 9, "nonlinear")
    _error(HEAD + _box(2) + "(assert (<= (/ Y_0 Y_1) 1))", 9, "constant divisors")
    _error(HEAD + _box(2) + "(assert (<= (/ Y_0 0) 1))", 9, "division by zero")


def test_error_dnf_blowup_and_deep_nesting():
    clause = "(assert (or (<= Y_0 0) (<= Y_1 0) (<= Y_0 1)))\n"
    with pytest.raises(VnnlibError, match="more than 20"):
        parse_vnnlib(HEAD + _box(2) + clause * 3, max_terms=20)
    assert len(parse_vnnlib(HEAD + _box(2) + clause * 2, max_terms=20).regions[0].unsafe) == 9
    nested = "(and " * 100 + "(<= Y_0 0)" + ")" * 100
    _error(HEAD + _box(2) + f"(assert {nested})", 9, "nested deeper")


def test_error_message_defaults_source():
    with pytest.raises(VnnlibError, match=r"^<vnnlib>:1: "):
        parse_vnnlib("(assert")
    assert issubclass(VnnlibError, ValueError)


def test_mutated_text_raises_only_vnnlib_errors():
    rng = np.random.default_rng(0)
    base = HEAD + _box(2) + "(assert (or (and (<= Y_1 Y_0) (>= Y_0 -1.5e-2)) (<= (+ Y_0 (* 2 Y_1)) .5)))\n"
    alphabet = list("()XY_0123456789.e-+ <=>;\n") + ["and", "or", "assert", "X_9", "(* Y_0 Y_1)"]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        chars = list(base)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, len(chars)))
            if rng.random() < 0.5:
                del chars[pos]
            else:
                chars.insert(pos, str(rng.choice(alphabet)))
        try:
            parse_vnnlib("".join(chars), "fuzz")
            outcomes["ok"] += 1
        except VnnlibError as exc:
            assert re.match(r"fuzz:\d+: \S", str(exc)), str(exc)
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


# ---- random formulas against direct evaluation ------------------------------------------------

_OPS = {"<=": np.less_equal, "<": np.less, ">=": np.greater_equal, ">": np.greater}


def _random_atom(rng, n_in: int, n_out: int):
    """A random comparison as (text, evaluator(x, y) -> bool)."""
    op = str(rng.choice(list(_OPS)))
    c = float(np.round(rng.uniform(-1.5, 1.5), 3))
    j, k = (int(v) for v in rng.choice(n_out, size=2, replace=False))  # j != k: no degenerate strict atoms
    kind = int(rng.integers(0, 5))
    if kind == 0:
        i = int(rng.integers(0, n_in))
        flipped = rng.random() < 0.5
        upper = (op in ("<=", "<")) != flipped  # upper bounds in [0, 1], lower in [-1, 0]: never empty
        c = float(np.round(rng.uniform(0, 1) if upper else rng.uniform(-1, 0), 3))
        if not flipped:
            return f"({op} X_{i} {c!r})", lambda x, y: _OPS[op](x[i], c)
        return f"({op} (+ {c!r} 0.25) (+ X_{i} 0.25))", lambda x, y: _OPS[op](c, x[i])
    if kind == 1:
        return f"({op} Y_{j} {c!r})", lambda x, y: _OPS[op](y[j], c)
    if kind == 2:
        return f"({op} Y_{j} Y_{k})", lambda x, y: _OPS[op](y[j], y[k])
    if kind == 3:
        a = float(np.round(rng.uniform(-2, 2), 2))
        return f"({op} (+ (* {a!r} Y_{j}) (- Y_{k})) {c!r})", lambda x, y: _OPS[op](a * y[j] - y[k], c)
    return f"({op} {c!r} (- Y_{j} Y_{k}))", lambda x, y: _OPS[op](c, y[j] - y[k])


def _random_formula(rng, n_in: int, n_out: int, depth: int):
    """A random and/or formula as (text, evaluator)."""
    if depth == 0 or rng.random() < 0.3:
        return _random_atom(rng, n_in, n_out)
    children = [_random_formula(rng, n_in, n_out, depth - 1) for _ in range(int(rng.integers(1, 4)))]
    texts, evals = zip(*children)
    if rng.random() < 0.5:
        return f"(and {' '.join(texts)})", lambda x, y: all(e(x, y) for e in evals)
    return f"(or {' '.join(texts)})", lambda x, y: any(e(x, y) for e in evals)


def test_random_formulas_agree_with_direct_evaluation():
    mixed = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        n_in, n_out = 3, 3
        formulas = [_random_formula(rng, n_in, n_out, 3) for _ in range(int(rng.integers(1, 3)))]
        text = _decls(n_in, n_out) + _box(n_in, -1.0, 1.0) + "".join(f"(assert {t})\n" for t, _ in formulas)
        spec = parse_vnnlib(text, f"random{seed}")
        xs = rng.uniform(-1.2, 1.2, size=(300, n_in))
        ys = rng.uniform(-2.0, 2.0, size=(300, n_out))
        outcomes = set()
        for x, y in zip(xs, ys):
            expected = bool(np.all(np.abs(x) <= 1.0)) and all(e(x, y) for _, e in formulas)
            assert (spec.violation(x, y) is not None) == expected, (text, x, y)
            outcomes.add(expected)
        mixed += len(outcomes) == 2
    assert mixed >= 6  # most formulas have both unsafe and safe samples, so agreement means something


# ---- the benchmark files -------------------------------------------------------------------

def _benchmark_files() -> list[Path]:
    """The shared benchmarks' VNN-LIB files: every one under 200 kB, every 4th larger one.

    The large files (CIFAR / image boxes, ~0.3-1 MB each) repeat one format; a quarter of them
    plus the largest file keeps this test far under 30 s. The full set parses in ~9 s (report).
    """
    files = sorted(BENCHMARKS.glob("**/*.vnnlib*")) if BENCHMARKS.is_dir() else []
    sizes = {f: f.stat().st_size for f in files}
    large = [f for f in files if sizes[f] > 200_000]
    keep = set(large[::4]) | {max(large, key=sizes.get)} if large else set()
    return [f for f in files if sizes[f] <= 200_000 or f in keep]


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=absent_reason(BENCHMARKS))
def test_benchmark_files_parse():
    files = _benchmark_files()
    assert len(files) > 600
    for path in files:
        spec = load_vnnlib(path)
        assert spec.n_inputs > 0 and spec.n_outputs > 0, path
        assert spec.regions, path
        for region in spec.regions:
            assert np.all(np.isfinite(region.lower)) and np.all(np.isfinite(region.upper)), path
            assert np.all(region.lower <= region.upper) and region.unsafe, path


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=absent_reason(BENCHMARKS))
def test_benchmark_structures():
    acas = load_vnnlib(BENCHMARKS / "vnncomp2021/acasxu/vnnlib/prop_6.vnnlib")
    assert (acas.n_inputs, acas.n_outputs, len(acas.regions)) == (5, 5, 2)
    assert [len(r.unsafe) for r in acas.regions] == [4, 4]
    np.testing.assert_array_equal(acas.regions[1].upper[:2], [0.700434925, -0.11140846])
    np.testing.assert_array_equal(acas.regions[0].unsafe[0].A, [[-1.0, 1.0, 0, 0, 0]])
    lindex = BENCHMARKS / "vnncomp2023/nn4sys/vnnlib/lindex_3000.vnnlib"
    n_terms = len(re.findall(r"\(and", lindex.read_text()))
    spec = load_vnnlib(lindex)
    assert sum(len(r.unsafe) for r in spec.regions) == n_terms
    assert all(len(r.unsafe) == 2 for r in spec.regions)
    mnist = load_vnnlib(next((BENCHMARKS / "vnncomp2021/mnistfc/vnnlib").glob("*.vnnlib")))
    assert (mnist.n_inputs, mnist.n_outputs, len(mnist.regions[0].unsafe)) == (784, 10, 9)


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=absent_reason(BENCHMARKS))
def test_image_box_matches_independent_extraction():
    path = BENCHMARKS / "vnncomp2021/oval21/vnnlib"
    path = sorted(path.glob("*.vnnlib"))[0]
    text = path.read_text()
    lower, upper = np.full(3072, -np.inf), np.full(3072, np.inf)
    for op, i, c in re.findall(r"\((<=|>=)\s+X_(\d+)\s+([^\s()]+)\)", text):
        if op == "<=":
            upper[int(i)] = min(upper[int(i)], float(c))
        else:
            lower[int(i)] = max(lower[int(i)], float(c))
    spec = load_vnnlib(path)
    np.testing.assert_array_equal(spec.regions[0].lower, lower)
    np.testing.assert_array_equal(spec.regions[0].upper, upper)
    assert len(spec.regions) == 1 and len(spec.regions[0].unsafe) == 9
