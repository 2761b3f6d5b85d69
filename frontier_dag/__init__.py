"""frontier-dag: a simulator of next-generation LLM inference systems.

Serving strategies are written in a small Python DSL (see ``frontier_dag.dsl``),
traced into event-dependency DAGs (``frontier_dag.ir``), weighted by operator
cost models (``frontier_dag.cost`` and ``frontier_dag.predictors``), and run
over many iterations by the cluster simulator (``frontier_dag.sim``).
"""

from frontier_dag.errors import FrontierDagError

__version__ = "0.1.0"
__all__ = ["FrontierDagError", "__version__"]
