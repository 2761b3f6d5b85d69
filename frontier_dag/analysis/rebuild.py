"""One recorded iteration of a run, rebuilt as a DAG with its critical path.

The iteration log keeps a batch's statistics (sequences, prefill tokens, decoding
sequences, cached tokens), not its sequences. The rebuilt batch has those totals: the
decoding sequences share the cached tokens evenly, the prefill tokens are split evenly
over the other sequences, and MoE routing is drawn afresh, so the rebuilt DAG's time is
close to, not exactly, the recorded one (both are reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from frontier_dag.analysis.iteration import IterationReport, analyze_iteration, make_router
from frontier_dag.analysis.run_data import RunData
from frontier_dag.config.run import Deployment
from frontier_dag.cost.coster import MicroBatchLoad, split_micro_batches
from frontier_dag.cost.protocol import CostModel
from frontier_dag.ir.graph import EventGraph
from frontier_dag.streams import stream


@dataclass
class RebuiltIteration:
    row: int  # row of the sorted iteration table
    pool: str
    replica: int
    start_us: float
    recorded_us: float  # the iteration's recorded duration (with host overhead)
    deployment: Deployment
    graph: EventGraph  # the stage's subgraph
    report: IterationReport


def _spread(total: int, parts: int) -> np.ndarray:
    base = np.full(parts, total // parts, dtype=np.int64)
    base[: total % parts] += 1
    return base


def batch_of(row, serves: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(q, ctx, kv_out_tokens)`` with the totals of an iteration row."""
    seqs, decode = int(row["num_seqs"]), int(row["decode_seqs"])
    prefill_seqs = max(0, seqs - decode)
    prefill_tokens, ctx_tokens = int(row["prefill_tokens"]), int(row["ctx_tokens"])
    q = np.concatenate([np.ones(decode, dtype=np.int64),
                        np.maximum(_spread(prefill_tokens, prefill_seqs), 1) if prefill_seqs else np.zeros(0, np.int64)])
    holders = decode if decode else prefill_seqs
    ctx_share = _spread(ctx_tokens, holders) if holders else np.zeros(0, np.int64)
    ctx = np.zeros(len(q), dtype=np.int64)
    ctx[:holders] = ctx_share
    return q, ctx, prefill_tokens if serves == "prefill" else 0


def rebuild_iteration(run: RunData, row: int, cost_model: CostModel | None = None) -> RebuiltIteration:
    """Rebuild iteration ``row`` (of ``run.iterations``) with the run's config and cost model
    (or ``cost_model``)."""
    from frontier_dag.sim.assembly import assemble

    assembly = assemble(run.config, run.origin, cost_model=cost_model)
    deployment, graph, cost_model = assembly.deployment, assembly.graph, assembly.cost_model
    it = run.iterations.iloc[row]
    pool = run.pools[str(it["pool"])]
    sub = graph.subgraph(pool.stage)
    stage = sub.stages[pool.stage]
    q, ctx, kv_out = batch_of(it, stage.serves)
    if len(q) == 0:
        q, ctx = np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    loads = []
    for pq, pc in split_micro_batches(q, ctx, stage.micro_batches):
        share = int(kv_out * pq.sum() / max(q.sum(), 1)) if kv_out else 0
        loads.append(MicroBatchLoad(pq, pc, kv_out_tokens=share))
    router = make_router(sub, deployment, pool.stage, run.config.seed)
    if router is not None:
        rng = stream(run.config.seed, "rebuilt_routing", row)
        for load in loads:
            load.expert_loads = router.draw(int(load.q.sum()), rng)
    report = analyze_iteration(sub, deployment, cost_model, {pool.stage: loads})
    return RebuiltIteration(row, pool.name, int(it["replica"]), float(it["start_s"]) * 1e6, float(it["duration_us"]),
                            deployment, sub, report)


def slowest_iterations(run: RunData) -> dict[str, int]:
    """Row of the slowest iteration of every pool."""
    it = run.iterations
    out = {}
    for name in run.pools:
        rows = np.flatnonzero(it["pool"].astype(str).to_numpy() == name)
        if len(rows):
            out[name] = int(rows[np.argmax(it["duration_us"].to_numpy()[rows])])
    return out
