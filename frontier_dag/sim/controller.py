"""The GlobalController: routes requests to pools and replicas, moves KV between pools, and
notices when the cluster can no longer progress.

Pools come from the workflow's stages. A new request enters one of the entry pools (stages
that serve prefill or both), the one the strategy's entry rule picks (``sim.routing``),
and there the replica ``scheduler.routing`` picks. In PD, a finished prefill waits until
a decode replica has KV blocks for it (the prefill replica keeps its blocks meanwhile:
backpressure), then crosses a link shared by that prefill replica's concurrent transfers.
"""

from __future__ import annotations

from collections import deque
from itertools import cycle

import numpy as np

from frontier_dag.config.overheads import EngineOverheads
from frontier_dag.config.run import Deployment, redundant_experts
from frontier_dag.cost.protocol import CostModel
from frontier_dag.errors import DeadlockError, SimulationError
from frontier_dag.ir.graph import EventGraph
from frontier_dag.sim.events import EventQueue
from frontier_dag.sim.iteration_log import ITERATION_COLUMNS, NO_REF, Cause, Node, Ref
from frontier_dag.sim.kv import KVCache
from frontier_dag.sim.link import SharedLink
from frontier_dag.sim.memory import kv_capacity_tokens
from frontier_dag.sim.pipeline import Pipeline, StagePrices
from frontier_dag.sim.policies import build_policy
from frontier_dag.sim.predictor import ExecutionPredictor
from frontier_dag.sim.replica import ReplicaWorker
from frontier_dag.sim.routing import EntryRouter, PoolState, TokenLedger
from frontier_dag.sim.state import ColumnLog, RequestTable


class ClusterWorker:
    """The replicas of one pool and how new work is spread over them."""

    def __init__(self, name: str, replicas: list[ReplicaWorker], routing: str):
        self.name = name
        self.replicas = replicas
        self.routing = routing
        self._next = cycle(range(len(replicas)))

    def pick(self) -> ReplicaWorker:
        if len(self.replicas) == 1:
            return self.replicas[0]
        if self.routing == "round_robin":
            return self.replicas[next(self._next)]
        return min(self.replicas, key=lambda r: (r.outstanding, r.index))


