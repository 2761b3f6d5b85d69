"""The workflow DSL: write a serving strategy as Python, trace it into an EventGraph.

    from frontier_dag.dsl import Param, workflow

    @workflow("my_strategy", "One line that says what it does", params={...})
    def my_strategy(g, **params):
        with g.stage("decode", pools=["decode"], serves="decode") as st:
            ...

See docs/dsl.md for a step-by-step guide.
"""

from frontier_dag.dsl.builder import BATCH_STATS, Builder, MicroBatch, Op, PoolView, StageView
from frontier_dag.dsl.registry import Param, WorkflowDef, get_workflow, list_workflows, workflow
from frontier_dag.dsl.trace import trace, trace_config
from frontier_dag.ir.symbols import Sym

__all__ = [
    "BATCH_STATS", "Builder", "MicroBatch", "Op", "Param", "PoolView", "StageView", "Sym",
    "WorkflowDef", "get_workflow", "list_workflows", "trace", "trace_config", "workflow",
]
