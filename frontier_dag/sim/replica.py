"""The ReplicaWorker: one copy of the model, its queue, its KV cache and its batches.

Running sequences live in numpy columns so that an iteration's bookkeeping is a
few vectorised steps whatever the batch size. Batches are formed like vLLM
(running sequences first, then new prompts, chunked prefill within a token
budget, preemption by recompute of the newest sequence when KV runs out) or like
SGLang (prefill batches first, decode batches otherwise).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from frontier_dag.sim.events import EventQueue
from frontier_dag.sim.kv import KVCache
from frontier_dag.sim.predictor import ExecutionPredictor
from frontier_dag.sim.state import ColumnLog, RequestTable

_COLUMNS = ("rid", "ctx", "todo", "left", "blocks", "shared", "hits", "order")


@dataclass(frozen=True)
class Limits:
    max_seqs: int
    max_tokens: int
    chunked_prefill: bool
    policy: str  # vllm | sglang
    prefix_caching: bool


class ReplicaWorker:
    """Serves the requests a controller hands it; calls back on prefill done and finish."""

    def __init__(self, *, pool: str, pool_index: int, index: int, serves: str, predictor: ExecutionPredictor,
                 kv: KVCache, limits: Limits, table: RequestTable, events: EventQueue, controller, log: ColumnLog):
        self.pool, self.pool_index, self.index, self.serves = pool, pool_index, index, serves
        self.predictor, self.kv, self.limits, self.table, self.events = predictor, kv, limits, table, events
        self.controller, self.log = controller, log
        self.handoff = serves == "prefill"
        self.waiting: deque[int] = deque()   # requests to (re)compute from their prompt
        self.incoming: deque[int] = deque()  # requests whose KV arrived, blocks reserved
        cap = limits.max_seqs
        self.cols = {c: np.zeros(cap, dtype=np.int64) for c in _COLUMNS}
        self.n = 0
        self._order = 0
        self.busy = False
        self.busy_s = 0.0
        self.stall_s = 0.0
        self._stall_since: float | None = None
        self.iterations = 0
        self.held: dict[int, int] = {}  # prefilled requests whose KV waits to leave: blocks
        self._batch = None

    # -- load, for routing ---------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.incoming) + self.n

    def submit(self, rid: int, front: bool = False) -> None:
        (self.waiting.appendleft if front else self.waiting.append)(rid)
        self.kick()

    def receive(self, rid: int) -> None:
        """A request whose KV (and reserved blocks) arrived from another pool."""
        self.incoming.append(rid)
        self.kick()

    # -- the iteration loop --------------------------------------------------------------------
    def kick(self) -> None:
        if self.busy:
            return
        batch = self._form_batch()
        now = self.events.now
        if batch is None:
            if self.waiting and self._stall_since is None:
                self._stall_since = now  # work waits but memory is full: backpressure
            return
        if self._stall_since is not None:
            self.stall_s += now - self._stall_since
            self._stall_since = None
        q, kv_out = batch
        sched = q > 0
        n = self.n
        ctx = self.cols["ctx"][:n]
        duration_us = self.predictor.time_us(q[sched], ctx[sched], kv_out)
        self.busy = True
        self._batch = (q, now, duration_us)
        self.events.after(duration_us * 1e-6, self._complete)

    def _form_batch(self):
        """The next iteration's new tokens per running sequence (0: not scheduled), after
        growing their KV, or None when nothing can run."""
        self._absorb_incoming()
        lim, c = self.limits, self.cols
        while True:
            n = self.n
            todo = c["todo"][:n]
            prefilling = todo > 0
            prefill_first = lim.policy == "sglang" and bool(prefilling.any() or self._can_admit())
            q = np.where(prefilling | prefill_first, 0, 1)
            budget = lim.max_tokens - int(q.sum())
            for i in np.flatnonzero(prefilling):
                if budget <= 0:
                    break
                chunk = int(min(todo[i], budget)) if lim.chunked_prefill else int(todo[i])
                if chunk > budget and budget < lim.max_tokens:
                    break
                q[i] = chunk
                budget -= chunk
            if self._grow(q):
                break
            if n <= 1:
                return None  # one sequence that cannot grow: the controller reports the deadlock
            self._preempt(int(np.argmax(c["order"][:n])))
        if lim.policy == "vllm" or prefill_first:
            new_q = self._admit(budget)
            if new_q:
                q = np.concatenate([q, np.array(new_q, dtype=np.int64)])
        if prefill_first and not (q > 0).any():
            # nothing could be prefilled (memory is full): run the decodes instead
            q = np.where(c["todo"][: self.n] > 0, 0, 1)
            if not self._grow(q):
                return None
        if not (q > 0).any():
            return None
        todo = c["todo"][: self.n]
        finishing = (todo > 0) & (q == todo)
        kv_out = int((c["ctx"][: self.n] + q)[finishing].sum()) if self.handoff else 0
        return q, kv_out

    def _grow(self, q: np.ndarray) -> bool:
        """Allocate the blocks the running sequences need for ``q`` more tokens."""
        c, n, size = self.cols, self.n, self.kv.block_size
        need = np.maximum((c["ctx"][:n] + q + size - 1) // size - c["blocks"][:n] - c["shared"][:n], 0)
        if not self.kv.allocate(int(need.sum())):
            return False
        c["blocks"][:n] += need
        return True

    def _can_admit(self) -> bool:
        if not self.waiting or self.n >= self.limits.max_seqs:
            return False
        rid = self.waiting[0]
        t = self.table
        first = min(int(t.prompt[rid] + t.generated[rid]), self.limits.max_tokens)
        return self.kv.free >= self.kv.blocks_for(first)

    def _absorb_incoming(self) -> None:
        t = self.table
        while self.incoming and self.n < self.limits.max_seqs:
            rid = self.incoming.popleft()
            held = int(self.controller.reserved.pop((self.pool, self.index, rid)))
            self._append(rid, ctx=int(t.prompt[rid] + t.generated[rid] - 1), todo=0,
                         left=int(t.output[rid] - t.generated[rid]), blocks=held, shared=0, hits=0)
            t.decode_admitted[rid] = self.events.now

    def _append(self, rid, ctx, todo, left, blocks, shared, hits) -> None:
        i = self.n
        c = self.cols
        c["rid"][i], c["ctx"][i], c["todo"][i], c["left"][i] = rid, ctx, todo, left
        c["blocks"][i], c["shared"][i], c["hits"][i], c["order"][i] = blocks, shared, hits, self._order
        self._order += 1
        self.n += 1

    def _admit(self, budget: int) -> list[int]:
        """Admit waiting requests FCFS while seats, tokens and KV blocks last."""
        t, kv, lim = self.table, self.kv, self.limits
        chunks: list[int] = []
        per_hash = 0
        while self.waiting and self.n < lim.max_seqs and budget > 0:
            rid = self.waiting[0]
            prompt = int(t.prompt[rid] + t.generated[rid])
            hits, hashes = 0, None
            if lim.prefix_caching and kv.prefix_block_tokens:
                hashes = t.hashes(rid)
                hits = min(kv.count_prefix(hashes), (prompt - 1) // kv.prefix_block_tokens)
                per_hash = kv.blocks_for(kv.prefix_block_tokens)
            cached = hits * kv.prefix_block_tokens
            todo = prompt - cached
            chunk = min(todo, budget) if lim.chunked_prefill else todo
            if chunk > budget and (chunks or self.n):
                break
            own = kv.blocks_for(cached + chunk) - hits * per_hash
            if not kv.allocate(own):
                break
            if hits:
                kv.match_prefix(hashes[:hits])
            self.waiting.popleft()
            self._append(rid, ctx=cached, todo=todo, left=int(t.output[rid] - t.generated[rid]), blocks=own,
                         shared=hits * per_hash, hits=hits)
            chunks.append(chunk)
            budget -= chunk
            t.cached_tokens[rid] = cached
            if np.isnan(t.first_scheduled[rid]):
                t.first_scheduled[rid] = self.events.now
                t.prefill_replica[rid] = self.index
        return chunks

    def _preempt(self, i: int) -> None:
        """Recompute later: free the sequence's KV and put it back at the queue's front."""
        c = self.cols
        rid = int(c["rid"][i])
        self.kv.release(int(c["blocks"][i]))
        if c["hits"][i]:
            self.kv.unref_prefix(self.table.hashes(rid)[: c["hits"][i]])
        self.table.preemptions[rid] += 1
        self._remove(np.arange(self.n) == i)
        self.controller.preempted(rid, self)

    def _remove(self, leaving: np.ndarray) -> None:
        keep = ~leaving
        m = int(keep.sum())
        for col in self.cols.values():
            col[:m] = col[: self.n][keep]
        self.n = m

    def _complete(self) -> None:
        q, start, duration_us = self._batch
        now = self.events.now
        c, t, n = self.cols, self.table, self.n
        self.busy = False
        self.busy_s += duration_us * 1e-6
        self.iterations += 1
        todo = c["todo"][:n]
        prefilling = todo > 0
        c["ctx"][:n] += q
        todo -= np.where(prefilling, q, 0)
        done_prefill = prefilling & (todo == 0)
        emit = (q > 0) & (~prefilling | done_prefill)
        c["left"][:n] -= emit
        rids = c["rid"][:n]
        t.generated[rids[emit]] += 1
        if done_prefill.any():
            for i in np.flatnonzero(done_prefill):
                rid = int(rids[i])
                if np.isnan(t.first_token[rid]):
                    t.first_token[rid] = now
                if np.isnan(t.prefill_done[rid]):
                    t.prefill_done[rid] = now
                self._cache_prompt(i, rid)
        finished = emit & (c["left"][:n] <= 0)
        leaving = finished | (done_prefill & self.handoff)
        self.log.append(self.pool_index, self.index, start, duration_us, int((q > 0).sum()),
                        int(q[prefilling].sum()), int(((q > 0) & ~prefilling).sum()), self.kv.used / max(self.kv.capacity, 1))
        if leaving.any():
            handoffs = []
            for i in np.flatnonzero(leaving):
                rid = int(rids[i])
                if finished[i]:
                    self.kv.release(int(c["blocks"][i]))
                    if c["hits"][i]:
                        self.kv.unref_prefix(t.hashes(rid)[: c["hits"][i]])
                    t.finish[rid] = now
                else:
                    self.held[rid] = (int(c["blocks"][i]), int(c["hits"][i]))
                    handoffs.append(rid)
            done_ids = [int(r) for r in rids[finished]]
            self._remove(leaving)
            for rid in done_ids:
                self.controller.finished(rid, self)
            for rid in handoffs:
                self.controller.handoff(rid, self)
        self.kick()

    def _cache_prompt(self, i: int, rid: int) -> None:
        """Index the prompt's whole hash blocks so later requests can reuse them."""
        kv, c = self.kv, self.cols
        if not (self.limits.prefix_caching and kv.prefix_block_tokens):
            return
        hashes = self.table.hashes(rid)
        whole = min(len(hashes), int(self.table.prompt[rid]) // kv.prefix_block_tokens)
        per_hash = kv.blocks_for(kv.prefix_block_tokens)
        added = kv.insert_prefix(hashes[c["hits"][i]:whole], per_hash)
        moved = min(added * per_hash, int(c["blocks"][i]))
        c["blocks"][i] -= moved
        c["shared"][i] += moved
        c["hits"][i] += added

    def release_held(self, rid: int) -> None:
        """The KV of a handed-off request has left: free its blocks here."""
        blocks, hits = self.held.pop(rid)
        self.kv.release(blocks)
        if hits:
            self.kv.unref_prefix(self.table.hashes(rid)[:hits])
        self.kick()
