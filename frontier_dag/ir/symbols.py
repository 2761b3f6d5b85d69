"""Symbolic shapes: integer expressions over an iteration's batch statistics.

A workflow is traced once, before any batch exists, so the sizes it passes to
operations are expressions such as ``mb.tokens * hidden * 2``. Each iteration
binds the variables (``decode.mb0.tokens`` = 37, ...) and evaluates them.

>>> tokens = Sym.var("decode.mb0.tokens")
>>> size = tokens * 4096 * 2
>>> size
Sym((decode.mb0.tokens * 4096) * 2)
>>> size.evaluate({"decode.mb0.tokens": 3})
24576
>>> size.variables()
('decode.mb0.tokens',)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Union

Value = Union["Sym", int, float]

_OPS = {"+": "+", "-": "-", "*": "*", "//": "//", "/": "/"}


class Sym:
    """An expression tree: ``("var", name)``, ``("const", value)`` or ``(op, left, right)``."""

    __slots__ = ("expr", "_fn", "_variables")

    def __init__(self, expr: tuple):
        self.expr = expr
        self._fn = None
        self._variables: tuple[str, ...] | None = None

    @staticmethod
    def var(name: str) -> Sym:
        return Sym(("var", name))

    @staticmethod
    def lift(value: Value) -> Sym:
        if isinstance(value, Sym):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"cannot use {value!r} of type {type(value).__name__} in a symbolic shape")
        return Sym(("const", value))

    def _bin(self, op: str, other: Value, reflected: bool = False) -> Sym:
        other = Sym.lift(other)
        return Sym((op, other.expr, self.expr) if reflected else (op, self.expr, other.expr))

    def __add__(self, o: Value) -> Sym: return self._bin("+", o)
    def __radd__(self, o: Value) -> Sym: return self._bin("+", o, True)
    def __sub__(self, o: Value) -> Sym: return self._bin("-", o)
    def __rsub__(self, o: Value) -> Sym: return self._bin("-", o, True)
    def __mul__(self, o: Value) -> Sym: return self._bin("*", o)
    def __rmul__(self, o: Value) -> Sym: return self._bin("*", o, True)
    def __floordiv__(self, o: Value) -> Sym: return self._bin("//", o)
    def __rfloordiv__(self, o: Value) -> Sym: return self._bin("//", o, True)
    def __truediv__(self, o: Value) -> Sym: return self._bin("/", o)
    def __rtruediv__(self, o: Value) -> Sym: return self._bin("/", o, True)

    def ceil_div(self, o: Value) -> Sym:
        """``ceil(self / o)`` in integers."""
        return -((-self) // o)

    def __neg__(self) -> Sym:
        return Sym(("-", ("const", 0), self.expr))

    def __bool__(self) -> bool:
        raise TypeError("a symbolic shape has no truth value until an iteration binds it; "
                        "branch on static values (model sizes, params) instead")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sym) and self.expr == other.expr

    def __hash__(self) -> int:
        return hash(self.expr)

    def __repr__(self) -> str:
        return f"Sym({self.source()})"

    def source(self) -> str:
        """The expression as text, variables by name."""
        def fmt(e: tuple) -> str:
            if e[0] == "var":
                return e[1]
            if e[0] == "const":
                return repr(e[1])
            return f"({fmt(e[1])} {e[0]} {fmt(e[2])})"
        text = fmt(self.expr)
        return text[1:-1] if text.startswith("(") and text.endswith(")") else text

    def variables(self) -> tuple[str, ...]:
        """The variables in order of first appearance (found once: tracing asks for every op)."""
        if self._variables is None:
            self._variables = self._find_variables()
        return self._variables

    def _find_variables(self) -> tuple[str, ...]:
        found: list[str] = []

        def walk(e: tuple) -> None:
            if e[0] == "var":
                if e[1] not in found:
                    found.append(e[1])
            elif e[0] != "const":
                walk(e[1])
                walk(e[2])
        walk(self.expr)
        return tuple(found)

    def compiled(self):
        """A Python function ``env -> value``, generated once (evaluation is on the hot path)."""
        if self._fn is None:
            def code(e: tuple) -> str:
                if e[0] == "var":
                    return f"env[{e[1]!r}]"
                if e[0] == "const":
                    return repr(e[1])
                return f"({code(e[1])} {_OPS[e[0]]} {code(e[2])})"
            self._fn = eval(f"lambda env: {code(self.expr)}", {"math": math})  # noqa: S307 - our own expression text
        return self._fn

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        try:
            return self.compiled()(env)
        except KeyError as exc:
            raise KeyError(f"symbolic shape {self.source()} needs {exc.args[0]!r}, which the batch does not bind") from None


def evaluate(value: Value, env: Mapping[str, Any]) -> Any:
    """Evaluate a Sym, or return a plain number unchanged."""
    return value.evaluate(env) if isinstance(value, Sym) else value


def variables(value: Any) -> tuple[str, ...]:
    return value.variables() if isinstance(value, Sym) else ()
