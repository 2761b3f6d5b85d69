"""The ExecutionPredictor: how long one iteration of a stage takes for a given batch.

It binds the batch's statistics to the stage's Syms, draws the expert routing for
MoE stages, prices the templates (one call per operator family) and evaluates
the compiled DAG. Nothing here loops over the DAG's nodes.
"""

from __future__ import annotations

import numpy as np

from frontier_dag.config.run import Deployment
from frontier_dag.cost.coster import MicroBatchLoad, StageCoster, split_micro_batches
from frontier_dag.cost.protocol import CostModel
from frontier_dag.cost.routing import Router, RoutingSpec
from frontier_dag.ir.compile import CompiledStage
from frontier_dag.ir.graph import EventGraph

STAT_NAMES = ("tokens", "seqs", "prefill_tokens", "prefill_seqs", "decode_seqs", "ctx_tokens", "kv_tokens", "kv_out_tokens")


def stage_router(graph: EventGraph, deployment: Deployment, stage: str, seed: int) -> Router | None:
    """The router that draws expert loads for ``stage``, if it has expert ops."""
    if deployment.model.moe is None or not any(
        graph.templates[graph.graph.nodes[n]["template"]].routing for n in graph.stage_nodes(stage)
    ):
        return None
    pools = graph.stages[stage].pools
    ranks = sum(1 for r in graph.resources.values() if r.rank is not None and r.pool in pools) or 1
    spec = graph.routing if isinstance(graph.routing, RoutingSpec) else RoutingSpec()
    moe = deployment.model.moe
    return Router(spec, moe.num_experts, moe.top_k, ranks, deployment.model.num_layers, seed)


class ExecutionPredictor:
    """Iteration time of one stage, in microseconds, from the batch's sequences."""

    def __init__(self, graph: EventGraph, stage: str, deployment: Deployment, cost_model: CostModel,
                 seed: int = 0, overhead_us: float = 0.0):
        self.stage = stage
        self.compiled = CompiledStage(graph, stage)
        self.coster = StageCoster(graph, self.compiled, cost_model)
        self.micro_batches = graph.stages[stage].micro_batches
        self.router = stage_router(graph, deployment, stage, seed)
        self.rng = np.random.default_rng([seed, 104729])
        self.overhead_us = overhead_us
        self._keys = [[f"{stage}.mb{i}.{s}" for s in STAT_NAMES] for i in range(self.micro_batches)]
        self._batch_keys = [f"{stage}.mb{i}" for i in range(self.micro_batches)]

    def time_us(self, q: np.ndarray, ctx: np.ndarray, kv_out_tokens: int = 0) -> float:
        """One iteration over sequences with ``q`` new and ``ctx`` cached tokens each."""
        if self.micro_batches == 1:
            parts = [(q, ctx)]
        else:
            parts = split_micro_batches(q, ctx, self.micro_batches)
        env: dict[str, int] = {}
        batches: dict[str, MicroBatchLoad] = {}
        for i, (pq, pc) in enumerate(parts):
            # kv_out is spread over micro-batches in proportion to their tokens
            load = MicroBatchLoad(pq, pc, kv_out_tokens if i == 0 else 0)
            if self.router is not None:
                load.expert_loads = self.router.draw(int(pq.sum()), self.rng)
            batches[self._batch_keys[i]] = load
            env.update(zip(self._keys[i], load.stats().values(), strict=True))
        costs = self.coster.costs(env, batches)
        return float(self.compiled.iteration_time(costs[None, :])[0]) + self.overhead_us
