"""Symbolic shapes: built once at trace time, evaluated per iteration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frontier_dag.ir.symbols import Sym, evaluate, variables


def test_arithmetic_and_source():
    tokens = Sym.var("decode.mb0.tokens")
    size = (tokens + 1) * 4096 // 2 - 3
    assert size.evaluate({"decode.mb0.tokens": 3}) == 8189
    assert size.variables() == ("decode.mb0.tokens",)
    assert "decode.mb0.tokens" in size.source()
    assert (2 * tokens).evaluate({"decode.mb0.tokens": 5}) == 10
    assert (10 - tokens).evaluate({"decode.mb0.tokens": 4}) == 6
    assert (tokens / 4).evaluate({"decode.mb0.tokens": 2}) == 0.5


@given(st.integers(0, 10**9), st.integers(1, 10**4))
def test_ceil_div_is_integer_ceiling(a, b):
    assert Sym.var("x").ceil_div(b).evaluate({"x": a}) == -(-a // b)


def test_a_sym_has_no_truth_value():
    with pytest.raises(TypeError, match="no truth value"):
        bool(Sym.var("x") + 1)


def test_only_numbers_lift():
    with pytest.raises(TypeError, match="cannot use"):
        Sym.var("x") + "3"


def test_unbound_variable_is_named():
    with pytest.raises(KeyError, match="needs 'decode.mb0.seqs'"):
        Sym.var("decode.mb0.seqs").evaluate({})


def test_equal_expressions_hash_equal():
    a, b = Sym.var("x") * 2, Sym.var("x") * 2
    assert a == b and hash(a) == hash(b) and a != Sym.var("x") * 3


def test_helpers_accept_plain_numbers():
    assert evaluate(7, {}) == 7 and variables(7) == ()
    assert evaluate(Sym.var("y"), {"y": 2}) == 2 and variables(Sym.var("y")) == ("y",)
