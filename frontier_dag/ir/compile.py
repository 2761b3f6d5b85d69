"""Compile once, evaluate many: a stage's DAG as numpy arrays.

The structure of a stage is fixed when the workflow is traced; per iteration only
the template costs change. ``CompiledStage`` therefore precomputes

* a topological order with nodes grouped by level, so that the finish times of a
  whole level are one vectorised step (``finish_times``, the reference evaluator,
  also used for critical paths), and
* a series-parallel reduction of the DAG into a short program over template
  costs (``iteration_time``): a chain is a weighted sum, parallel branches (EP ranks)
  are a max, and repeated layers cost one multiply. What does not reduce (the
  ping-pong grid of AF) is evaluated level by level on the reduced nodes.

Both evaluate ``k`` iterations at once: costs have shape ``(k, templates)``.
"""

from __future__ import annotations

import numpy as np

from frontier_dag.errors import GraphError
from frontier_dag.ir.graph import EventGraph
from frontier_dag.ir.levels import Levels
from frontier_dag.ir.reduce import ReducedProgram, reduce_series_parallel


class CompiledStage:
    """One stage of an EventGraph (or, for ``stage=None``, the whole graph), ready to evaluate.

    ``nodes[i]`` is the graph node at position i of the topological order;
    ``templates`` are the graph template ids the stage uses, and ``node_template[i]``
    indexes into them; node i weighs ``node_scale[i]`` times its template's cost (1 for
    every node but the SM-share nodes of ``frontier_dag.ir.contention``). Costs passed in
    are ``(k, len(templates))`` arrays.
    """

    def __init__(self, graph: EventGraph, stage: str | None):
        if stage is not None and stage not in graph.stages:
            raise GraphError(f"{graph.name}: no stage {stage!r}; stages are {', '.join(graph.stages)}")
        self.graph = graph
        self.stage = stage
        # stage None: the whole graph, stages joined by their cross-stage edges
        sub = graph.graph if stage is None else graph.graph.subgraph(graph.stage_nodes(stage))
        order = sub.topological_order()
        position = {v: i for i, v in enumerate(order)}
        self.nodes = np.array(order, dtype=np.int64)
        template_of = [graph.graph.nodes[v]["template"] for v in order]
        self.templates = np.array(sorted(set(template_of)), dtype=np.int64)
        local = {t: i for i, t in enumerate(self.templates.tolist())}
        self.node_template = np.array([local[t] for t in template_of], dtype=np.int64)
        self.node_scale = np.array([graph.scale(v) for v in order], dtype=float)
        self._scaled = bool((self.node_scale != 1.0).any())
        self.pred_lists = [sorted(position[u] for u in sub.predecessors(v)) for v in order]
        self.levels = Levels.build(len(order), self.pred_lists)
        self.program: ReducedProgram = reduce_series_parallel(self.pred_lists, self.node_template, len(self.templates),
                                                              self.node_scale if self._scaled else None)

    def __len__(self) -> int:
        return len(self.nodes)

    def node_weights(self, costs: np.ndarray) -> np.ndarray:
        """Per-node weights ``(k, n)`` from template costs ``(k, T)``."""
        weights = np.atleast_2d(costs)[:, self.node_template]
        return weights * self.node_scale if self._scaled else weights

    def finish_times(self, costs: np.ndarray) -> np.ndarray:
        """Finish time of every node (reference evaluator), shape ``(k, n)``."""
        return self.levels.finish(self.node_weights(costs))

    def iteration_time(self, costs: np.ndarray) -> np.ndarray:
        """The longest path through the stage for each of ``k`` iterations, shape ``(k,)``."""
        return self.program.evaluate(np.atleast_2d(costs))

    def iteration_time_one(self, costs: np.ndarray) -> float:
        """``iteration_time`` for a single iteration's costs ``(T,)``, as a float."""
        return self.program.evaluate_one(costs)

    def critical_path(self, costs: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray]:
        """For one iteration's costs ``(T,)``: the positions on the longest path (source to
        sink), and every node's start time and slack (how much it could grow without
        lengthening the iteration)."""
        weights = self.node_weights(costs)[0]
        finish = self.levels.finish(weights[None, :])[0]
        n = len(weights)
        start = finish - weights
        total = float(finish.max()) if n else 0.0
        # latest finish that keeps the total: backward pass in reverse topological order
        latest = np.full(n, total)
        for v in range(n - 1, -1, -1):
            for u in self.pred_lists[v]:
                latest[u] = min(latest[u], latest[v] - weights[v])
        slack = np.maximum(latest - finish, 0.0)
        path = []
        if n:
            v = int(np.argmax(finish))
            while True:
                path.append(v)
                preds = self.pred_lists[v]
                if not preds:
                    break
                v = max(preds, key=lambda u: (finish[u], -u))
                if finish[v] + 1e-9 < start[path[-1]]:
                    break
            path.reverse()
        return path, start, slack


def compile_stages(graph: EventGraph) -> dict[str, CompiledStage]:
    """Compile every stage of ``graph``."""
    return {name: CompiledStage(graph, name) for name in graph.stages}
