"""One iteration of a config: its critical path, node slack, and where the time goes.

Without a simulation there is no real batch, so ``representative_loads`` builds
one from the config: a decode stage holds ``max_num_seqs`` sequences halfway
through their outputs, a prefill stage as many mean-length prompts as fit in
``max_num_batched_tokens``, a co-located stage a chunked-prefill mix of both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from frontier_dag.config.run import Deployment
from frontier_dag.cost.batch import MicroBatchLoad, split_micro_batches, stage_env
from frontier_dag.cost.coster import StageCoster, UsageCounter
from frontier_dag.cost.protocol import CostModel
from frontier_dag.cost.queries import CATEGORIES, CATEGORY_OF_FAMILY
from frontier_dag.cost.routing import Router
from frontier_dag.ir.compile import CompiledStage
from frontier_dag.ir.graph import EventGraph
from frontier_dag.streams import stream


def mean_lengths(deployment: Deployment, sample: int = 2000) -> tuple[float, float]:
    """Mean prompt and output tokens of the config's workload (from a sample of it)."""
    from frontier_dag.sim.workload import generate_requests

    cfg = deployment.config.workload.model_copy(update={"num_requests": min(sample, deployment.config.workload.num_requests),
                                                         "warmup_requests": 0})
    requests = generate_requests(cfg, deployment.config.seed, deployment.origin.base_dir)
    return float(requests.prompt_tokens.mean()), float(requests.output_tokens.mean())


def make_router(graph: EventGraph, deployment: Deployment, stage: str, seed: int) -> Router | None:
    """The expert router of ``stage`` (None without expert ops): the simulator's, so that
    this iteration draws its routing as a run would, over the EP ranks the stage declares."""
    from frontier_dag.sim.predictor import stage_router

    return stage_router(graph, deployment, stage, seed)


