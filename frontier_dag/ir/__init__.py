"""The IR: EventGraph (one iteration as a node-weighted DAG) and its compiled form.

The names are imported on first use, so that a module that needs only the graph's
types (the DSL, ``frontier-dag workflows``) does not pay for numpy."""

import importlib

_WHERE = {"CompiledStage": "compile", "compile_stages": "compile", "Dag": "dag", "EventGraph": "graph", "Resource": "graph",
          "Stage": "graph", "Template": "graph", "Sym": "symbols"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
