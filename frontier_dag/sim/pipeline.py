"""Pipeline parallelism: the stages of a replica and the micro-batches in flight across them.

The engines keep up to ``pp`` batches of disjoint requests in flight through a replica's
pipeline stages, so that each stage works on one while the others work on the rest:

* vLLM V0 runs ``pp`` *virtual engines*, each with its own scheduler, its ``1/pp`` share
  of the KV blocks, and one batch in flight at a time;
* vLLM V1 schedules up to ``pp`` batches at once (``max_concurrent_batches``, the batch
  queue of ``step_with_batch_queue``); a request in flight is not scheduled again until
  its step is back;
* SGLang's ``event_loop_pp`` keeps ``pp`` micro-batches of running requests, launching one
  into the first stage as the previous one leaves it;
* TensorRT-LLM's ``_executor_loop_pp`` does the same with ``pp`` micro-batches.

The simulator follows vLLM V0, whose rules the others share in steady state: each replica
of a pipelined pool is ``pp`` *lanes* (``ReplicaWorker``s, logged as replicas
``replica x pp + lane``), each with ``1/pp`` of the replica's KV blocks and of its
``max_num_seqs``, planning its next batch when its previous one is back. A lane's batch
then enters the stages in turn: stage k starts it when the activations have arrived
(``pp_send`` over the link from stage k - 1) and the stage has finished the batches that
entered before it (first come, first served, as the engines' queues are). The iteration
a lane logs lasts from its start to the last stage's end; its time waiting for busy
stages is counted as ``waits_and_bubbles``. Each stage is priced on its own part of the
traced DAG (its layers, the all-gather that receives its input), the transfers between
stages on theirs.

What the lanes do not capture: V1 and SGLang share one KV pool among the batches in
flight (a lane holds a fixed share), and they form a batch when it enters the first stage
(a lane forms it when its previous batch is back; the batches are the same when nothing
arrives meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable

from frontier_dag.config.run import Deployment
from frontier_dag.cost.batch import BatchSummary
from frontier_dag.cost.coster import UsageCounter
from frontier_dag.cost.protocol import CostModel
from frontier_dag.cost.queries import CATEGORIES
from frontier_dag.errors import SimulationError
from frontier_dag.ir.graph import EventGraph
from frontier_dag.sim.events import EventQueue
from frontier_dag.sim.predictor import ExecutionPredictor

_WAITS = CATEGORIES.index("waits_and_bubbles")


class StagePrices:
    """What each pipeline stage of a pool's iteration costs for a batch: one
    ExecutionPredictor per stage's part of the DAG and per link between stages. The
    replicas of a pool share it (same DAG, same memoised prices)."""

    def __init__(self, graph: EventGraph, stage: str, deployment: Deployment, cost_model: CostModel, seed: int = 0,
                 overhead_us: float = 0.0, attribute: bool = True, per_sequence_us: float = 0.0):
        parts = graph.pipeline_stages(stage)
        if parts is None:
            raise SimulationError(f"internal error: stage {stage} of {graph.name} does not run pipeline parallel")
        self.stage = stage
        self.stages: list[ExecutionPredictor] = []
        self.links: list[ExecutionPredictor | None] = []
        for k, nodes in enumerate(parts):
            on_link = {n for n in nodes if graph.resources[graph.graph.nodes[n]["resource"]].pipeline_link}
            link = [n for n in nodes if n in on_link]
            compute = [n for n in nodes if n not in on_link]
            # the host's scheduling overhead delays the first stage only
            self.stages.append(ExecutionPredictor(graph.restrict(compute), stage, deployment, cost_model, seed,
                                                  overhead_us if k == 0 else 0.0, attribute,
                                                  per_sequence_us if k == 0 else 0.0))
            self.links.append(ExecutionPredictor(graph.restrict(link), stage, deployment, cost_model, seed, 0.0,
                                                 attribute) if link else None)
        self.pp = len(self.stages)

    def price(self, summary: BatchSummary, materialize: Callable, kv_out_tokens: int
              ) -> tuple[list[float], list[float], list[float]]:
        """Each stage's time and each link's (into stage k; 0 for the first), in µs, and
        their sum by category."""
        stage_us, link_us = [], []
        categories = [0.0] * len(CATEGORIES)
        for predictor, link in zip(self.stages, self.links, strict=True):
            for p, out in ((predictor, stage_us), (link, link_us)):
                if p is None:
                    out.append(0.0)
                    continue
                out.append(p.time_us_summary(summary, materialize, kv_out_tokens))
                categories = [a + b for a, b in zip(categories, p.last_categories, strict=True)]
        return stage_us, link_us, categories

    def usages(self, pool: str) -> dict[str, UsageCounter]:
        """The prices each stage's and link's predictor used, named ``pool.pp[k]``."""
        out = {}
        for k, (predictor, link) in enumerate(zip(self.stages, self.links, strict=True)):
            out[f"{pool}.pp[{k}]"] = predictor.coster.usage
            if link is not None:
                out[f"{pool}.pp[{k}].link"] = link.coster.usage
        return out


class Pipeline:
    """The stages of one replica: when each is next free, and how long each worked."""

    def __init__(self, prices: StagePrices, events: EventQueue):
        self.prices, self.events = prices, events
        self.free_at = [0.0] * prices.pp  # seconds
        self.busy_s = [0.0] * prices.pp

    def lane(self) -> Lane:
        return Lane(self)

    def run(self, stage_us: list[float], link_us: list[float]) -> tuple[float, float]:
        """Book a batch entering the first stage now through every stage in turn; its time
        until the last stage is done and the part of it spent waiting for busy stages, µs."""
        now = t = self.events.now
        waited = 0.0
        for k, (s, x) in enumerate(zip(stage_us, link_us, strict=True)):  # x: the hop into stage k
            t += x * 1e-6
            start = max(t, self.free_at[k])
            waited += start - t
            t = start + s * 1e-6
            self.free_at[k] = t
            self.busy_s[k] += s * 1e-6
        return (t - now) * 1e6, waited * 1e6


class Lane:
    """One lane's view of its replica's pipeline, as a ReplicaWorker's predictor: an
    iteration's time is its batch's way through the stages, waits included."""

    #: a lane cannot plan decode steps ahead (ReplicaWorker._launch_stretch): when its next
    #: batch may enter a stage depends on the other lanes' batches
    plans_ahead = False

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.last_categories: tuple[float, ...] = (0.0,) * len(CATEGORIES)

    def time_us_summary(self, summary: BatchSummary, materialize: Callable, kv_out_tokens: int = 0) -> float:
        stage_us, link_us, categories = self.pipeline.prices.price(summary, materialize, kv_out_tokens)
        total, waited = self.pipeline.run(stage_us, link_us)
        categories[_WAITS] += waited
        self.last_categories = tuple(categories)
        return total

    def usages(self, pool: str) -> dict[str, UsageCounter]:
        return self.pipeline.prices.usages(pool)
