"""Whether a stage's micro-batches can overlap at all, read from the graph alone.

A stage that splits its batch into m > 1 micro-batches does so to overlap them: one
micro-batch's attention while another is in the FFN pool, one's all-to-all while another
computes. When the issue order, the dependencies or the GPUs they share order every op of
each micro-batch before or after every op of the others, m > 1 overlaps nothing: it can
only add the cost of smaller kernels. ``serial_micro_batches`` finds those stages, for any
costs, so that the tracer can warn when the strategy is traced (``EventGraph.warnings``);
how much the micro-batches do overlap for a given batch is the iteration report's
(``frontier_dag.analysis.iteration``).
"""

from __future__ import annotations

from frontier_dag.ir.graph import EventGraph


def serial_micro_batches(graph: EventGraph) -> list[str]:
    """A warning for each stage with m > 1 micro-batches no two of whose ops (barriers
    aside) can run at the same time."""
    warnings = []
    for name, stage in graph.stages.items():
        if stage.micro_batches > 1 and not _can_overlap(graph, name):
            warnings.append(
                f"{stage.where or graph.name}: stage {name!r} splits its batch into {stage.micro_batches} micro-batches "
                "but they never overlap: stream order, dependencies and the GPUs they share run every op of one "
                "before or after every op of another, so more micro-batches only make smaller kernels. Issue one "
                "micro-batch's work while another is on a different pool or a communication stream (software "
                "pipelining, docs/dsl.md)")
    return warnings


def _can_overlap(graph: EventGraph, stage: str) -> bool:
    g = graph.graph
    nodes = [v for v in graph.topological_order() if g.nodes[v]["stage"] == stage]
    position = {v: i for i, v in enumerate(nodes)}
    preds = [[position[u] for u in g.predecessors(v) if u in position] for v in nodes]
    ancestors = [0] * len(nodes)
    for i, ps in enumerate(preds):
        for p in ps:
            ancestors[i] |= ancestors[p] | (1 << p)
    descendants = [0] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        for p in preds[i]:
            descendants[p] |= descendants[i] | (1 << i)
    of_batch: dict[int, int] = {}
    for i, v in enumerate(nodes):
        a = g.nodes[v]
        if a["kind"] != "sync" and a["micro_batch"] is not None:
            of_batch[a["micro_batch"]] = of_batch.get(a["micro_batch"], 0) | 1 << i
    work = 0
    for mask in of_batch.values():
        work |= mask
    for i, v in enumerate(nodes):
        mb = g.nodes[v]["micro_batch"]
        if mb is None or g.nodes[v]["kind"] == "sync":
            continue
        if work & ~of_batch[mb] & ~(ancestors[i] | descendants[i]):
            return True
    return False
