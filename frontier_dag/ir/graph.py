"""The IR: an EventGraph is one iteration of one strategy as a DAG.

Nodes are operations; each has a kind (compute, collective, transfer, sync), the
resource that executes it, the stage (a pool's iteration) it belongs to, its layer
and micro-batch, the cost template that prices it, and the DSL file:line that
created it. Edges are data or ordering dependencies; ops on one resource within a
stage are chained in program order (stream semantics). A node may carry a ``scale``: its
weight is that multiple of its template's cost (1 when absent; the contention pass's
SM-share nodes weigh a fraction of a communication kernel's time).

The DAG is a ``frontier_dag.ir.dag.Dag``: networkx's ``DiGraph`` interface and orders
without importing networkx (``graph.graph.to_networkx()`` gives a ``DiGraph`` for its
algorithms). Weights live on nodes, not edges: evaluate with ``frontier_dag.ir.compile``,
never with ``nx.dag_longest_path`` (which reads edge weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from frontier_dag.errors import GraphError
from frontier_dag.ir.dag import Dag
from frontier_dag.ir.symbols import Sym

NodeKind = Literal["compute", "collective", "transfer", "sync"]
NODE_KINDS = ("compute", "collective", "transfer", "sync")
NODE_ATTRS = ("kind", "op", "resource", "stage", "layer", "micro_batch", "template", "where")


@dataclass(frozen=True)
class Resource:
    """What executes operations: a pool's GPU stream (``decode``), one EP rank's stream
    (``decode.ep_rank[3]``), or a link between pools (``link:prefill->decode``). With
    pipeline parallelism each stage of a pool has its own streams (``decode.pp[1]``,
    ``decode.pp[1].ep_rank[3]``) and a link from the stage before it
    (``link:decode.pp[0]->decode.pp[1]``)."""

    name: str
    kind: Literal["gpu", "link"]
    pool: str  # the role of the pool it belongs to (a link: its source pool)
    rank: int | None = None
    dst: str | None = None  # a link's destination pool role
    pp_stage: int | None = None  # the pipeline stage whose GPUs it runs on (a link: the stage it feeds)

    @property
    def pipeline_link(self) -> bool:
        """A link between two pipeline stages of one pool."""
        return self.kind == "link" and self.pp_stage is not None


@dataclass(frozen=True)
class Template:
    """How to price a node. Nodes with equal templates cost the same in an iteration
    (repeated layers share them), so each iteration prices templates, not nodes.

    ``family`` is a cost family of ``frontier_dag.cost.queries``, or ``attention`` / ``mla``
    (the batch decides prefill, decode or mixed), or ``sync`` (free). ``fields`` maps query
    columns to static values or Syms. ``batch`` names the micro-batch whose sequence lengths
    an attention op reads; ``routing`` is ``(batch, layer, rank)`` for an expert op. ``gpu``
    names the GPU that runs the op when its pool's differs from the deployment's (None: the
    deployment's GPU); it picks the cost model that prices it.
    """

    family: str
    fields: tuple[tuple[str, Any], ...] = ()
    batch: str | None = None
    routing: tuple[str, int, int] | None = None
    gpu: str | None = None

    def field(self, name: str, default: Any = None) -> Any:
        for key, value in self.fields:
            if key == name:
                return value
        return default

    def describe(self) -> str:
        parts = [f"{k}={v.source() if isinstance(v, Sym) else v}" for k, v in self.fields]
        if self.batch:
            parts.append(f"batch={self.batch}")
        if self.routing:
            parts.append(f"routing={self.routing[0]}/L{self.routing[1]}/r{self.routing[2]}")
        if self.gpu:
            parts.append(f"gpu={self.gpu}")
        return f"{self.family}({', '.join(parts)})"


@dataclass
class Stage:
    """One pool's iteration (or several pools stepping together, as in AF)."""

    name: str
    pools: tuple[str, ...]
    micro_batches: int = 1
    #: which requests' work it does: prefill, decode, both (chunked prefill mixes them), or
    #: transfer (it moves finished prefills' KV between pools)
    serves: Literal["prefill", "decode", "both", "transfer"] = "both"
    #: the DSL file:line that opened it (``with g.stage(...)``)
    where: str = ""
    #: speculative decoding (multi-token prediction): the tokens each decoding sequence runs
    #: through the model per iteration (1 + draft tokens, verified together) and the tokens
    #: it emits per iteration on average (1 + the accepted draft tokens)
    queries_per_seq: int = 1
    tokens_per_step: float = 1.0


@dataclass
class EventGraph:
    """A traced workflow: a DAG of operations plus the tables its node attributes index."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    graph: Dag = field(default_factory=Dag)
    templates: list[Template] = field(default_factory=list)
    resources: dict[str, Resource] = field(default_factory=dict)
    stages: dict[str, Stage] = field(default_factory=dict)
    #: How tokens are routed to experts (a RoutingSpec), where the workflow has expert ops.
    routing: Any = None
    #: What the author should know about the traced strategy (a stage whose micro-batches
    #: never overlap, ...): reported by the commands and in the run summary.
    warnings: list[str] = field(default_factory=list)
    #: Which pools new requests enter and the rule that picks one (a ``dsl.entry.Entry``): as
    #: the workflow declared it (``g.entry``), then, once traced, as the run uses it.
    entry: Any = None

    # -- reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def node(self, n: int) -> dict[str, Any]:
        return self.graph.nodes[n]

    def label(self, n: int) -> str:
        """A short readable name: ``L3.mb1.qkv_proj``."""
        a = self.graph.nodes[n]
        parts = []
        if a["layer"] is not None:
            parts.append(f"L{a['layer']}")
        if a["micro_batch"] is not None:
            parts.append(f"mb{a['micro_batch']}")
        parts.append(a["op"])
        return ".".join(parts)

    def topological_order(self) -> list[int]:
        """Topological order with ties broken by creation order, so it is stable."""
        return self.graph.topological_order()

    def scale(self, n: int) -> float:
        """The multiple of its template's cost that node ``n`` weighs (1 unless a pass set it)."""
        return self.graph.nodes[n].get("scale", 1.0)

    def weight_groups(self) -> dict[str, dict[str, int | None]]:
        """The weights each pool's ops read, by pool role: weight group -> the split its ops
        declared (``g.weights``; None: the group's usual split; the smallest where ops of one
        group declare several). A GEMM or expert op traced without a group adds
        ``undeclared`` (the pool then holds its role's weights too)."""
        out: dict[str, dict[str, int | None]] = {}
        for _, a in self.graph.nodes(data=True):
            resource = self.resources[a["resource"]]
            if resource.kind != "gpu":
                continue
            groups = out.setdefault(resource.pool, {})
            if "weights" in a:
                group, split = a["weights"]
                if group not in groups or (split is not None and (groups[group] is None or split < groups[group])):
                    groups[group] = split
            elif self.templates[a["template"]].family in ("gemm", "moe_grouped_gemm"):
                groups["undeclared"] = None
        return out

    def stage_nodes(self, stage: str) -> list[int]:
        return [n for n, s in self.graph.nodes(data="stage") if s == stage]

    def pipeline_stages(self, stage: str) -> list[list[int]] | None:
        """The nodes of ``stage`` by pipeline stage, first to last, where its pool runs
        pipeline parallel (None otherwise): each stage's ops, the transfer into it from the
        stage before (its GPUs receive it before they compute), and the ops of no stage (a
        KV transfer to another pool) with the stage of the first op they wait for."""
        nodes = self.stage_nodes(stage)
        own = {n: self.resources[self.graph.nodes[n]["resource"]].pp_stage for n in nodes}
        if all(k is None for k in own.values()):
            return None
        for n in self.topological_order():
            if n in own and own[n] is None:
                preds = [own[p] for p in self.graph.predecessors(n) if own.get(p) is not None]
                own[n] = min(preds) if preds else 0
        out: list[list[int]] = [[] for _ in range(max(own.values()) + 1)]
        for n in nodes:
            out[own[n]].append(n)
        return out

    def subgraph(self, stage: str) -> EventGraph:
        """The nodes and edges of one stage, sharing templates and resources."""
        if stage not in self.stages:
            raise GraphError(f"{self.name}: no stage {stage!r}; stages are {', '.join(self.stages)}")
        sub = self.graph.subgraph(self.stage_nodes(stage)).copy()
        return EventGraph(self.name, self.params, sub, self.templates, self.resources,
                          {stage: self.stages[stage]}, self.routing, list(self.warnings), self.entry)

    def restrict(self, nodes: list[int]) -> EventGraph:
        """The graph of ``nodes`` and the edges among them (a part of a stage, such as one
        pipeline stage's ops), sharing templates, resources and stages."""
        return EventGraph(self.name, self.params, self.graph.subgraph(nodes).copy(), self.templates, self.resources,
                          self.stages, self.routing, list(self.warnings))

    # -- checking ------------------------------------------------------------------------------
    def validate(self) -> EventGraph:
        """Check the invariants every pass relies on; raise GraphError naming the node."""
        g = self.graph
        for n, attrs in g.nodes(data=True):
            missing = [a for a in NODE_ATTRS if a not in attrs]
            if missing:
                raise GraphError(f"{self.name}: node {n} lacks attribute(s) {', '.join(missing)}")
            where = attrs["where"]
            if attrs["kind"] not in NODE_KINDS:
                raise GraphError(f"{where}: node {self.label(n)} has kind {attrs['kind']!r}; expected one of {NODE_KINDS}")
            if attrs["resource"] not in self.resources:
                raise GraphError(f"{where}: node {self.label(n)} runs on unknown resource {attrs['resource']!r}")
            if not 0 <= attrs["template"] < len(self.templates):
                raise GraphError(f"{where}: node {self.label(n)} has no cost template")
            if attrs["stage"] not in self.stages:
                raise GraphError(f"{where}: node {self.label(n)} belongs to unknown stage {attrs['stage']!r}")
            if not attrs.get("scale", 1.0) >= 0:
                raise GraphError(f"{where}: node {self.label(n)} has scale {attrs['scale']!r}; expected a number >= 0")
        if not g.is_acyclic():
            cycle = g.find_cycle()
            path = " -> ".join(f"{self.label(u)} ({g.nodes[u]['where']})" for u, _ in cycle)
            raise GraphError(f"{self.name}: dependency cycle: {path} -> {self.label(cycle[0][0])}")
        return self

    # -- golden text ---------------------------------------------------------------------------
    def dump(self, locations: bool = False) -> str:
        """A stable text form for golden files and diffs: resources, stages, templates, then
        nodes in topological order with their predecessors."""
        order = self.topological_order()
        index = {n: i for i, n in enumerate(order)}
        lines = [f"workflow {self.name} {sorted(self.params.items())}"]
        for r in sorted(self.resources.values(), key=lambda r: r.name):
            lines.append(f"resource {r.name} kind={r.kind} pool={r.pool}" + (f" dst={r.dst}" if r.dst else ""))
        for s in self.stages.values():
            lines.append(f"stage {s.name} pools={','.join(s.pools)} micro_batches={s.micro_batches} serves={s.serves}"
                         + (f" queries_per_seq={s.queries_per_seq} tokens_per_step={s.tokens_per_step:.6g}"
                            if s.queries_per_seq != 1 or s.tokens_per_step != 1 else ""))
        if self.routing is not None:
            lines.append(f"routing {self.routing}")
        if self.entry is not None and len(self.entry.pools) > 1:
            lines.append(f"entry {','.join(self.entry.pools)} {self.entry.describe()}")
        used = sorted({self.graph.nodes[n]["template"] for n in order})
        tid = {t: i for i, t in enumerate(used)}
        for t in used:
            lines.append(f"template t{tid[t]} {self.templates[t].describe()}")
        for n in order:
            a = self.graph.nodes[n]
            preds = ",".join(f"n{index[p]}" for p in sorted(self.graph.predecessors(n), key=index.get))
            line = f"n{index[n]} {a['stage']} {self.label(n)} {a['kind']} on={a['resource']} t{tid[a['template']]}"
            if a.get("scale", 1.0) != 1.0:
                line += f"x{a['scale']:.6g}"
            line += f" <- {preds}" if preds else ""
            if locations:
                line += f" @{a['where']}"
            lines.append(line)
        return "\n".join(lines) + "\n"
