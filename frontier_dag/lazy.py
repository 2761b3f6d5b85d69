"""Modules imported on first use.

    if TYPE_CHECKING:
        import pandas as pd
    else:
        pd = lazy_module("pandas")

binds ``pd`` to a stand-in that imports pandas the first time one of its attributes is
read, so a module that uses pandas only in some of its functions costs nothing to import
until one of them runs (pandas and pyarrow take most of a second and 100 MB to import,
more than a short simulation).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands in for the module ``name`` and imports it when an attribute is first read."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"


def lazy_module(name: str) -> LazyModule:
    return LazyModule(name)
