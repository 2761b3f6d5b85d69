"""Streams that share GPUs contend for them: the pass that adds what the hardware imposes.

The tracer records what a workflow wrote: ops on one stream run in program order, ops on
different streams wait only for what they depend on. But a pool's side streams
(``decode.comm``) and EP-rank streams (``decode.ep_rank[3]``) are timelines on the same
GPUs as its main stream (``decode``), and two kernels that each fill a GPU do not both run
at full speed on it. ``add_contention`` rewrites a traced graph once, before anything
prices it, with two rules:

* **Compute ops on the same GPUs run one at a time, in issue order.** The main stream and
  every side stream of a pool occupy all the GPUs of a replica; ``ep_rank[r]`` is GPU r
  (or group r) of the replica. An op on ``ep_rank[r]`` therefore waits for the compute op
  issued before it on the main stream, a side stream or ``ep_rank[r]``, never for
  ``ep_rank[s]``'s. Issue order is the graph's stable topological order: the order the
  workflow traced its ops, with ``g.depend`` respected.
* **A communication kernel that overlaps compute takes a share of the SMs.** For a
  collective (NCCL, DeepEP, ...) that the graph lets run concurrently with a compute op on
  its GPUs, a node of ``s x`` its cost joins those GPUs' compute order where the kernel
  was issued, ``s`` being the SMs its implementation holds over the GPU's SM count. The
  compute it overlaps is delayed by exactly that work; the collective itself keeps its
  full time on its own stream.

Why serialise rather than share the GPU? Processor sharing (two kernels each at half
speed while both run, conserving the sum of their work) gives every op a duration that
depends on what else runs meanwhile; a longest path over a DAG with fixed node weights
cannot express that, and evaluating it would need an event simulation per iteration.
Serialising in issue order conserves the same work, is what a GPU does with kernels that
each fill it (the host launches them in program order; a kernel occupies the SMs until
its blocks drain, so the next one starts as the first finishes), and keeps the
compile-once, evaluate-many structure. Its one pessimism: an op issued later waits for an
earlier-issued op on its GPUs even when that op is itself waiting on data, which a real
GPU would not do; the author controls it the way engines do, by the issue order
(software pipelining, as SGLang's two-batch overlap orders its micro-batches' ops).

The SM share of communication is work-conserving for the same reason: it adds to the
compute order exactly the SM time the kernel holds (its SMs over the GPU's, times its
duration), as a node whose weight is that multiple of the collective's template cost
(``scale`` on the node; ``CompiledStage`` and the series-parallel reduction carry it
as a coefficient, so no template is invented).

Edges added are tagged ``contention``; edges that the new ones make redundant are
dropped, so the graph stays transitively reduced and the series-parallel compiler still
collapses what it can. Where a stage has one stream per pool (every built-in but the
side-stream strategies), nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from frontier_dag.ir.graph import EventGraph, Resource

#: SMs that a communication kernel of each implementation holds while it runs, when the
#: config does not say (``cluster.comm_sms``). Sources:
#: - nccl: NCCL runs a collective on at most MAXCHANNELS CTAs, one per SM (32 in NCCL's
#:   src/include/device.h; the default of NCCL_MAX_CTAS);
#: - custom (vLLM's one-shot/two-shot all-reduce, csrc/custom_all_reduce.cuh:
#:   ``defaultBlockLimit = 36``), and auto (which picks NCCL or custom per message): 36;
#: - deepep_normal: DeepEP's high-throughput kernels use ``Buffer.num_sms = 20``
#:   (deep_ep/buffer.py);
#: - deepep_ll: DeepEP's low-latency kernels launch one block per SM for
#:   ``ceil(experts / ceil(experts / SMs))`` SMs (csrc/kernels/internode_ll.cu), nearly
#:   the whole GPU, and hold it until the data has arrived; see ``deepep_ll_sms``.
DEFAULT_COMM_SMS: dict[str, int] = {"nccl": 32, "custom": 36, "auto": 36, "deepep_normal": 20}
CONTENTION_EDGE = "contention"
SM_SHARE_SUFFIX = ".sm_share"


def deepep_ll_sms(num_experts: int, gpu_sms: int) -> int:
    """SMs DeepEP's low-latency dispatch/combine kernels occupy: one block per SM, each
    serving ``ceil(experts / SMs)`` experts (with the receive hook, ``return_recv_hook``,
    the kernels return while data is in flight and hold far fewer: set
    ``cluster.comm_sms.deepep_ll`` to what the engine measures)."""
    groups = -(-num_experts // gpu_sms)
    return min(gpu_sms, -(-num_experts // groups))


#: A function of (pool role, implementation) -> the share of the pool's SMs that a
#: communication kernel of that implementation holds, in [0, 1].
SmShare = Callable[[str, str], float]


def add_contention(graph: EventGraph, sm_share: SmShare) -> EventGraph:
    """Add to ``graph`` (in place) the ordering and SM-share nodes that GPUs shared by
    several streams impose (see the module docstring); returns it."""
    if not _shared(graph):
        return graph
    # issue order: the stable topological order, which is creation order unless g.depend
    # ordered an op before one traced earlier
    ids = graph.graph
    order = sorted(ids) if all(u < v for u, v in ids.edges) else graph.topological_order()
    plan = _plan(graph, order, sm_share)
    if plan.shares or plan.serialises:
        _apply(graph, order, plan)
    return graph


# -- which GPUs an op occupies ---------------------------------------------------------------

def _gpus(resource: Resource) -> int | None:
    """The GPUs of its pool's replica that ``resource`` runs on: None for all of them (a main
    or side stream), r for EP rank r."""
    return resource.rank


def _occupant(graph: EventGraph, node: int) -> tuple[tuple[str, str, int | None], int | None] | None:
    """(stage, pool role, pipeline stage), GPUs for an op that holds its GPUs' SMs: a compute
    op on a GPU stream. Each pipeline stage of a pool has GPUs of its own."""
    a = graph.graph.nodes[node]
    resource = graph.resources[a["resource"]]
    if resource.kind != "gpu" or a["kind"] != "compute" or graph.templates[a["template"]].family == "sync":
        return None
    return (a["stage"], resource.pool, resource.pp_stage), _gpus(resource)


def _communicator(graph: EventGraph, node: int) -> tuple[tuple[str, str, int | None], int | None] | None:
    a = graph.graph.nodes[node]
    resource = graph.resources[a["resource"]]
    if resource.kind != "gpu" or a["kind"] != "collective":
        return None
    return (a["stage"], resource.pool, resource.pp_stage), _gpus(resource)


@dataclass
class _ComputeOrder:
    """The compute order of one pool in one stage: the last op that held every GPU, and per
    rank the last op on it since then."""

    every: int | None = None
    rank: dict[int, int] = field(default_factory=dict)

    def before(self, gpus: int | None) -> set[int]:
        """The ops an op on ``gpus`` issued now must follow."""
        if gpus is None:
            found = set(self.rank.values())
            if self.every is not None:
                found.add(self.every)
            return found
        last = self.rank.get(gpus, self.every)
        return set() if last is None else {last}

    def issue(self, position: int, gpus: int | None) -> None:
        if gpus is None:
            self.every, self.rank = position, {}
        else:
            self.rank[gpus] = position


@dataclass
class _Plan:
    shares: dict[int, float]  # collective node -> its SM share, for those that overlap compute
    serialises: bool  # whether some compute op gains an ordering it did not have


def _plan(graph: EventGraph, order: list[int], sm_share: SmShare) -> _Plan:
    """Which collectives overlap compute on their GPUs once compute is serialised, and
    whether serialising adds any ordering at all."""
    position = {v: i for i, v in enumerate(order)}
    n = len(order)
    preds = [[position[u] for u in graph.graph.predecessors(v)] for v in order]
    occupant = [_occupant(graph, v) for v in order]
    orders: dict[tuple[str, str, int | None], _ComputeOrder] = {}
    ancestors = [0] * n
    serialises = False
    # per (stage, pool): the compute ops on every GPU, and on each rank
    on_all: dict[tuple[str, str, int | None], int] = {}
    on_rank: dict[tuple[tuple[str, str, int | None], int], int] = {}
    for i in range(n):
        anc = 0
        for p in preds[i]:
            anc |= ancestors[p] | (1 << p)
        if occupant[i] is not None:
            key, gpus = occupant[i]
            slot = orders.setdefault(key, _ComputeOrder())
            for p in slot.before(gpus):
                if not anc >> p & 1:
                    serialises = True
                    preds[i].append(p)
                    anc |= ancestors[p] | (1 << p)
            slot.issue(i, gpus)
            if gpus is None:
                on_all[key] = on_all.get(key, 0) | 1 << i
            else:
                on_rank[(key, gpus)] = on_rank.get((key, gpus), 0) | 1 << i
        ancestors[i] = anc
    descendants = [0] * n
    for i in range(n - 1, -1, -1):
        for p in preds[i]:
            descendants[p] |= descendants[i] | (1 << i)
    shares: dict[int, float] = {}
    for i, v in enumerate(order):
        comm = _communicator(graph, v)
        if comm is None:
            continue
        key, gpus = comm
        if gpus is None:
            compute = on_all.get(key, 0)
            for (k, _), mask in on_rank.items():
                if k == key:
                    compute |= mask
        else:
            compute = on_all.get(key, 0) | on_rank.get((key, gpus), 0)
        if compute & ~(ancestors[i] | descendants[i]):
            share = sm_share(key[1], str(graph.templates[graph.graph.nodes[v]["template"]].field("impl", "nccl")))
            if share > 0:
                shares[v] = min(1.0, share)
    return _Plan(shares, serialises)


def _shared(graph: EventGraph) -> bool:
    """Whether some stage runs ops of one pool on more than one of its GPU streams (only
    then can they contend)."""
    streams: dict[tuple[str, str, int | None], set[str]] = {}
    for _, a in graph.graph.nodes(data=True):
        resource = graph.resources[a["resource"]]
        if resource.kind == "gpu" and a["kind"] in ("compute", "collective"):
            streams.setdefault((a["stage"], resource.pool, resource.pp_stage), set()).add(resource.name)
    return any(len(s) > 1 for s in streams.values())


def _apply(graph: EventGraph, order: list[int], plan: _Plan) -> None:
    """Add the SM-share nodes and the compute order, keeping the graph transitively reduced."""
    g = graph.graph
    sequence: list[int] = []
    for v in order:
        sequence.append(v)
        if v in plan.shares:
            sequence.append(_share_node(graph, v, plan.shares[v]))
    position = {v: i for i, v in enumerate(sequence)}
    ancestors = [0] * len(sequence)
    orders: dict[tuple[str, str, int | None], _ComputeOrder] = {}
    for i, v in enumerate(sequence):
        existing = {position[u] for u in g.predecessors(v)}
        wanted = set(existing)
        found = _occupant(graph, v) if "share_of" not in g.nodes[v] else _communicator(graph, g.nodes[v]["share_of"])
        if found is not None:
            key, gpus = found
            slot = orders.setdefault(key, _ComputeOrder())
            wanted |= slot.before(gpus)
            slot.issue(i, gpus)
        implied = 0
        for p in wanted:
            implied |= ancestors[p]
        keep = {p for p in wanted if not implied >> p & 1}
        for p in existing - keep:
            g.remove_edge(sequence[p], v)
        for p in keep - existing:
            g.add_edge(sequence[p], v, dep=CONTENTION_EDGE)
        anc = 0
        for p in keep:
            anc |= ancestors[p] | (1 << p)
        ancestors[i] = anc


def _share_node(graph: EventGraph, comm: int, share: float) -> int:
    """A node on the compute order of ``comm``'s GPUs weighing ``share`` x its cost."""
    a = graph.graph.nodes[comm]
    resource = graph.resources[a["resource"]]
    if resource.rank is None:  # the SMs of every GPU: shown on the pool's (pipeline stage's) main stream
        name = resource.pool if resource.pp_stage is None else f"{resource.pool}.pp[{resource.pp_stage}]"
        on = graph.resources.setdefault(name, Resource(name, "gpu", resource.pool, pp_stage=resource.pp_stage))
    else:
        on = resource
    node = max(graph.graph.nodes, default=-1) + 1
    graph.graph.add_node(node, kind="collective", op=a["op"] + SM_SHARE_SUFFIX, resource=on.name, stage=a["stage"],
                         layer=a["layer"], micro_batch=a["micro_batch"], template=a["template"], where=a["where"],
                         scale=share, share_of=comm)
    return node
