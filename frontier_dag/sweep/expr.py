"""Expressions of a sweep file: ``"= budget - prefill_gpus"``.

A string value that starts with ``=`` is an expression, evaluated for each point. It
may use the sweep's variables by name, read the point's config by key path
(``cluster.pools.prefill.gpus``, ``workload.num_requests``), and ``total_gpus`` (the
GPUs of every pool of the point so far). Python's arithmetic, comparisons, ``and``,
``or``, ``not``, ``x if c else y`` and the functions ``min max abs int float round
ceil floor log2 sqrt`` are allowed; nothing else (no attribute calls, no imports).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from frontier_dag.errors import ConfigError

#: The first segments of a config key path (RunConfig's fields).
CONFIG_ROOTS = frozenset({"model", "hardware", "cluster", "workflow", "workload", "scheduler", "predictor",
                          "slo", "seed"})

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min, "max": max, "abs": abs, "int": int, "float": float, "round": round,
    "ceil": math.ceil, "floor": math.floor, "log2": math.log2, "sqrt": math.sqrt,
}
#: Integers in an expression stay within 2**MAX_BITS, repeated strings and lists within
#: MAX_LENGTH items: checked before each operation (docs/sweeps.md).
MAX_BITS = 64
MAX_LENGTH = 10_000
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b}


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("=")


def total_gpus(config: Mapping[str, Any]) -> int:
    pools = (config.get("cluster") or {}).get("pools") or {}
    return sum(int(p.get("gpus", 0)) for p in pools.values() if isinstance(p, Mapping))


class Scope:
    """What an expression can see: variables, the config being built, and which variables
    it read (a variable no expression reads does not shape the point)."""

    def __init__(self, variables: Mapping[str, Any], config: Mapping[str, Any]):
        self.variables = variables
        self.config = config
        self.used: set[str] = set()

    def name(self, name: str, where: str) -> Any:
        if name in self.variables:
            self.used.add(name)
            return self.variables[name]
        if name == "total_gpus":
            return total_gpus(self.config)
        if name in CONFIG_ROOTS:
            return self.path([name], where)
        known = ", ".join(sorted(self.variables)) or "none"
        raise ConfigError(f"{where}: unknown name {name!r} (variables: {known}; config keys such as "
                          "cluster.pools.NAME.gpus; total_gpus)")

    def path(self, parts: list[str], where: str) -> Any:
        node: Any = self.config
        for i, part in enumerate(parts):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"{where}: the point's config has no key {'.'.join(parts[: i + 1])}")
            node = node[part]
        return node


def evaluate(text: str, scope: Scope, where: str) -> Any:
    """Evaluate one expression (with or without its leading ``=``)."""
    source = text[1:] if text.startswith("=") else text
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"{where}: cannot parse expression {text!r}: {exc.msg}") from None
    try:
        return _eval(tree.body, scope, where)
    except ConfigError:
        raise
    except Exception as exc:  # ZeroDivisionError, TypeError, ...
        raise ConfigError(f"{where}: expression {text!r} failed: {type(exc).__name__}: {exc}") from None


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _eval(node: ast.AST, scope: Scope, where: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return scope.name(node.id, where)
    if isinstance(node, ast.Attribute):
        parts = _dotted(node)
        if parts is None or parts[0] not in CONFIG_ROOTS or parts[0] in scope.variables:
            raise ConfigError(f"{where}: only config key paths (such as cluster.pools.decode.gpus) may use dots")
        return scope.path(parts, where)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, scope, where), _eval(node.right, scope, where)
        _check_size(type(node.op), left, right, where)
        return _bounded(_BINARY[type(node.op)](left, right), where)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, scope, where))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result = True
            for value in node.values:
                result = _eval(value, scope, where)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = _eval(value, scope, where)
            if result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _eval(node.left, scope, where)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, scope, where)
            if type(op) not in _COMPARE or not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, scope, where) else node.orelse, scope, where)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS \
            and not node.keywords:
        return _bounded(FUNCTIONS[node.func.id](*(_eval(a, scope, where) for a in node.args)), where)
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, scope, where) for e in node.elts]
    raise ConfigError(f"{where}: {ast.unparse(node)!r} is not allowed in an expression "
                      f"(arithmetic, comparisons, and/or/not, x if c else y, {', '.join(FUNCTIONS)})")


def _check_size(op: type, left: Any, right: Any, where: str) -> None:
    """Refuse, before computing it, a power or a repetition whose result would be huge
    (``9 ** 9 ** 9`` would take hours and all the memory)."""
    if op is ast.Pow and _is_int(left) and _is_int(right) and abs(left) > 1 and right > 0 \
            and right * math.log2(abs(left)) > MAX_BITS:  # a float power overflows at once instead
        raise ConfigError(f"{where}: {left!r} ** {right!r} is larger than 2**{MAX_BITS}; a typo?")
    if op is ast.Mult:
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list) and isinstance(n, int) and len(seq) * n > MAX_LENGTH:
                raise ConfigError(f"{where}: repeating a {type(seq).__name__} {n:,} times makes more than "
                                  f"{MAX_LENGTH:,} items; a typo?")


def _bounded(value: Any, where: str) -> Any:
    """``value``, or a ConfigError when it is an integer beyond 2**MAX_BITS."""
    if _is_int(value) and value.bit_length() > MAX_BITS:
        raise ConfigError(f"{where}: an intermediate value has {value.bit_length()} bits, more than {MAX_BITS}; "
                          "a typo?")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def substitute(value: Any, scope: Scope, where: str) -> Any:
    """``value`` with every expression string inside it (mappings and lists included) evaluated."""
    if is_expression(value):
        return evaluate(value, scope, where)
    if isinstance(value, Mapping):
        return {k: substitute(v, scope, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, scope, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