def representative_loads(graph: EventGraph, deployment: Deployment, batch_size: int | None = None,
                         context: int | None = None) -> dict[str, list[MicroBatchLoad]]:
    """A plausible batch for every stage of ``graph`` (see the module docstring)."""
    sched = deployment.config.scheduler
    prompt, output = mean_lengths(deployment)
    prompt_len = max(1, int(round(prompt)))
    decode_ctx = context or max(1, int(round(prompt + output / 2)))
    seqs = batch_size or sched.max_num_seqs
    rng = stream(deployment.config.seed, "representative_batch")
    loads: dict[str, list[MicroBatchLoad]] = {}
    for name, stage in graph.stages.items():
        if stage.serves == "transfer":
            loads[name] = [MicroBatchLoad(np.array([prompt_len]), np.array([0]), kv_out_tokens=prompt_len)]
            continue
        if stage.serves == "decode":
            q, ctx = np.ones(seqs, dtype=np.int64), np.full(seqs, decode_ctx, dtype=np.int64)
        elif stage.serves == "prefill":
            count = max(1, min(seqs, sched.max_num_batched_tokens // prompt_len))
            q, ctx = np.full(count, min(prompt_len, sched.max_num_batched_tokens), dtype=np.int64), np.zeros(count, dtype=np.int64)
        else:  # chunked prefill: decodes plus one prompt chunk filling the token budget
            decodes = max(0, seqs - 1)
            chunk = max(1, min(prompt_len, sched.max_num_batched_tokens - decodes))
            q = np.concatenate([np.ones(decodes, dtype=np.int64), [chunk]])
            ctx = np.concatenate([np.full(decodes, decode_ctx, dtype=np.int64), [0]])
        parts = split_micro_batches(q, ctx, stage.micro_batches)
        finishing = prompt_len if stage.serves == "prefill" else 0
        loads[name] = [MicroBatchLoad(pq, pc, kv_out_tokens=finishing * len(pq)) for pq, pc in parts]
        router = make_router(graph, deployment, name, deployment.config.seed)
        if router is not None:
            for load in loads[name]:
                load.expert_loads = router.draw(int(load.q.sum()), rng)
    return loads


@dataclass
class StageOverlap:
    """How much of a stage's work runs at once: each resource's busy time over the stage's
    length, the share of it during which two or more micro-batches run, and what the same
    batch takes with one micro-batch."""

    micro_batches: int
    time_us: float
    busy: dict[str, float]
    micro_batch_overlap: float | None = None  # m > 1 only
    m1_time_us: float | None = None  # m > 1 only, where the workflow traces with m = 1

    def to_json(self) -> dict[str, Any]:
        return {"micro_batches": self.micro_batches, "time_us": self.time_us, "busy": self.busy,
                "micro_batch_overlap": self.micro_batch_overlap, "m1_time_us": self.m1_time_us}


@dataclass
class IterationReport:
    """The critical path of one iteration and what it is made of."""

    iteration_time_us: float
    stage_times_us: dict[str, float]
    critical_path: list[dict[str, Any]]
    attribution: dict[str, float]
    bubbles: dict[str, float]
    compiled: CompiledStage = field(repr=False)
    start_us: np.ndarray = field(repr=False)
    duration_us: np.ndarray = field(repr=False)
    slack_us: np.ndarray = field(repr=False)
    path_positions: list[int] = field(repr=False)
    #: per stage, with ``analyze_iteration(..., overlap=True)``
    overlap: dict[str, StageOverlap] = field(default_factory=dict)
    #: the traced graph's warnings, and the overlap report's
    warnings: list[str] = field(default_factory=list)
    #: per pipelined stage (``PipelineTimes``)
    pipeline: dict[str, PipelineTimes] = field(default_factory=dict)
    #: where the iteration's operator prices came from (``iteration_prices``)
    prices: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {"iteration_time_us": self.iteration_time_us, "stage_times_us": self.stage_times_us,
               "critical_path": self.critical_path, "attribution": self.attribution, "bubbles": self.bubbles}
        if self.overlap:
            out["overlap"] = {name: o.to_json() for name, o in self.overlap.items()}
        if self.pipeline:
            out["pipeline"] = {name: p.to_json() for name, p in self.pipeline.items()}
        out["prices"] = self.prices
        out["warnings"] = self.warnings
        return out


@dataclass
class PipelineTimes:
    """One micro-batch through a pipelined pool's stages: each stage's time (from its first
    op's start to its last op's end, the transfer into it aside) and each link's transfer
    into the next stage. With ``pp`` such batches in flight (frontier_dag.sim.pipeline) a
    batch leaves the pipeline every ``period_us`` (the slowest stage's time), and each
    other stage idles for the difference: its bubbles."""

    stages_us: list[float]
    links_us: list[float]

    @property
    def slowest_stage(self) -> int:
        return int(np.argmax(self.stages_us))

    @property
    def period_us(self) -> float:
        return max(self.stages_us)

    @property
    def bubbles(self) -> list[float]:
        """Each stage's idle share of a period in steady state."""
        return [1.0 - s / self.period_us if self.period_us > 0 else 0.0 for s in self.stages_us]

    def to_json(self) -> dict[str, Any]:
        return {"stages_us": self.stages_us, "links_us": self.links_us, "slowest_stage": self.slowest_stage,
                "period_us": self.period_us, "bubbles": self.bubbles}


def pipeline_times(graph: EventGraph, whole: CompiledStage, start: np.ndarray, weights: np.ndarray
                   ) -> dict[str, PipelineTimes]:
    """``PipelineTimes`` of every pipelined stage of an iteration priced on ``whole``."""
    position = {int(n): i for i, n in enumerate(whole.nodes.tolist())}
    out = {}
    for name in graph.stages:
        parts = graph.pipeline_stages(name)
        if parts is None:
            continue
        stages, links = [], []
        for nodes in parts:
            on_link = [graph.resources[graph.graph.nodes[n]["resource"]].pipeline_link for n in nodes]
            link = [position[n] for n, hop in zip(nodes, on_link, strict=True) if hop]
            own = [position[n] for n, hop in zip(nodes, on_link, strict=True) if not hop]
            for spans, out_list in ((own, stages), (link, links)):
                out_list.append(float(max(start[spans] + weights[spans]) - min(start[spans])) if spans else 0.0)
        out[name] = PipelineTimes(stages, links)
    return out


def analyze_iteration(graph: EventGraph, deployment: Deployment, cost_model: CostModel,
                      loads: dict[str, list[MicroBatchLoad]] | None = None, *, overlap: bool = False) -> IterationReport:
    """Price every stage for ``loads`` (default: representative) and find the critical path
    of the whole graph, stages joined by their cross-stage edges. ``overlap`` adds each
    stage's overlap report (``StageOverlap``; m = 1 traces the workflow again)."""
    loads = loads or representative_loads(graph, deployment)
    whole = CompiledStage(graph, None)
    global_costs = np.zeros(len(graph.templates))
    stage_times = {}
    overlaps: dict[str, StageOverlap] = {}
    usages: dict[str, UsageCounter] = {}
    for name in graph.stages:
        compiled = CompiledStage(graph, name)
        env, batches = stage_env(name, loads[name])
        coster = StageCoster(graph, compiled, cost_model)
        costs = coster.costs(env, batches)
        usages[name] = coster.usage
        global_costs[compiled.templates] = costs
        stage_times[name] = float(compiled.iteration_time(costs)[0])
        if overlap:
            overlaps[name] = _stage_overlap(graph, compiled, costs, stage_times[name])
    warnings = [*deployment.warnings, *graph.warnings]
    if overlap:
        warnings += _single_micro_batch(graph, deployment, cost_model, loads, overlaps)
    costs = global_costs[whole.templates]
    path, start, slack = whole.critical_path(costs)
    weights = whole.node_weights(costs)[0]
    total = float((start + weights).max()) if len(weights) else 0.0
    rows, by_category = [], dict.fromkeys(CATEGORIES, 0.0)
    for v in path:
        node = whole.nodes[v]
        attrs = graph.graph.nodes[node]
        family = graph.templates[attrs["template"]].family
        by_category[CATEGORY_OF_FAMILY.get(family, "waits_and_bubbles")] += float(weights[v])
        rows.append({"node": graph.label(node), "op": attrs["op"], "resource": attrs["resource"],
                     "layer": attrs["layer"], "micro_batch": attrs["micro_batch"],
                     "start_us": float(start[v]), "duration_us": float(weights[v])})
    by_category["waits_and_bubbles"] += max(0.0, total - sum(by_category.values()))
    attribution = {k: (v / total if total > 0 else 0.0) for k, v in by_category.items()}
    return IterationReport(total, stage_times, rows, attribution, _bubbles(graph, whole, start, weights),
                           whole, start, weights, slack, path, overlaps, warnings,
                           pipeline_times(graph, whole, start, weights), iteration_prices(usages))


def iteration_prices(usages: dict[str, UsageCounter]) -> dict[str, Any]:
    """The prices an iteration used, as a run's summary counts them: per source
    (``sources``), how many came from outside the data the models were fitted on
    (``out_of_range``), and those per stage and operator family (``out_of_range_by``)."""
    sources: dict[str, float] = {}
    for usage in usages.values():
        for source, n in usage.by_source().items():
            sources[source] = sources.get(source, 0.0) + n
    return {"sources": {k: int(round(v)) for k, v in sorted(sources.items(), key=lambda kv: -kv[1])},
            "out_of_range": int(sum(u.out_of_range for u in usages.values())),
            "out_of_range_by": {stage: {f: int(n) for f, n in sorted(u.out_of_range_by.items()) if n}
                                for stage, u in usages.items() if u.out_of_range}}


def _stage_overlap(graph: EventGraph, compiled: CompiledStage, costs: np.ndarray, time_us: float) -> StageOverlap:
    """Busy share of each resource of a stage, and how long two or more micro-batches run at once."""
    weights = compiled.node_weights(costs)[0]
    start = compiled.finish_times(costs)[0] - weights
    by_resource: dict[str, list[tuple[float, float]]] = {}
    by_batch: dict[int, list[tuple[float, float]]] = {}
    for v, node in enumerate(compiled.nodes.tolist()):
        if weights[v] <= 0:
            continue
        a = graph.graph.nodes[node]
        span = (float(start[v]), float(start[v] + weights[v]))
        by_resource.setdefault(a["resource"], []).append(span)
        if a["micro_batch"] is not None:
            by_batch.setdefault(a["micro_batch"], []).append(span)
    busy = {r: _covered(spans) / time_us if time_us > 0 else 0.0 for r, spans in sorted(by_resource.items())}
    m = graph.stages[compiled.stage].micro_batches
    together = None
    if m > 1:
        # time during which at least two micro-batches have an op running
        edges = sorted((t, d) for spans in by_batch.values() for s, e in _union(spans) for t, d in ((s, 1), (e, -1)))
        together, running, last = 0.0, 0, 0.0
        for t, d in edges:
            if running >= 2:
                together += t - last
            running, last = running + d, t
        together = together / time_us if time_us > 0 else 0.0
    return StageOverlap(m, time_us, busy, together)


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _covered(spans: list[tuple[float, float]]) -> float:
    return sum(e - s for s, e in _union(spans))


def _single_micro_batch(graph: EventGraph, deployment: Deployment, cost_model: CostModel,
                        loads: dict[str, list[MicroBatchLoad]], overlaps: dict[str, StageOverlap]) -> list[str]:
    """Price each stage with m > 1 micro-batches again with the same batch in one micro-batch
    (the workflow traced with one micro-batch per stage), into ``m1_time_us``; a warning
    where m > 1 is the slower."""
    split = [name for name, o in overlaps.items() if o.micro_batches > 1]
    if not split or graph.name != deployment.config.workflow.name:
        return []
    from frontier_dag.dsl import trace_config
    from frontier_dag.errors import FrontierDagError

    try:
        _, single = trace_config(deployment.config, deployment.origin, deployment, micro_batches=1)
    except FrontierDagError as exc:
        return [f"stage {', '.join(split)}: cannot say what one micro-batch would take: tracing the workflow with "
                f"one micro-batch per stage failed: {exc}"]
    warnings = []
    for name in split:
        compiled = CompiledStage(single, name)
        env, batches = stage_env(name, [merge_loads(loads[name])])
        costs = StageCoster(single, compiled, cost_model).costs(env, batches)
        o = overlaps[name]
        o.m1_time_us = float(compiled.iteration_time(costs)[0])
        if o.time_us > o.m1_time_us:
            warnings.append(f"stage {name!r}: {o.micro_batches} micro-batches take {o.time_us / 1000:.3f} ms, more than "
                            f"one would ({o.m1_time_us / 1000:.3f} ms) for this batch; they run at once for "
                            f"{o.micro_batch_overlap:.0%} of the stage")
    return warnings


def merge_loads(parts: list[MicroBatchLoad]) -> MicroBatchLoad:
    """One micro-batch holding the sequences (and routed tokens) of ``parts``."""
    experts = [p.expert_loads for p in parts]
    return MicroBatchLoad(np.concatenate([p.q for p in parts]), np.concatenate([p.ctx for p in parts]),
                          kv_out_tokens=sum(p.kv_out_tokens for p in parts),
                          expert_loads=None if any(e is None for e in experts) else np.sum(experts, axis=0))


def _bubbles(graph: EventGraph, whole: CompiledStage, start: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Idle fraction of each GPU stream between the start of its first op and the end of its last."""
    busy: dict[str, list[tuple[float, float]]] = {}
    for v, node in enumerate(whole.nodes):
        attrs = graph.graph.nodes[node]
        if graph.resources[attrs["resource"]].kind == "gpu" and weights[v] > 0:
            busy.setdefault(attrs["resource"], []).append((start[v], start[v] + weights[v]))
    out = {}
    for resource, spans in sorted(busy.items()):
        spans.sort()
        covered, end = 0.0, -np.inf
        for s, e in spans:
            covered += max(0.0, e - max(s, end))
            end = max(end, e)
        # only between the stream's first and last op: in PD the decode pool waiting for the
        # prefill of the same request, or the prefill pool once it has handed over, is idle
        # but not a bubble of its own iteration
        window = end - spans[0][0]
        out[resource] = float(1.0 - covered / window) if window > 0 else 0.0
    return out
