"""A plain ``pip install .`` installs every package of the source tree (pyproject lists them)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("frontier_dag", *init.parent.relative_to(ROOT / "frontier_dag").parts))
             for init in (ROOT / "frontier_dag").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