class GlobalController:
    def __init__(self, deployment: Deployment, graph: EventGraph, cost_model: CostModel, table: RequestTable,
                 events: EventQueue, on_finish=None, attribute: bool = True):
        cfg = deployment.config
        self.deployment, self.table, self.events = deployment, table, events
        self.on_finish = on_finish
        self.log = ColumnLog(ITERATION_COLUMNS)
        self.reserved: dict[tuple[str, int, int], int] = {}
        self.pending: deque[tuple[int, ReplicaWorker]] = deque()  # prefilled, waiting for decode blocks
        self.workers: dict[str, ClusterWorker] = {}
        self.decode: ClusterWorker | None = None  # where finished prefills' KV moves
        self.transfer: ExecutionPredictor | None = None
        self.links: dict[int, SharedLink] = {}
        self.pipelines: dict[str, list[Pipeline]] = {}  # pool -> its replicas' pipelines, where pipelined
        self.completed = 0
        # the engine's time outside the kernels (config/overheads.py): zeros when none is given
        overheads = deployment.overheads or EngineOverheads()
        self.request_s = overheads.request_us * 1e-6
        self.handoff_s = overheads.handoff_us * 1e-6
        # with an overhead model, a disaggregated request's first token reaches the client from
        # the decode server, once its KV arrived and the handoff is over (as SGLang and Dynamo serve it)
        self.first_token_at_decode = deployment.overheads is not None
        self._delivered = np.zeros(table.n, dtype=bool)  # requests whose first token reached the client so
        pools_by_role = {p.role: (name, p) for name, p in deployment.pools.items()}
        serves, gpus = {}, {}
        for pool_index, (stage_name, stage) in enumerate(graph.stages.items()):
            if stage.serves == "transfer":
                self.transfer = ExecutionPredictor(graph, stage_name, deployment, cost_model, cfg.seed)
                continue
            name, pool = pools_by_role[stage.pools[0]]
            for other in stage.pools[1:]:
                if pools_by_role[other][1].replicas != pool.replicas:
                    raise SimulationError(f"cluster.pools.{pools_by_role[other][0]}.replicas must equal "
                                          f"cluster.pools.{name}.replicas: stage {stage_name} steps them together")
            where = f"{deployment.origin.name}: cluster.pools.{name}"
            hw = deployment.pool_hardware[name]
            capacity = kv_capacity_tokens(deployment.model, pool, hw, cfg.scheduler, where,
                                          graph.weight_groups().get(pool.role), redundant_experts(cfg.workflow))
            sched = cfg.scheduler
            block_tokens = table.requests.block_tokens if sched.prefix_caching else 0
            # replicas of a pool share one predictor: same DAG, same memoised prices
            if graph.pipeline_stages(stage_name) is None:
                predictor = ExecutionPredictor(graph, stage_name, deployment, cost_model, cfg.seed,
                                               sched.iteration_overhead_us + overheads.step_us, attribute,
                                               overheads.step_per_sequence_us)
                predictors = [predictor] * pool.replicas
            else:  # each replica's pipeline runs pp lanes of batches (frontier_dag.sim.pipeline)
                prices = StagePrices(graph, stage_name, deployment, cost_model, cfg.seed,
                                     sched.iteration_overhead_us + overheads.step_us, attribute,
                                     overheads.step_per_sequence_us)
                self.pipelines[name] = [Pipeline(prices, events) for _ in range(pool.replicas)]
                predictors = [pipeline.lane() for pipeline in self.pipelines[name] for _ in range(pool.pp)]
                capacity //= pool.pp
            replicas = [
                ReplicaWorker(pool=name, pool_index=pool_index, index=i, serves=stage.serves, predictor=predictor,
                              kv=KVCache(capacity // sched.block_size, sched.block_size, block_tokens),
                              policy=build_policy(sched, pool), table=table, events=events, controller=self,
                              log=self.log)
                for i, predictor in enumerate(predictors)
            ]
            self.workers[name] = ClusterWorker(name, replicas, sched.routing)
            serves[name] = stage.serves
            gpus[name] = sum(pools_by_role[r][1].gpus for r in stage.pools)
        entry = graph.entry
        entries = [pools_by_role[role][0] for role in entry.pools]
        if any(serves[name] == "prefill" for name in entries):
            # the KV of a prefill-only pool moves to the one pool that decodes (dsl.entry checked it)
            self.decode = next(self.workers[name] for name, s in serves.items() if s != "prefill")
        self.ledger = TokenLedger(table.n, list(self.workers))
        self.router = EntryRouter(entry, [PoolState(self.workers[name], deployment.pools[name].role, serves[name],
                                                    gpus[name], self.ledger) for name in entries], table)
        self.entries = [self.workers[name] for name in entries]
        self._entry_index = {name: i for i, name in enumerate(self.workers)}
        self._gpus = gpus
        table.pool_names = list(self.workers)

    # -- requests in ---------------------------------------------------------------------------
    def arrive(self, rid: int) -> None:
        """A client sends request ``rid``; it reaches a scheduler after the engine's intake."""
        self.table.arrival[rid] = self.events.now
        if self.request_s:
            self.events.after(self.request_s, self._submit, rid)
        else:
            self._submit(rid)

    def _submit(self, rid: int) -> None:
        """Request ``rid`` enters the pool its entry rule picks (at this instant's pool state)."""
        t = self.table
        pool = self.router.route(rid)
        t.prefill_pool[rid] = self._entry_index[pool.name]
        # its prompt, and its outputs where the pool decodes them too
        self.ledger.enter(rid, pool.name, int(t.prompt[rid]) + (int(t.output[rid]) if pool.serves == "both" else 0))
        pool.worker.pick().submit(rid)

    # -- callbacks from replicas ---------------------------------------------------------------
    def finished(self, rid: int, replica: ReplicaWorker) -> None:
        self.completed += 1
        self.ledger.leave(rid)
        if self.decode is not None and replica.pool == self.decode.name:
            self._retry_pending((Node.ITERATION, replica.last_row))
        if self.on_finish is not None:
            self.on_finish(rid)

    def preempted(self, rid: int, replica: ReplicaWorker) -> None:
        """A preempted sequence is recomputed from its prompt and the tokens it generated: where
        it is, unless the pool only decodes, then on the pool it entered. What it then waits
        for is what the preempting iteration waited for."""
        if replica.serves == "decode":
            self.ledger.leave(rid)
            worker = self.entries[0] if len(self.entries) == 1 else self._entered(rid)
            t = self.table
            self.ledger.enter(rid, worker.name, int(t.prompt[rid] + t.generated[rid]))
            entry = worker.pick()
            entry.cut()
            entry.waiting.appendleft(rid)
            self.events.after(0.0, self._kick_entry, worker, replica.planning)
            self.events.after(0.0, self._retry_pending, replica.planning)  # its seat and KV are free again
        else:
            replica.waiting.appendleft(rid)

    def _entered(self, rid: int) -> ClusterWorker:
        return self.workers[self.table.pool_names[self.table.prefill_pool[rid]]]

    def _kick_entry(self, worker: ClusterWorker, after: Ref) -> None:
        for r in worker.replicas:
            r.cut()
            r.kick(Cause.REQUEUE, -1, after)

    def handoff(self, rid: int, source: ReplicaWorker) -> None:
        """A prefill finished: move its KV to a decode replica once one has room."""
        self.table.transfer_ready[rid] = self.events.now
        self.ledger.leave(rid)
        if not self._try_transfer(rid, source):
            self.pending.append((rid, source))

    def _kv_tokens(self, rid: int) -> int:
        """KV tokens a prefilled request carries: its prompt and all but the last generated
        token (whose KV the first decode step computes)."""
        t = self.table
        return int(t.prompt[rid] + t.generated[rid] - 1)

    def _try_transfer(self, rid: int, source: ReplicaWorker, after: Ref = NO_REF) -> bool:
        """Start request ``rid``'s KV transfer if a decode replica takes it; ``after``: the
        event that let it start after waiting for decode KV blocks (none when it did not wait)."""
        tokens = self._kv_tokens(rid)
        t = self.table
        left = int(t.output[rid] - t.generated[rid])
        for r in self.decode.replicas:
            r.cut()  # their free blocks as of now, not after planned decode steps
        # a decode replica takes a request only with a free seat and room for its KV and for
        # what the engine keeps free for the outputs (ReplicaWorker.accepts): KV reserved for a
        # request that cannot be seated would starve its running sequences
        candidates = [r for r in self.decode.replicas if r.policy.accepts(tokens, left)]
        if not candidates:
            return False
        target = min(candidates, key=lambda r: (r.outstanding, r.index))
        self.reserved[(target.pool, target.index, rid)] = target.policy.accept(rid, tokens, left)
        t.transfer_start[rid] = self.events.now
        t.transfer_waited_for_kind[rid], t.transfer_waited_for[rid] = after
        t.decode_replica[rid] = target.index
        self.ledger.enter(rid, target.pool, left)
        if self.transfer is None:  # KV already streamed layer by layer during the prefill
            self._arrived(rid, source, target)
            return True
        alone_s = self.transfer.time_us(np.array([tokens]), np.array([0]), tokens) * 1e-6
        link = self.links.setdefault(source.index, SharedLink(f"{source.pool}[{source.index}]", self.events))
        link.start(rid, alone_s, lambda key: self._arrived(key, source, target))
        return True

    def _arrived(self, rid: int, source: ReplicaWorker, target: ReplicaWorker) -> None:
        self.table.transfer_end[rid] = self.events.now
        if self.handoff_s:
            self.events.after(self.handoff_s, self._handed_over, rid, source, target)
        else:
            self._handed_over(rid, source, target)

    def _handed_over(self, rid: int, source: ReplicaWorker, target: ReplicaWorker) -> None:
        """The decode server takes the request whose KV arrived, after the engine's handoff;
        the prefill server frees its copy of the KV then (it holds it until the decode server
        has taken the request) and, with an overhead model, the client gets its first token."""
        source.release_held(rid)
        if self.first_token_at_decode and not self._delivered[rid]:  # once, not again after a recompute
            self._delivered[rid] = True
            self.table.first_token[rid] = self.events.now
        target.receive(rid)

    def _retry_pending(self, after: Ref) -> None:
        """Start the transfers that wait for decode KV blocks, in order, now that ``after``
        freed some."""
        while self.pending:
            rid, source = self.pending[0]
            if not self._try_transfer(rid, source, after):
                return
            self.pending.popleft()

    def check_released(self) -> None:
        """After the last request: every KV block is free again (prefix-cache entries aside).
        A failure is a bug in the simulator, reported rather than left to skew results."""
        for worker in self.workers.values():
            for r in worker.replicas:
                if r.kv.used != r.kv.pinned_blocks or r.held or r.running or r.waiting:
                    raise SimulationError(f"internal error: pool {r.pool} replica {r.index} ends with {r.kv.used} KV "
                                          f"blocks in use, {len(r.held)} held, {r.running} running, {len(r.waiting)} waiting")
        if self.reserved or self.pending:
            raise SimulationError(f"internal error: {len(self.reserved)} KV reservations and {len(self.pending)} "
                                  "transfers left after the last request")

    def idle_warnings(self) -> list[str]:
        """A pool that ran no iteration through a run: its GPUs count in the per-GPU figures
        though they did nothing."""
        if not self.table.n:
            return []
        out = []
        routed = self.router.counts() if len(self.entries) > 1 else {}
        for worker in self.workers.values():
            if any(r.iterations for r in worker.replicas):
                continue
            why = (f"the entry rule {self.router.entry.describe()} sent it none of the {self.table.n:,} requests"
                   if worker.name in routed else "no request reached it")
            gpus = self._gpus[worker.name]
            out.append(f"pool {worker.name} stayed idle through the run: {why}, yet its {gpus} GPU{'s' * (gpus != 1)} "
                       "count in the output tokens/s per GPU (and the cost). Change the entry rule or its parameters, "
                       "or drop the pool")
        return out
    def _lane_note(self, pool: str) -> str:
        if pool not in self.pipelines:
            return ""
        pp = len(self.pipelines[pool][0].busy_s)
        return (f"; pool {pool} is pipelined: this replica is one of {pp} lanes, each with 1/{pp} of its replica's KV "
                "(docs/configuration.md, Pipeline parallelism)")

    # -- when nothing can happen any more ------------------------------------------------------
    def diagnose(self) -> DeadlockError:
        """Explain why unfinished requests can never progress."""
        t = self.table
        lines = []
        if self.pending:
            rid, source = self.pending[0]
            tokens = self._kv_tokens(rid)
            best = max(self.decode.replicas, key=lambda r: r.kv.free_blocks)
            lines.append(
                f"pool {self.decode.name}: {len(self.pending)} prefilled request(s) wait for decode KV blocks; "
                f"request {rid} needs {best.kv.blocks_for(tokens)} blocks ({tokens} tokens) but the most any decode "
                f"replica has free is {best.kv.free_blocks} of {best.kv.capacity}"
                + (" (its whole KV cache is smaller than this one request: raise cluster.pools."
                   f"{self.decode.name}.kv_capacity_tokens or use more decode GPUs)" if best.kv.blocks_for(tokens) > best.kv.capacity else "")
                + f"; meanwhile pool {source.pool} holds their KV and stops admitting")
        for worker in self.workers.values():
            for r in worker.replicas:
                if r.waiting and not r.busy:
                    rid = r.waiting[0]
                    need = r.kv.blocks_for(r.policy.admission_tokens(int(t.prompt[rid] + t.generated[rid])))
                    lines.append(f"pool {r.pool} replica {r.index}: {len(r.waiting)} request(s) wait to be admitted; "
                                 f"the next needs {need} KV blocks and {r.kv.free_blocks} of {r.kv.capacity} are free"
                                 + (" (larger than the whole cache: raise kv_capacity_tokens)" if need > r.kv.capacity else "")
                                 + self._lane_note(r.pool))
                if r.decode.n and not r.busy:
                    lines.append(f"pool {r.pool} replica {r.index}: {r.decode.n} running sequence(s) cannot grow "
                                 f"their KV ({r.kv.free_blocks} of {r.kv.capacity} blocks free)")
        unfinished = int(np.isnan(t.finish).sum())
        detail = "\n  ".join(lines) or "no replica has work it can start"
        return DeadlockError(f"the simulated cluster cannot progress at t={self.events.now:.3f}s with {unfinished} "
                             f"request(s) unfinished:\n  {detail}")
