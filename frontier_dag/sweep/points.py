"""Expanding a sweep into points: the grid of its axes, derived keys, constraints, and one
config per point, identified by the hash of that config (so a resumed or extended sweep
recognises the points it already ran)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from frontier_dag.errors import ConfigError
from frontier_dag.sweep.expr import Scope, evaluate, substitute
from frontier_dag.sweep.spec import MAX_GRID, Sweep


@dataclass
class Point:
    id: str
    config: dict[str, Any]
    axes: dict[str, Any]
    strategy: str | None


@dataclass
class Expansion:
    points: list[Point]
    grid: int = 0
    excluded: int = 0  # by a constraint
    duplicates: int = 0  # same config as an earlier point
    notes: list[str] = field(default_factory=list)


def point_id(config: dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def set_path(config: dict[str, Any], key: str, value: Any, where: str) -> None:
    """Set ``a.b.c`` in ``config`` (creating mappings), replacing what was there."""
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            here = ".".join(parts[: depth + 1])
            raise ConfigError(f"{where}: {here} is {child!r}, not a mapping; set {here} to a mapping instead")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def expand(sweep: Sweep) -> Expansion:
    """Every point of the sweep, in grid order (the first axis varies slowest)."""
    grid = 1
    for axis in sweep.axes:
        grid *= len(axis.values)
    if grid > MAX_GRID:
        raise ConfigError(f"{sweep.source}: the axes make {grid:,} combinations (more than {MAX_GRID:,}); "
                          "narrow the ranges or split the sweep")
    out = Expansion(points=[], grid=grid)
    seen: set[str] = set()
    for combo in itertools.product(*(axis.values for axis in sweep.axes)):
        point = build_point(sweep, combo)
        if point is None:
            out.excluded += 1
        elif point.id in seen:
            out.duplicates += 1
        else:
            seen.add(point.id)
            out.points.append(point)
    return out


def build_point(sweep: Sweep, combo: tuple[Any, ...]) -> Point | None:
    """The point of one combination of axis values, or None when a constraint excludes it."""
    variables = {axis.name: value for axis, value in zip(sweep.axes, combo, strict=True) if axis.kind != "key"}
    config = copy.deepcopy(sweep.base)
    scope = Scope(variables, config)
    label = ", ".join(f"{a.name}={v}" for a, v in zip(sweep.axes, combo, strict=True)) or "the base"
    constraints = [(c, f"{sweep.source}: constraints") for c in sweep.constraints]
    for axis, value in zip(sweep.axes, combo, strict=True):
        where = f"{sweep.source}: axes.{axis.name} ({label})"
        if axis.kind == "key":
            set_path(config, axis.name, substitute(value, scope, where), where)
        elif axis.kind == "choice":
            choice = axis.choices[value]
            for key, raw in choice.set.items():
                set_path(config, key, substitute(raw, scope, f"{where}.{value}.{key}"), f"{where}.{value}")
            constraints += [(c, f"{where}.{value}.constraints") for c in choice.constraints]
    for key, raw in sweep.set.items():
        where = f"{sweep.source}: set.{key} ({label})"
        set_path(config, key, substitute(raw, scope, where), where)
    used = set(scope.used)
    for text, where in constraints:
        if not evaluate(text, Scope(variables, config), f"{where}: {text!r} ({label})"):
            return None
    axes = {}
    for axis, value in zip(sweep.axes, combo, strict=True):
        axes[axis.name] = None if axis.kind == "variable" and axis.name not in used else value
    strategy = str(variables[sweep.strategy]) if sweep.strategy in variables else None
    if sweep.strategy is not None and strategy is None:
        strategy = str(axes.get(sweep.strategy))
    return Point(point_id(config), config, axes, strategy)
