"""VNN-LIB 2.0 parsing: the official parser's AST walked into exact atoms and our own DNF."""
from __future__ import annotations

from fractions import Fraction

import pytest

from verifier.spec.vnnlib2 import QueryError, parse_query, version_of

NET = "(declare-network f (declare-input X real [3]) (declare-hidden H real [2] \"h0\") (declare-output Y real [2]))"


def q(*asserts: str, net: str = NET) -> str:
    return "(vnnlib-version <2.0>)\n" + net + "\n" + "\n".join(f"(assert {a})" for a in asserts)


def atoms(query):
    """Each DNF term as a list of (op, {var: coeff}, constant) with readable names."""
    out = []
    for term in query.terms:
        row = []
        for a in term:
            row.append((a.op, {"*".join(query.name_of(k) for k in m): c for m, c in a.terms}, a.constant))
        out.append(row)
    return out


def test_version_header_is_detected_after_comments():
    assert version_of("; a comment\n  (vnnlib-version <2.0>)\n(declare-network") == "2.0"
    assert version_of("(declare-const X_0 Real)") is None
    assert version_of(b"(vnnlib-version <3.1>)") == "3.1"


def test_comparisons_normalise_to_p_op_0_with_exact_rationals():
    parsed = parse_query(q("(<= X[0] 0.1)", "(> Y[0] Y[1])", "(>= (- X[1] (* 2.0 X[2])) -0.5)"))
    assert atoms(parsed) == [[
        ("<=", {"X[0]": 1}, Fraction(-1, 10)),                      # 0.1 is 1/10, not its float
        ("<", {"Y[0]": -1, "Y[1]": 1}, 0),                          # Y0 > Y1  ->  Y1 - Y0 < 0
        ("<=", {"X[1]": -1, "X[2]": 2}, Fraction(-1, 2)),
    ]]


def test_and_rooted_assert_stays_one_conjunction():
    parsed = parse_query(q("(and (<= X[0] 1.0) (>= X[0] 0.0) (<= Y[0] 2.0))"))
    assert len(parsed.terms) == 1 and len(parsed.terms[0]) == 3


def test_or_and_distribute_into_a_dnf():
    parsed = parse_query(q("(or (<= Y[0] 0.0) (and (<= Y[1] 0.0) (>= H[0] 1.0)))", "(or (<= X[0] 0.0) (>= X[0] 1.0))"))
    assert [len(t) for t in parsed.terms] == [2, 2, 3, 3]


def test_equality_is_one_atom_and_disequality_two_strict_alternatives():
    parsed = parse_query(q("(== Y[0] 2.0)"))
    assert atoms(parsed) == [[("==", {"Y[0]": 1}, -2)]]
    parsed = parse_query(q("(!= Y[0] 2.0)"))
    assert atoms(parsed) == [[("<", {"Y[0]": 1}, -2)], [("<", {"Y[0]": -1}, 2)]]


def test_products_of_variables_become_monomials():
    parsed = parse_query(q("(<= (* Y[0] X[1] 3.0) 1.5)"))
    assert atoms(parsed) == [[("<=", {"X[1]*Y[0]": 3}, Fraction(-3, 2))]]
    assert not parsed.terms[0][0].linear


def test_hidden_declaration_keeps_its_onnx_name_and_shapes():
    parsed = parse_query(q("(<= H[1] 1.0)"))
    kinds = [(d.name, d.kind, d.shape, d.onnx_name) for d in parsed.declarations]
    assert kinds == [("X", "input", (3,), None), ("H", "hidden", (2,), "h0"), ("Y", "output", (2,), None)]


def test_several_networks_keep_equal_to_and_isomorphic_to():
    nets = ("(declare-network f (declare-input X real [2]) (declare-output Y real [1]))"
            "(declare-network g (equal-to f) (declare-input X2 real [2]) (declare-output Y2 real [1]))"
            "(declare-network h (isomorphic-to f) (declare-input X3 real [2]) (declare-output Y3 real [1]))")
    parsed = parse_query(q("(<= Y[0] Y2[0])", net=nets))
    assert [(n.name, n.equal_to, n.isomorphic_to) for n in parsed.networks] == [("f", "", ""), ("g", "f", ""), ("h", "", "f")]
    assert [d.network for d in parsed.declarations] == ["f", "f", "g", "g", "h", "h"]


@pytest.mark.parametrize("text, needle", [
    ("(declare-const X_0 Real)\n(assert (<= X_0 1.0))", "no (vnnlib-version <2.0>) header"),
    ("(vnnlib-version <3.0>)\n" + NET, "version 3.0 is not supported"),
    (q("(<= Z[0] 1.0)"), "Undeclared variable"),
    (q("(<= X[7] 1.0)"), "out of bounds"),
    (q("(<= X[0] 1)"), "Type mismatch"),
    (q("(<= X[0] 1.0"), "syntax error"),
])
def test_malformed_queries_name_the_problem(text, needle):
    with pytest.raises(QueryError, match=r".*") as info:
        parse_query(text, "q.vnnlib")
    assert needle in str(info.value) and str(info.value).startswith("q.vnnlib")


def test_error_names_the_line():
    with pytest.raises(QueryError, match=r"q.vnnlib: line 4: "):
        parse_query(q("(<= X[0] 1.0)", "(<= Q[0] 1.0)"), "q.vnnlib")


def test_integer_element_types_are_refused():
    net = "(declare-network f (declare-input X int8 [2]) (declare-output Y float32 [1]))"
    with pytest.raises(QueryError, match="int8|I8"):
        parse_query(q("(<= Y[0] 1.0)", net=net))


def test_disjunct_limit_is_enforced():
    wide = "(or " + " ".join(f"(<= Y[0] {k}.0)" for k in range(20)) + ")"
    with pytest.raises(QueryError, match="more than 100 disjuncts"):
        parse_query(q(wide, wide), max_terms=100)
