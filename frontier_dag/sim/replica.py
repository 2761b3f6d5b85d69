"""The ReplicaWorker: one copy of the model, its queues, its KV cache and its iterations.

The replica is the event glue: it starts an iteration when it is idle and has work,
asks its scheduling policy (frontier_dag.sim.policies) what the iteration holds, prices it,
completes it, logs it with what it waited for, and calls the controller back when a
prefill is ready to hand off, a request finishes or a sequence is preempted. Its state is
the waiting queue, the sequences in prefill (a short list), the decode set on its clock
(frontier_dag.sim.decode_set) and the KV block manager (frontier_dag.sim.kv).

With nothing waiting, the next decode steps are known in advance: the replica plans up to
``STRETCH_STEPS`` of them at once (a *stretch*) and cuts the stretch at the step then
running when anything concerns the replica meanwhile.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from itertools import accumulate
from math import isnan

import numpy as np

from frontier_dag.cost.batch import BatchSummary
from frontier_dag.sim.batch import Batch, Prefilling, Stretch
from frontier_dag.sim.decode_set import DecodeSet
from frontier_dag.sim.events import EventQueue
from frontier_dag.sim.iteration_log import NO_REF, Cause, Node, Ref
from frontier_dag.sim.kv import KVCache
from frontier_dag.sim.policies.base import SchedulingPolicy
from frontier_dag.sim.predictor import ExecutionPredictor
from frontier_dag.sim.state import ColumnLog, RequestTable

#: Decode steps planned at once when nothing waits (see ReplicaWorker._launch_stretch).
STRETCH_STEPS = 64
# the codes as plain ints: an enum member's lookup costs five times as much on the hot path
_CONTINUE, _ITERATION = int(Cause.CONTINUE), int(Node.ITERATION)


class ReplicaWorker:
    """Serves the requests a controller hands it; calls back on prefill done and finish."""

    def __init__(self, *, pool: str, pool_index: int, index: int, serves: str, predictor: ExecutionPredictor,
                 kv: KVCache, policy: SchedulingPolicy, table: RequestTable, events: EventQueue, controller,
                 log: ColumnLog):
        self.pool, self.pool_index, self.index, self.serves = pool, pool_index, index, serves
        self.predictor, self.kv, self.policy, self.table, self.events = predictor, kv, policy, table, events
        self.controller, self.log = controller, log
        self.handoff = serves == "prefill"
        self.waiting: deque[int] = deque()   # requests to (re)compute from their prompt
        self.incoming: deque[int] = deque()  # requests whose KV arrived, blocks reserved
        self.inbound = 0  # requests with KV reserved here, in flight or arrived, not yet running
        self.prefilling: list[Prefilling] = []
        self.decode = DecodeSet(policy.limits.max_seqs, kv.block_size)
        self._order = 0
        self._joined: list[int] = []  # requests seated from `incoming` for the iteration being planned
        # accounting
        self.busy = False
        self.busy_s = 0.0
        self.stall_s = 0.0
        self._stall_since: float | None = None
        self.iterations = 0
        self.last_row = -1  # this replica's last row of the iteration log
        self.planning: Ref = NO_REF  # what the iteration being planned waits for
        self.held: dict[int, tuple[int, int]] = {}  # handed-off requests whose KV waits to leave
        self._batch: Batch | None = None
        self._stretch: Stretch | None = None
        self._version = 0
        policy.attach(self)

    # -- load, for routing ---------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.incoming) + self.decode.n + len(self.prefilling)

    @property
    def running(self) -> int:
        return self.decode.n + len(self.prefilling)

    def submit(self, rid: int) -> None:
        self.cut()
        self.waiting.append(rid)
        self.kick(Cause.ARRIVAL, rid, (Node.ARRIVAL, rid))

    def receive(self, rid: int) -> None:
        """A request whose KV (and reserved blocks) arrived from another pool."""
        self.cut()
        self.incoming.append(rid)
        self.kick(Cause.KV_ARRIVED, rid, (Node.TRANSFER, rid))

    def release_held(self, rid: int) -> None:
        """The KV of a handed-off request has left: free its blocks here."""
        self.cut()
        blocks, hits = self.held.pop(rid)
        self._free(rid, blocks, hits)
        self.kick(Cause.MEMORY_FREED, rid, (Node.TRANSFER, rid))

    # -- the iteration loop --------------------------------------------------------------------
    def kick(self, cause: int = _CONTINUE, request: int = -1, after: Ref | None = None) -> None:
        """Start the next iteration if the replica is idle and has work it can run. ``after``:
        what it waits for (by default the replica's previous iteration)."""
        if self.busy:
            return
        if after is None:
            after = (_ITERATION, self.last_row)
        if self.decode.n and not (self.prefilling or self.waiting or self.incoming) and \
                self.predictor.plans_ahead and self._launch_stretch(cause, request, after):
            return
        self.planning = after
        batch = self.policy.plan()
        now = self.events.now
        if batch is None:
            if self.waiting and self._stall_since is None:
                self._stall_since = now  # work waits but memory is full: backpressure
            return
        if self._stall_since is not None:
            self.stall_s += now - self._stall_since
            self._stall_since = None
        decode, chunks = batch.decode, batch.chunks
        batch.duration_us = self.predictor.time_us_summary(batch.summary, _BatchArrays(self, decode, chunks),
                                                           batch.kv_out_tokens)
        batch.start, batch.categories = now, self.predictor.last_categories
        batch.cause, batch.cause_request, batch.after = cause, request, after
        self.busy = True
        self._batch = batch
        self.events.after(batch.duration_us * 1e-6, self._complete)

    def batch(self, decode: bool, chunks: list[Prefilling]) -> Batch:
        """The iteration a policy planned: the decode set takes a step if ``decode``, and
        ``chunks`` their next tokens (their KV is allocated)."""
        joined, self._joined = self._joined, []
        kv_out = sum(p.ctx + p.chunk for p in chunks if p.chunk == p.todo) if self.handoff else 0
        return Batch(decode, chunks, self._summary(decode, chunks), kv_out, joined)

    def _complete(self) -> None:
        batch = self._batch
        decode, chunks = batch.decode, batch.chunks
        now = self.events.now
        t = self.table
        self.busy = False
        self.busy_s += batch.duration_us * 1e-6
        self.iterations += 1
        n_decode = self.decode.n if decode else 0
        prefill_tokens = sum(p.chunk for p in chunks)
        self.log.append(self.pool_index, self.index, batch.start, batch.duration_us, n_decode + len(chunks),
                        prefill_tokens, n_decode, batch.summary.ctx_tokens, self.kv.used / self.kv.capacity,
                        batch.cause, batch.cause_request, *batch.after, *batch.categories)
        row = self.last_row = self.log.size - 1
        if batch.joined:
            t.decode_admitted_iteration[batch.joined] = row
        if decode:
            self.decode.step += 1
            if self.decode.next_last < self.decode.step:  # some sequences emitted their last token
                self._finish_decodes(self.decode.finished(), now)
        finished, handed = [], []
        for p in chunks:
            if p.first:
                t.first_scheduled_iteration[p.rid] = row
                p.first = False
            p.ctx += p.chunk
            p.todo -= p.chunk
            if p.todo:
                continue
            # the prompt is in: its first (or, after a preemption, next) token is out
            self.prefilling.remove(p)
            p.left -= 1
            rid = p.rid
            if isnan(t.first_token[rid]):
                t.first_token[rid] = now
                t.first_token_iteration[rid] = row
            if isnan(t.prefill_done[rid]):
                t.prefill_done[rid] = now
            self._cache_prompt(p)
            t.generated[rid] = t.output[rid] - p.left
            if p.left <= 0:
                self._free(rid, p.blocks, p.hits)
                t.finish[rid] = now
                t.finish_iteration[rid] = row
                finished.append(rid)
            elif self.handoff:
                self.held[rid] = (p.blocks, p.hits)
                t.handoff_iteration[rid] = row
                handed.append(rid)
            else:
                self.decode.join(rid, p.ctx, p.left, p.shared, p.hits, p.order)
        for rid in finished:
            self.controller.finished(rid, self)
        for rid in handed:
            self.controller.handoff(rid, self)
        self.kick()

    # -- decode stretches -----------------------------------------------------------------------
    def _launch_stretch(self, cause: int, request: int, after: Ref) -> bool:
        """Plan the decode steps until the next sequence finishes (at most STRETCH_STEPS), all
        at once: with nothing waiting, each step's batch is known in advance. Any outside
        event that concerns this replica cuts the stretch at the step then running (``cut``),
        so iterations start exactly when they would one at a time."""
        kv, ds = self.kv, self.decode
        n, first = ds.n, ds.step
        needs = ds.new_blocks_ahead(min(STRETCH_STEPS, ds.next_last - first + 1))
        taken = list(accumulate(needs))  # blocks taken up to each step: the steps whose KV is free run
        k = bisect_right(taken, kv.free_blocks)
        if not k:
            return False  # the next step needs a preemption: the general path handles it
        del needs[k:]
        kv.allocate(taken[k - 1])
        steps = range(first, first + k)
        contexts = list(range(ds.offset_sum + n * first, ds.offset_sum + n * (first + k), n))
        longest = list(range(ds.offset_max + first, ds.offset_max + first + k))
        priced = self.predictor.decode_steps(n, contexts, longest, ds.steps_contexts)
        if priced is not None:
            durations, categories = priced
        else:
            durations, categories = [], []
            for step, ctx, most in zip(steps, contexts, longest, strict=True):
                summary = BatchSummary(n, n, 0, 0, ctx, most, ctx, n, ctx, most, 0)
                durations.append(self.predictor.time_us_summary(summary, lambda step=step: ds.step_arrays(step)))
                categories.append(self.predictor.last_categories)
            categories = [list(column) for column in zip(*categories, strict=True)]
        if self._stall_since is not None:
            self.stall_s += self.events.now - self._stall_since
            self._stall_since = None
        self.busy = True
        self._stretch = Stretch(self.events.now, durations, categories, contexts, needs, cause, request, after)
        self._version += 1
        self.events.after(sum(durations) * 1e-6, self._complete_stretch, self._version)
        return True

    def cut(self) -> None:
        """End a running decode stretch at the step in progress (an outside event needs the
        replica to plan again at the next step boundary); frees the later steps' KV growth."""
        stretch = self._stretch
        if stretch is None:
            return
        durations = stretch.durations
        end = stretch.start
        last = len(durations) - 1
        for j, duration in enumerate(durations):
            end += duration * 1e-6
            if end > self.events.now:
                last = j
                break
        if last == len(durations) - 1:
            return
        self.kv.free(stretch.cut_after(last))
        self._version += 1
        self.events.at(end, self._complete_stretch, self._version)

    def _complete_stretch(self, version: int) -> None:
        if version != self._version:
            return  # superseded by a cut
        s, self._stretch = self._stretch, None
        self.busy = False
        ds = self.decode
        n, steps = ds.n, len(s.durations)
        capacity = self.kv.capacity
        usage = [used / capacity for used in accumulate(s.needs, initial=self.kv.used - sum(s.needs))][1:]
        starts = list(accumulate([d * 1e-6 for d in s.durations[:-1]], initial=s.start))  # one step after another
        causes, requests = [_CONTINUE] * steps, [-1] * steps
        causes[0], requests[0] = s.cause, s.cause_request
        first = self.log.size
        kinds = [_ITERATION] * steps
        kinds[0] = s.after[0]
        afters = [s.after[1], *range(first, first + steps - 1)]  # each step waits for the one before
        self.log.extend(self.pool_index, self.index, starts, s.durations, n, 0, n, s.contexts, usage, causes, requests,
                        kinds, afters, *s.categories)
        self.last_row = first + steps - 1
        self.busy_s += sum(s.durations) * 1e-6
        self.iterations += steps
        ds.step += steps
        if ds.next_last < ds.step:  # some sequences emitted their last token
            self._finish_decodes(ds.finished(), self.events.now)
        self.kick()

    # -- what the policies call ----------------------------------------------------------------
    def next_order(self) -> int:
        self._order += 1
        return self._order

    def start_prefill(self, p: Prefilling) -> None:
        """A waiting request admitted by the policy (taken off the queue, its first chunk's KV
        allocated, ``first`` if nothing worked on it before) starts its prefill."""
        t = self.table
        self.prefilling.append(p)
        t.cached_tokens[p.rid] = p.ctx
        if p.first:
            t.first_scheduled[p.rid] = self.events.now
            t.prefill_replica[p.rid] = self.index

    def join_arrived(self, rid: int) -> None:
        """A request whose KV arrived takes a seat: it decodes from the next step on."""
        t = self.table
        self.controller.reserved.pop((self.pool, self.index, rid))
        self.inbound -= 1
        self.decode.join(rid, int(t.prompt[rid] + t.generated[rid] - 1), int(t.output[rid] - t.generated[rid]),
                         0, 0, self.next_order())
        t.decode_admitted[rid] = self.events.now
        self._joined.append(rid)

    def preempt(self, victim: Prefilling | int) -> None:
        """Recompute later: free a sequence's KV (one in prefill, or the index of one in the
        decode set) and give it back to the controller to queue again."""
        t = self.table
        if isinstance(victim, Prefilling):
            self.prefilling.remove(victim)
            rid, blocks, hits, left = victim.rid, victim.blocks, victim.hits, victim.left
        else:
            ds, idx = self.decode, np.array([victim])
            rid = int(ds.d["rid"][victim])
            blocks, hits = int(ds.own_blocks(idx)[0]), int(ds.d["hits"][victim])
            left = int(ds.remaining(idx)[0])
            ds.drop(np.arange(ds.n) == victim)
        t.generated[rid] = t.output[rid] - left
        self._free(rid, blocks, hits)
        t.preemptions[rid] += 1
        self.controller.preempted(rid, self)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _finish_decodes(self, done: np.ndarray, now: float) -> None:
        t, ds = self.table, self.decode
        rids, offsets, _, shared, hits, _ = ds.drop(done)
        blocks = ds.blocks_held(offsets, shared)
        t.finish[rids] = now
        t.finish_iteration[rids] = self.last_row
        t.generated[rids] = t.output[rids]
        self.kv.free(int(blocks.sum()))
        rids = rids.tolist()
        for rid, h in zip(rids, hits.tolist(), strict=True):
            if h:
                self.kv.unref_prefix(t.hashes(rid)[:h])
        for rid in rids:
            self.controller.finished(rid, self)

    def _free(self, rid: int, blocks: int, hits: int) -> None:
        """A sequence leaves this replica: its own blocks and its prefix-cache references."""
        self.kv.free_sequence(blocks, self.table.hashes(rid)[:hits] if hits else ())

    def _cache_prompt(self, p: Prefilling) -> None:
        """Index the prompt's whole hash blocks so later requests can reuse them."""
        kv = self.kv
        if not (self.policy.limits.prefix_caching and kv.prefix_block_tokens):
            return
        added, moved = kv.cache_prompt(self.table.hashes(p.rid), p.hits, int(self.table.prompt[p.rid]), p.blocks)
        p.blocks -= moved
        p.shared += moved
        p.hits += added

    # -- the batch's shape, for the predictor --------------------------------------------------
    def _arrays(self, decode: bool, chunks: list[Prefilling]) -> tuple[np.ndarray, np.ndarray]:
        n = self.decode.n if decode else 0
        q = np.concatenate([np.ones(n, dtype=np.int64), np.array([p.chunk for p in chunks], dtype=np.int64)])
        ctx = np.concatenate([self.decode.d["offset"][:n] + self.decode.step,
                              np.array([p.ctx for p in chunks], dtype=np.int64)])
        return q, ctx

    def _summary(self, decode: bool, chunks: list[Prefilling]) -> BatchSummary:
        ds = self.decode
        n = ds.n if decode else 0
        ctx_d = ds.offset_sum + n * ds.step if decode else 0
        max_d = ds.offset_max + ds.step if n else 0
        if not chunks:
            return BatchSummary(n, n, 0, 0, ctx_d, max_d, ctx_d, n, ctx_d, max_d, 0)
        # a one-token chunk is shaped like a decode step
        prefill = [p for p in chunks if p.chunk > 1]
        for p in chunks:
            if p.chunk == 1:
                n += 1
                ctx_d += p.ctx
                max_d = max(max_d, p.ctx)
        ctx_p = sum(p.ctx for p in prefill)
        max_p = max((p.ctx for p in prefill), default=0)
        tokens_p = sum(p.chunk for p in prefill)
        return BatchSummary(n + len(prefill), n + tokens_p, tokens_p, len(prefill), ctx_d + ctx_p, max(max_d, max_p),
                            ctx_d + sum(p.chunk * p.ctx for p in prefill), n + sum(p.chunk * p.chunk for p in prefill),
                            ctx_d, max_d, max_p)


class _BatchArrays:
    """The per-sequence ``(q, ctx)`` arrays of a planned iteration (``ReplicaWorker._arrays``),
    built only when a price is not memoised; ``part`` builds those of its decode or its
    prefill sequences alone (a mixed batch is priced by part)."""

    __slots__ = ("replica", "decode", "chunks")

    def __init__(self, replica: ReplicaWorker, decode: bool, chunks: list[Prefilling]):
        self.replica, self.decode, self.chunks = replica, decode, chunks

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        return self.replica._arrays(self.decode, self.chunks)

    def part(self, decode: bool) -> tuple[np.ndarray, np.ndarray]:
        """``_arrays`` of the sequences with one new token (``decode``: the decode set's, then
        one-token chunks) or more (prompt chunks), in batch order."""
        if not decode:
            return (np.array([p.chunk for p in self.chunks if p.chunk > 1], dtype=np.int64),
                    np.array([p.ctx for p in self.chunks if p.chunk > 1], dtype=np.int64))
        ds = self.replica.decode
        ctx = ds.d["offset"][:ds.n if self.decode else 0] + ds.step
        singles = [p.ctx for p in self.chunks if p.chunk == 1]
        if singles:
            ctx = np.concatenate([ctx, np.array(singles, dtype=np.int64)])
        return np.ones(len(ctx), dtype=np.int64), ctx
