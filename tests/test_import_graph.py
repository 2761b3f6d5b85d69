"""The layering of DESIGN.md, checked on the source: lower layers never import higher ones.

    config -> ir -> cost -> dsl -> workflows -> predictors -> sim -> analysis -> validation -> render -> sweep -> api -> cli

A layer may import itself and the layers before it; ``predictors`` only config, ir and
cost (plus ``frontier_dag.errors`` and ``frontier_dag.data``, which every layer may use);
``profiling`` what ``predictors`` may, and ``predictors``, and only ``cli`` imports it;
nothing imports ``cli``. Every
``import`` statement counts, at module level or inside a function: a lazy import is still
a dependency. Finding a module by name (``importlib.import_module``, a plugin registry)
is not an import and is not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Source folders and the package they are installed as (pyproject's package-dir).
SOURCES = {"frontier_dag": "frontier_dag", "workflows": "frontier_dag.workflows",
           "predictors": "frontier_dag.predictors", "profiling": "frontier_dag.profiling"}
ORDER = ("config", "ir", "cost", "dsl", "workflows", "predictors", "sim", "analysis", "validation", "render", "sweep", "api",
         "cli")
BASE = "base"  # frontier_dag itself, frontier_dag.errors, frontier_dag.data
ALLOWED = {layer: {BASE, *ORDER[: i + 1]} for i, layer in enumerate(ORDER)}
ALLOWED["predictors"] = {BASE, "config", "ir", "cost", "predictors"}
ALLOWED["profiling"] = {BASE, "config", "ir", "cost", "predictors", "profiling"}
ALLOWED["cli"].add("profiling")  # the `profile` command runs the profilers
ALLOWED[BASE] = {BASE}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def layer_of(module: str) -> str | None:
    """The layer of a frontier_dag module; None for modules outside the project."""
    parts = module.split(".")
    if parts[0] != "frontier_dag":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else BASE


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import statement, relative ones resolved."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.append((node.lineno, target))
            # "from frontier_dag import cli" imports the cli package
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names
                    if layer_of(f"{target}.{alias.name}") not in (None, BASE) and layer_of(target) == BASE]
    return out


def violations() -> list[str]:
    found = []
    for module, path in modules().items():
        mine = layer_of(module)
        for line, target in imports(module, path):
            theirs = layer_of(target)
            if theirs is None or theirs == mine:
                continue
            if theirs not in ALLOWED[mine] or (theirs == "cli" and mine != "cli"):
                found.append(f"{path.relative_to(ROOT)}:{line}: {mine} imports {target} ({theirs})")
    return found


def test_the_scanner_sees_the_project():
    found = modules()
    assert {"frontier_dag.ir.graph", "frontier_dag.workflows.pd", "frontier_dag.cli.main"} <= set(found)
    layers = {layer_of(m) for m in found}
    assert set(ORDER) - {"predictors"} <= layers
    assert ("frontier_dag.ir.symbols" in {t for _, t in imports("frontier_dag.ir.graph", found["frontier_dag.ir.graph"])})


def test_relative_imports_are_resolved(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("from . import graph\nfrom ..cost import roofline\n")
    assert [t for _, t in imports("frontier_dag.ir.mod", path)] == ["frontier_dag.ir", "frontier_dag.cost"]


@pytest.mark.parametrize(("module", "target", "ok"), [
    ("frontier_dag.ir.graph", "frontier_dag.dsl.builder", False),
    ("frontier_dag.cost.coster", "frontier_dag.sim.run", False),
    ("frontier_dag.cost.coster", "frontier_dag.ir.compile", True),
    ("frontier_dag.sim.run", "frontier_dag.analysis.iteration", False),
    ("frontier_dag.predictors.forest", "frontier_dag.dsl", False),
    ("frontier_dag.analysis.iteration", "frontier_dag.sim.workload", True),
    ("frontier_dag.render.graphviz", "frontier_dag.cli.main", False),
])
def test_rules(module, target, ok):
    mine, theirs = layer_of(module), layer_of(target)
    assert (theirs in ALLOWED[mine] and (theirs != "cli" or mine == "cli")) is ok


def test_no_layer_imports_a_higher_one():
    assert violations() == []
