"""Folding an iteration's DAG for a drawing: repeated layers drawn once, with a count.

A model's layers repeat: consecutive layers of a stage whose ops are the same (same
names, streams, micro-batches and kinds, in the same order) form a *run*, drawn as one
layer in a box labelled ``layers 3-60 x58``. A dense model is one run; DeepSeek-V3 is its
dense first layers and then its MoE layers. The first ``layers`` layers of each stage can
be kept apart, one box each. Per layer, only the ``ranks`` slowest EP ranks of an op are
drawn; the others fold into one node.

``fold`` returns display groups: each group is a set of compiled positions drawn as one
node (an op at the same place in every layer of a run; or the folded ranks of an op;
or a node outside the layers).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from frontier_dag.analysis.iteration import IterationReport
from frontier_dag.ir.graph import EventGraph


@dataclass(frozen=True)
class LayerRun:
    stage: str
    first: int
    last: int
    count: int

    @property
    def label(self) -> str:
        if self.count == 1:
            return f"layer {self.first}"
        return f"layers {self.first}-{self.last} x{self.count}"


@dataclass
class Group:
    """One drawn node: the positions it stands for and what to say about them."""

    key: tuple
    members: list[int] = field(default_factory=list)
    run: LayerRun | None = None
    rank: int | None = None  # an EP rank's op: its rank
    folded_ranks: int = 0  # >0: this node stands for that many ranks

    def per_layer_us(self, report: IterationReport) -> float:
        """Mean time of one instance (one layer's op; for folded ranks, the slowest)."""
        durations = report.duration_us[self.members]
        if self.folded_ranks:
            return float(durations.max())
        return float(durations.mean())

    def slack_us(self, report: IterationReport) -> float:
        return float(report.slack_us[self.members].min())


@dataclass
class Folded:
    groups: dict[tuple, Group]
    group_of: dict[int, tuple]  # position -> group key
    runs: list[LayerRun]
    layer_of: dict[int, int | None]  # position -> layer
    run_of: dict[int, LayerRun | None]  # position -> its run


def layer_runs(graph: EventGraph, positions: list[int], nodes: np.ndarray, keep: int = 0) -> dict[tuple[str, int], LayerRun]:
    """The run of every (stage, layer) among ``positions`` (compiled positions; ``nodes``
    maps them to graph nodes); the first ``keep`` layers of a stage are runs of one."""
    ops: dict[tuple[str, int], list[tuple]] = defaultdict(list)
    for v in sorted(positions, key=lambda v: nodes[v]):
        a = graph.graph.nodes[nodes[v]]
        if a["layer"] is not None:
            ops[(a["stage"], a["layer"])].append((a["op"], a["resource"], a["micro_batch"], a["kind"]))
    runs: dict[tuple[str, int], LayerRun] = {}
    by_stage: dict[str, list[int]] = defaultdict(list)
    for stage, layer in ops:
        by_stage[stage].append(layer)
    for stage, layer_ids in by_stage.items():
        layer_ids.sort()
        start = 0
        while start < len(layer_ids):
            end = start + 1
            if layer_ids[start] >= keep:
                signature = ops[(stage, layer_ids[start])]
                while (end < len(layer_ids) and layer_ids[end] == layer_ids[end - 1] + 1
                       and ops[(stage, layer_ids[end])] == signature):
                    end += 1
            run = LayerRun(stage, layer_ids[start], layer_ids[end - 1], end - start)
            for layer in layer_ids[start:end]:
                runs[(stage, layer)] = run
            start = end
    return runs


def fold(graph: EventGraph, report: IterationReport, positions: list[int], layers: int = 0, ranks: int = 4) -> Folded:
    """Display groups of ``positions`` (see the module docstring)."""
    nodes = report.compiled.nodes
    critical = set(report.path_positions)
    runs = layer_runs(graph, positions, nodes, keep=layers)
    index_in_layer: dict[int, int] = {}
    seen: dict[tuple[str, int], int] = defaultdict(int)
    group_of: dict[int, tuple] = {}
    layer_of: dict[int, int | None] = {}
    run_of: dict[int, LayerRun | None] = {}
    rank_of: dict[int, int | None] = {}
    for v in sorted(positions, key=lambda v: nodes[v]):
        a = graph.graph.nodes[nodes[v]]
        layer = a["layer"]
        layer_of[v] = layer
        rank_of[v] = graph.resources[a["resource"]].rank
        if layer is None:
            run_of[v] = None
            group_of[v] = ("node", v)
            continue
        run = runs[(a["stage"], layer)]
        run_of[v] = run
        i = seen[(a["stage"], layer)]
        seen[(a["stage"], layer)] += 1
        index_in_layer[v] = i
        group_of[v] = ("op", run.stage, run.first, i)
    # per op and micro-batch of a run, only the `ranks` slowest EP ranks keep a node of their own
    by_op: dict[tuple, dict[tuple, list[int]]] = defaultdict(lambda: defaultdict(list))
    for v, key in group_of.items():
        if key[0] == "op" and rank_of[v] is not None:
            a = graph.graph.nodes[nodes[v]]
            by_op[(key[1], key[2], a["micro_batch"], a["op"])][key].append(v)
    folded_ranks: dict[tuple, int] = {}
    for op_key, rank_groups in by_op.items():
        order = sorted(rank_groups, key=lambda k: (not any(v in critical for v in rank_groups[k]),
                                                   -float(report.duration_us[rank_groups[k]].max())))
        for key in order[ranks:]:
            for v in rank_groups[key]:
                group_of[v] = ("ranks", *op_key)
        if len(order) > ranks:
            folded_ranks[("ranks", *op_key)] = len(order) - ranks
    groups: dict[tuple, Group] = {}
    for v in sorted(group_of, key=lambda v: nodes[v]):
        key = group_of[v]
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(key, run=run_of[v], rank=rank_of[v] if key[0] == "op" else None,
                                        folded_ranks=folded_ranks.get(key, 0))
        group.members.append(v)
    ordered_runs = sorted({r for r in runs.values()}, key=lambda r: (r.stage, r.first))
    return Folded(groups, group_of, ordered_runs, layer_of, run_of)


def drawn_edges(folded: Folded, report: IterationReport) -> dict[tuple[tuple, tuple], bool]:
    """Edges between groups -> whether one of them is on the critical path. An edge from one
    layer of a run to the next is the repetition the box's count says, not drawn."""
    path = set(zip(report.path_positions, report.path_positions[1:], strict=False))
    edges: dict[tuple[tuple, tuple], bool] = {}
    for v, preds in enumerate(report.compiled.pred_lists):
        if v not in folded.group_of:
            continue
        for u in preds:
            if u not in folded.group_of:
                continue
            a, b = folded.group_of[u], folded.group_of[v]
            if a == b:
                continue
            run = folded.run_of[u]
            if run is not None and run == folded.run_of[v] and folded.layer_of[u] != folded.layer_of[v]:
                continue
            edges[(a, b)] = edges.get((a, b), False) or (u, v) in path
    return edges


def chains(folded: Folded, edges: dict[tuple[tuple, tuple], bool], stream_of: dict[tuple, str],
           mergeable: set[tuple]) -> list[list[tuple]]:
    """Groups in maximal series chains: ``a -> b`` joins a chain when it is ``a``'s only
    edge out and ``b``'s only edge in, both run on the same stream in the same run of
    layers, and both are ``mergeable``. Each chain is drawn as one box with a row per op;
    every group is in exactly one chain (most in a chain of one)."""
    outs: dict[tuple, list[tuple]] = defaultdict(list)
    ins: dict[tuple, list[tuple]] = defaultdict(list)
    for a, b in edges:
        outs[a].append(b)
        ins[b].append(a)

    def joins(a: tuple, b: tuple) -> bool:
        return (len(outs[a]) == 1 and len(ins[b]) == 1 and a in mergeable and b in mergeable
                and stream_of[a] == stream_of[b] and folded.groups[a].run == folded.groups[b].run)

    result = []
    for key in folded.groups:
        if len(ins[key]) == 1 and joins(ins[key][0], key):
            continue  # inside a chain started earlier
        chain = [key]
        while len(outs[chain[-1]]) == 1 and joins(chain[-1], outs[chain[-1]][0]):
            chain.append(outs[chain[-1]][0])
        result.append(chain)
    return result
