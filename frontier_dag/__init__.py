"""frontier-dag: a simulator of next-generation LLM inference systems.

Serving strategies are written in a small Python DSL (see ``frontier_dag.dsl``),
traced into event-dependency DAGs (``frontier_dag.ir``), weighted by operator
cost models (``frontier_dag.cost`` and ``frontier_dag.predictors``), and run
over many iterations by the cluster simulator (``frontier_dag.sim``).

The Python API (``frontier_dag.api``, see docs/api.md) is re-exported here and
imported on first use, so that ``import frontier_dag`` stays cheap:

    import frontier_dag as fd
    run = fd.simulate("examples/pd_llama3_70b.yaml", set={"workload.num_requests": 500})
"""

import sys
from types import ModuleType

from frontier_dag.errors import FrontierDagError, FrontierDagWarning

__version__ = "0.1.0"
#: The API's names, looked up in frontier_dag.api when first used.
API = frozenset({"assemble", "critical_path", "iteration", "load_run", "render", "simulate", "sweep", "trace", "Run",
                 "SweepResult"})
__all__ = ["FrontierDagError", "FrontierDagWarning", "__version__", *sorted(API)]


class _Package(ModuleType):
    """``fd.render`` and ``fd.sweep`` share their names with subpackages, which the import
    system binds onto this package when they are first imported; the API's functions win
    (the subpackages stay importable by their dotted names: ``from frontier_dag.render
    import graphviz``)."""

    def __getattribute__(self, name: str):
        if name in API:
            import importlib

            return getattr(importlib.import_module("frontier_dag.api"), name)
        return super().__getattribute__(name)

    def __dir__(self):
        return sorted({*super().__dir__(), *API})


sys.modules[__name__].__class__ = _Package
