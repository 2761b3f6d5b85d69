"""The ReplicaWorker: one copy of the model, its queue, its KV cache and its batches.

Batches are formed like vLLM (running sequences first, then new prompts, chunked
prefill within a token budget, preemption by recompute of the newest sequence when
KV runs out) or like SGLang (prefill batches first, decode batches otherwise).

Speed: most iterations only decode, and each decoding sequence then gains one
token. The decode set therefore keeps a clock instead of per-sequence counters:
sequence i has ``offset[i] + step`` cached tokens at decode step ``step`` and emits
its last token at step ``last[i]``. Sums, the longest context, the KV blocks that
fill up at each step (a histogram of offsets modulo the block size) and the next
finishing step are kept as plain numbers, so a decode step costs the same for 10
or 10,000 sequences; arrays are built only when a price is not memoised. The few
sequences still in prefill live in a short list.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from frontier_dag.cost.coster import BatchSummary
from frontier_dag.sim.events import EventQueue
from frontier_dag.sim.kv import KVCache
from frontier_dag.sim.predictor import ExecutionPredictor
from frontier_dag.sim.state import ColumnLog, RequestTable

_DECODE_COLUMNS = ("rid", "offset", "last", "shared", "hits", "order")
#: Decode steps planned at once when nothing waits (see ReplicaWorker._launch_stretch).
STRETCH_STEPS = 64


class Cause:
    """Why an iteration started when it did (the ``cause`` column of the iteration log)."""

    CONTINUE = 0      # the replica's previous iteration ended
    ARRIVAL = 1       # a new request arrived
    KV_ARRIVED = 2    # a request's KV arrived from another pool
    MEMORY_FREED = 3  # KV blocks were freed (a handed-off request's KV left)
    REQUEUE = 4       # a preempted request was queued again
    NAMES = ("continue", "arrival", "kv_arrived", "memory_freed", "requeue")


@dataclass(frozen=True)
class Limits:
    max_seqs: int
    max_tokens: int
    chunked_prefill: bool
    policy: str  # vllm | sglang
    prefix_caching: bool
    reserve_output: float = 0.0  # see SchedulerConfig.reserve_output (0 on prefill-only replicas)
    reserve_min: float = 0.0  # SchedulerConfig.reserve_output_min
    reserve_decay_steps: int = 0  # SchedulerConfig.reserve_output_decay_steps
    reserve_tokens: int = 0  # SchedulerConfig.decode_reserve_tokens (decode replicas of PD only)
    max_prefill: int = 0  # SchedulerConfig.max_prefill_tokens (0: none)


class Prefilling:
    """A sequence whose prompt (plus, after a preemption, its generated tokens) is computing."""

    __slots__ = ("rid", "ctx", "todo", "left", "blocks", "shared", "hits", "order", "chunk")

    def __init__(self, rid, ctx, todo, left, blocks, shared, hits, order):
        self.rid, self.ctx, self.todo, self.left = rid, ctx, todo, left
        self.blocks, self.shared, self.hits, self.order = blocks, shared, hits, order
        self.chunk = 0


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
        self.inbound = 0  # requests with KV reserved here, in flight or arrived, not yet running
        self.prefilling: list[Prefilling] = []
        # the decode set, on its clock
        cap = limits.max_seqs
        self.d = {c: np.zeros(cap, dtype=np.int64) for c in _DECODE_COLUMNS}
        self.n = 0
        self.step = 0
        self.offset_sum = 0
        self.offset_max = -(2**62)
        self.next_last = 2**62
        self.fill = [0] * kv.block_size  # decode sequences by offset % block_size
        self._order = 0
        # accounting
        self.busy = False
        self.busy_s = 0.0
        self.stall_s = 0.0
        self._stall_since: float | None = None
        self.iterations = 0
        self.held: dict[int, tuple[int, int]] = {}  # handed-off requests whose KV waits to leave
        self._batch = None
        self._stretch: list | None = None  # a planned run of decode steps (see _launch_stretch)
        self._version = 0
        # reserve_output as it decays (see _share): its value at decode step _share_step
        self._share_base, self._share_step = limits.reserve_output, 0
        self._promised: dict[int, int] = {}  # inbound requests' output reservations (see accept)
        self._promised_total = 0

    # -- load, for routing ---------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.incoming) + self.n + len(self.prefilling)

    @property
    def running(self) -> int:
        return self.n + len(self.prefilling)

    def submit(self, rid: int) -> None:
        self.cut()
        self.waiting.append(rid)
        self.kick(Cause.ARRIVAL, rid)

    def receive(self, rid: int) -> None:
        """A request whose KV (and reserved blocks) arrived from another pool."""
        self.cut()
        self.incoming.append(rid)
        self.kick(Cause.KV_ARRIVED, rid)

    # -- the decode set ------------------------------------------------------------------------
    def _join_decode(self, rid: int, ctx: int, left: int, shared: int, hits: int, order: int) -> None:
        """Sequence ``rid`` with ``ctx`` cached tokens decodes its next ``left`` tokens from the
        next decode step on."""
        i = self.n
        d = self.d
        offset = ctx - self.step
        d["rid"][i], d["offset"][i], d["last"][i] = rid, offset, self.step + left - 1
        d["shared"][i], d["hits"][i], d["order"][i] = shared, hits, order
        self.n += 1
        self.offset_sum += offset
        self.offset_max = max(self.offset_max, offset)
        self.next_last = min(self.next_last, self.step + left - 1)
        self.fill[offset % self.kv.block_size] += 1

    def _drop_decode(self, leaving: np.ndarray) -> None:
        d, n = self.d, self.n
        offsets = d["offset"][:n][leaving]
        self.offset_sum -= int(offsets.sum())
        for r in (offsets % self.kv.block_size).tolist():
            self.fill[r] -= 1
        keep = ~leaving
        m = int(keep.sum())
        for col in d.values():
            col[:m] = col[:n][keep]
        self.n = m
        self.offset_max = int(d["offset"][:m].max()) if m else -(2**62)
        self.next_last = int(d["last"][:m].min()) if m else 2**62

    def _decode_blocks(self, idx: np.ndarray) -> np.ndarray:
        """Blocks each decode sequence in ``idx`` holds itself (beyond shared prefix blocks)."""
        ctx = self.d["offset"][idx] + self.step
        return (ctx + self.kv.block_size - 1) // self.kv.block_size - self.d["shared"][idx]

    # -- the iteration loop --------------------------------------------------------------------
    def kick(self, cause: int = Cause.CONTINUE, request: int = -1) -> None:
        """Start the next iteration if the replica is idle and has work it can run."""
        if self.busy:
            return
        if self.n and not (self.prefilling or self.waiting or self.incoming) and self._launch_stretch(cause, request):
            return
        plan = self._plan()
        now = self.events.now
        if plan is None:
            if self.waiting and self._stall_since is None:
                self._stall_since = now  # work waits but memory is full: backpressure
            return
        if self._stall_since is not None:
            self.stall_s += now - self._stall_since
            self._stall_since = None
        decode, chunks, summary, kv_out = plan
        duration_us = self.predictor.time_us_summary(summary, lambda: self._arrays(decode, chunks), kv_out)
        self.busy = True
        self._batch = (decode, chunks, now, duration_us, cause, request, self.predictor.last_categories,
                       summary.ctx_tokens)
        self.events.after(duration_us * 1e-6, self._complete)

    # -- decode stretches -----------------------------------------------------------------------
    def _launch_stretch(self, cause: int, request: int) -> bool:
        """Plan the decode steps until the next sequence finishes (at most STRETCH_STEPS), all
        at once: with nothing waiting, each step's batch is known in advance. Any outside
        event that concerns this replica cuts the stretch at the step then running (``cut``),
        so iterations start exactly when they would one at a time."""
        kv, size, n = self.kv, self.kv.block_size, self.n
        steps = min(STRETCH_STEPS, self.next_last - self.step + 1)
        needs, total, free = [], 0, kv.free
        for j in range(steps):
            need = self.fill[-(self.step + j) % size]
            if total + need > free:
                break
            needs.append(need)
            total += need
        if not needs:
            return False  # the next step needs a preemption: the general path handles it
        kv.allocate(total)
        steps = range(self.step, self.step + len(needs))
        contexts = [self.offset_sum + n * step for step in steps]
        priced = self.predictor.decode_steps(n, contexts, [self.offset_max + step for step in steps],
                                             self._decode_contexts)
        if priced is not None:
            durations, categories = priced
        else:
            durations, categories = [], []
            for step, ctx in zip(steps, contexts, strict=True):
                longest = self.offset_max + step
                summary = BatchSummary(n, n, 0, 0, ctx, longest, ctx, n, ctx, longest, 0)
                durations.append(self.predictor.time_us_summary(summary, lambda step=step: self._decode_arrays(step)))
                categories.append(self.predictor.last_categories)
            categories = [list(column) for column in zip(*categories, strict=True)]
        if self._stall_since is not None:
            self.stall_s += self.events.now - self._stall_since
            self._stall_since = None
        self.busy = True
        self._stretch = [self.events.now, durations, categories, contexts, needs, cause, request]
        self._version += 1
        self.events.after(sum(durations) * 1e-6, self._complete_stretch, self._version)
        return True

    def _decode_arrays(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return np.ones(self.n, dtype=np.int64), self.d["offset"][: self.n] + step

    def _decode_contexts(self, ahead: list[int]) -> np.ndarray:
        """Cached tokens of every decode sequence at each step ``self.step + j`` of ``ahead``,
        one step after the other in one flat array."""
        return (self.d["offset"][: self.n] + (np.array(ahead, dtype=np.int64)[:, None] + self.step)).ravel()

    def cut(self) -> None:
        """End a running decode stretch at the step in progress (an outside event needs the
        replica to plan again at the next step boundary); frees the later steps' KV growth."""
        stretch = self._stretch
        if stretch is None:
            return
        start, durations = stretch[0], stretch[1]
        end = start
        last = len(durations) - 1
        for j, duration in enumerate(durations):
            end += duration * 1e-6
            if end > self.events.now:
                last = j
                break
        if last == len(durations) - 1:
            return
        j = last
        self.kv.release(sum(stretch[4][j + 1:]))
        for column in (stretch[1], stretch[3], stretch[4], *stretch[2]):
            if isinstance(column, list):  # categories constant over the steps are one number
                del column[j + 1:]
        self._version += 1
        self.events.at(end, self._complete_stretch, self._version)

    def _complete_stretch(self, version: int) -> None:
        if version != self._version:
            return  # superseded by a cut
        start, durations, categories, contexts, needs, cause, request = self._stretch
        self._stretch = None
        self.busy = False
        n, steps = self.n, len(durations)
        capacity = self.kv.capacity
        usage = [used / capacity for used in accumulate(needs, initial=self.kv.used - sum(needs))][1:]
        starts = list(accumulate([d * 1e-6 for d in durations[:-1]], initial=start))  # one step after another
        causes, requests = [Cause.CONTINUE] * steps, [-1] * steps
        causes[0], requests[0] = cause, request
        self.log.extend(self.pool_index, self.index, starts, durations, n, 0, n, contexts, usage, causes, requests,
                        *categories)
        total = sum(durations)
        self.busy_s += total * 1e-6
        self.iterations += len(durations)
        self.step += len(durations)
        if self.next_last < self.step:  # some sequences emitted their last token
            self._finish_decodes(self.d["last"][: self.n] < self.step, self.events.now)
        self.kick()

    def _arrays(self, decode: bool, chunks: list[Prefilling]) -> tuple[np.ndarray, np.ndarray]:
        n = self.n if decode else 0
        q = np.concatenate([np.ones(n, dtype=np.int64), np.array([p.chunk for p in chunks], dtype=np.int64)])
        ctx = np.concatenate([self.d["offset"][:n] + self.step, np.array([p.ctx for p in chunks], dtype=np.int64)])
        return q, ctx

    def _plan(self):
        """Choose the next iteration's work and allocate its KV; None when nothing can run."""
        self._absorb_incoming()
        lim, kv = self.limits, self.kv
        while True:
            prefill_first = lim.policy == "sglang" and bool(self.prefilling or self._can_admit())
            decode = self.n > 0 and not prefill_first
            budget = lim.max_tokens - (self.n if decode else 0)
            need = self.fill[-self.step % kv.block_size] if decode else 0
            chunks = []
            for p in self.prefilling:
                chunk = min(p.todo, budget) if lim.chunked_prefill else p.todo
                if chunk <= 0 or (chunk > budget and (chunks or decode)):
                    p.chunk = 0
                    continue
                p.chunk = chunk
                need += max(0, kv.blocks_for(p.ctx + chunk) - p.blocks - p.shared)
                chunks.append(p)
                budget -= chunk
            if kv.allocate(need):
                break
            if self.running <= 1:
                return None  # one sequence that cannot grow: the controller reports the deadlock
            self._preempt_newest()
        for p in chunks:
            p.blocks = max(p.blocks, kv.blocks_for(p.ctx + p.chunk) - p.shared)
        if lim.policy == "vllm" or prefill_first:
            whole = lim.max_prefill - sum(p.chunk for p in chunks) if lim.max_prefill else None
            chunks += self._admit(budget, have_work=decode or bool(chunks), whole=whole, batched=bool(chunks))
        if not decode and not chunks:
            if prefill_first and self.n:  # nothing could be prefilled (memory): decode instead
                if not kv.allocate(self.fill[-self.step % kv.block_size]):
                    return None
                decode = True
            else:
                return None
        return (decode, chunks, self._summary(decode, chunks),
                sum(p.ctx + p.chunk for p in chunks if p.chunk == p.todo) if self.handoff else 0)

    def _summary(self, decode: bool, chunks: list[Prefilling]) -> BatchSummary:
        n = self.n if decode else 0
        ctx_d = self.offset_sum + n * self.step if decode else 0
        max_d = self.offset_max + self.step if n else 0
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

    def _can_admit(self) -> bool:
        if not self.waiting or self.running >= self.limits.max_seqs:
            return False
        rid = self.waiting[0]
        t = self.table
        prompt, left = int(t.prompt[rid] + t.generated[rid]), int(t.output[rid] - t.generated[rid])
        return self.kv.free >= self._admission_blocks(prompt, left, self._reserved())

    def _admission_blocks(self, prompt: int, left: int, reserved: int) -> int:
        """Free KV blocks needed to admit a prompt with ``left`` output tokens to go, when the
        running sequences are promised ``reserved`` more (``_reserved``)."""
        need = self.kv.blocks_for(self._admission_tokens(prompt))
        if self.limits.reserve_output:
            need = max(need, reserved + self._reservation(prompt, left))
        return need

    def _reservation(self, ctx: int, left: int) -> int:
        """KV blocks a request of ``ctx`` tokens with ``left`` output tokens to go is promised
        at admission under ``reserve_output``."""
        return self.kv.blocks_for(ctx + int(self._share() * left))

    def _reserved(self) -> int:
        """Blocks promised to the running sequences beyond what they hold: the KV of their
        prompts still to prefill and of ``reserve_output`` of their remaining outputs."""
        if not self.limits.reserve_output:
            return 0
        r, kv, size = self._share(), self.kv, self.kv.block_size
        ctx = self.d["offset"][: self.n] + self.step
        left = self.d["last"][: self.n] - self.step + 1
        grown = (ctx + (r * left).astype(np.int64) + size - 1) // size - (ctx + size - 1) // size
        total = int(grown.sum())
        for p in self.prefilling:
            total += kv.blocks_for(p.ctx + p.todo + int(r * p.left)) - kv.blocks_for(p.ctx + p.chunk)
        return total

    def _share(self) -> float:
        """The share of running requests' remaining outputs reserved now. Constant
        (``reserve_output``) unless ``reserve_decay_steps``: then, like SGLang's
        ``new_token_ratio``, it falls by (reserve_output - reserve_min) / reserve_decay_steps
        per decode step down to ``reserve_min``, is set back to ``reserve_output`` when the
        replica runs nothing, and after a preemption to the running requests' decoded share
        (``retracted``)."""
        lim = self.limits
        if not lim.reserve_decay_steps:
            return lim.reserve_output
        if not (self.n or self.prefilling):  # idle: SGLang resets the ratio
            self._share_base, self._share_step = lim.reserve_output, self.step
            return lim.reserve_output
        fall = (lim.reserve_output - lim.reserve_min) / lim.reserve_decay_steps * (self.step - self._share_step)
        return max(lim.reserve_min, self._share_base - fall)

    #: Decode steps SGLang adds per running request to the decoded tokens when it estimates
    #: the share of outputs to reserve after a retraction (SGLANG_RETRACT_DECODE_STEPS).
    RETRACT_DECODE_STEPS = 20

    def retracted(self) -> None:
        """A sequence was preempted for lack of KV: the reserved share restarts from the
        running requests' (decoded tokens + 20 each) / output tokens, at most 1 (SGLang's
        retract_decode)."""
        if not self.limits.reserve_decay_steps:
            return
        t, n = self.table, self.n
        rids = self.d["rid"][:n]
        left = self.d["last"][:n] - self.step + 1
        out = t.output[rids]
        decoded = int((out - left).sum()) + self.RETRACT_DECODE_STEPS * (n + len(self.prefilling))
        total = int(out.sum()) + sum(int(t.output[p.rid]) for p in self.prefilling)
        self._share_base = min(1.0, decoded / total) if total else self.limits.reserve_output
        self._share_step = self.step

    def accepts(self, tokens: int, left: int) -> bool:
        """Whether this (decode) replica takes a prefilled request's KV now: ``tokens`` of KV
        with ``left`` output tokens to go. It needs a free seat and, with ``reserve_tokens``
        (SGLang's decode server), room for the KV plus that many tokens for it and for every
        request it already holds; with ``reserve_output``, room that leaves the running and
        inbound requests what they were promised (TensorRT-LLM's guaranteed-no-evict
        scheduler on the generation side); otherwise room for the KV. A replica that holds
        nothing takes any request whose KV fits."""
        lim, kv = self.limits, self.kv
        held = self.running + self.inbound
        if held >= lim.max_seqs:
            return False
        need = kv.blocks_for(tokens)
        if held and lim.reserve_tokens:
            need = kv.blocks_for(tokens + lim.reserve_tokens * (held + 1))
        elif held and lim.reserve_output:
            need = max(need, self._reserved() + self._promised_total + self._reservation(tokens, left))
        return kv.free >= need

    def accept(self, rid: int, tokens: int, left: int) -> int:
        """Allocate the KV of an accepted transfer (see ``accepts``); the blocks taken."""
        kv = self.kv
        need = kv.blocks_for(tokens)
        kv.allocate(need)
        self.inbound += 1
        if self.limits.reserve_output and not self.limits.reserve_tokens:
            promise = self._reservation(tokens, left) - need
            self._promised[rid] = promise
            self._promised_total += promise
        return need

    def _admission_tokens(self, prompt: int) -> int:
        """Tokens whose KV must be free to admit a prompt. SGLang admits a request only when
        its whole prompt fits (a chunked prefill admitted on its first chunk could be preempted
        by its own next chunk, again and again, while prefill-first starves the decodes that
        hold the memory); vLLM needs its first chunk only."""
        if self.limits.policy == "sglang":
            return prompt
        return min(prompt, self.limits.max_tokens)

    def _absorb_incoming(self) -> None:
        t = self.table
        while self.incoming and self.running < self.limits.max_seqs:
            rid = self.incoming.popleft()
            self.controller.reserved.pop((self.pool, self.index, rid))
            self.inbound -= 1
            self._promised_total -= self._promised.pop(rid, 0)
            self._join_decode(rid, int(t.prompt[rid] + t.generated[rid] - 1), int(t.output[rid] - t.generated[rid]),
                              0, 0, self._next_order())
            t.decode_admitted[rid] = self.events.now

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    def _admit(self, budget: int, have_work: bool, whole: int | None = None, batched: bool = False
               ) -> list[Prefilling]:
        """Admit waiting requests FCFS while seats, tokens and KV blocks last. ``whole``: prompt
        tokens left in the batch for a further prompt, which joins only whole (SGLang's
        max_prefill_tokens; ``batched``: the batch already holds a prompt)."""
        t, kv, lim = self.table, self.kv, self.limits
        admitted: list[Prefilling] = []
        per_hash = kv.blocks_for(kv.prefix_block_tokens) if kv.prefix_block_tokens else 0
        reserved = self._reserved()
        while self.waiting and self.running < lim.max_seqs and budget > 0:
            rid = self.waiting[0]
            prompt = int(t.prompt[rid] + t.generated[rid])
            hits, hashes = 0, None
            if lim.prefix_caching and kv.prefix_block_tokens:
                hashes = t.hashes(rid)
                hits = min(kv.count_prefix(hashes), (prompt - 1) // kv.prefix_block_tokens)
            cached = hits * kv.prefix_block_tokens
            todo = prompt - cached
            chunk = min(todo, budget) if lim.chunked_prefill else todo
            if chunk > budget and (admitted or have_work):
                break
            if whole is not None and (admitted or batched) and todo >= whole:
                break
            own = kv.blocks_for(cached + chunk) - hits * per_hash
            left = int(t.output[rid] - t.generated[rid])
            # vLLM needs room for the chunk only (the allocation below); see _admission_tokens
            if (lim.policy == "sglang" or lim.reserve_output) and \
                    kv.free < self._admission_blocks(prompt, left, reserved) - hits * per_hash:
                break
            if not kv.allocate(own):
                break
            if hits:
                kv.match_prefix(hashes[:hits])
            self.waiting.popleft()
            p = Prefilling(rid, cached, todo, left, own, hits * per_hash, hits, self._next_order())
            if lim.reserve_output:  # its term of _reserved(), without summing them all again
                reserved += self._reservation(prompt, left) - kv.blocks_for(cached + chunk)
            p.chunk = chunk
            self.prefilling.append(p)
            admitted.append(p)
            budget -= chunk
            if whole is not None:
                whole -= chunk
            t.cached_tokens[rid] = cached
            if np.isnan(t.first_scheduled[rid]):
                t.first_scheduled[rid] = self.events.now
                t.prefill_replica[rid] = self.index
        return admitted

    def _preempt_newest(self) -> None:
        """Recompute later: free the newest sequence's KV and put it back in the queue."""
        t, kv = self.table, self.kv
        newest_p = max(self.prefilling, key=lambda p: p.order, default=None)
        i = int(np.argmax(self.d["order"][: self.n])) if self.n else -1
        if newest_p is not None and (i < 0 or newest_p.order > self.d["order"][i]):
            self.prefilling.remove(newest_p)
            rid, blocks, hits, left = newest_p.rid, newest_p.blocks, newest_p.hits, newest_p.left
        else:
            idx = np.array([i])
            rid = int(self.d["rid"][i])
            blocks, hits = int(self._decode_blocks(idx)[0]), int(self.d["hits"][i])
            left = int(self.d["last"][i] - self.step + 1)
            self._drop_decode(np.arange(self.n) == i)
        t.generated[rid] = t.output[rid] - left
        kv.release(blocks)
        if hits:
            kv.unref_prefix(t.hashes(rid)[:hits])
        t.preemptions[rid] += 1
        self.controller.preempted(rid, self)

    def _complete(self) -> None:
        decode, chunks, start, duration_us, cause, request, categories, ctx_tokens = self._batch
        now = self.events.now
        t = self.table
        self.busy = False
        self.busy_s += duration_us * 1e-6
        self.iterations += 1
        n_decode = self.n if decode else 0
        prefill_tokens = sum(p.chunk for p in chunks)
        self.log.append(self.pool_index, self.index, start, duration_us, n_decode + len(chunks), prefill_tokens,
                        n_decode, ctx_tokens, self.kv.used / self.kv.capacity, cause, request, *categories)
        if decode:
            self.step += 1
            if self.next_last < self.step:  # some sequences emitted their last token
                last = self.d["last"][: self.n]
                self._finish_decodes(last < self.step, now)
        finished, handed = [], []
        for p in chunks:
            p.ctx += p.chunk
            p.todo -= p.chunk
            if p.todo:
                continue
            # the prompt is in: its first (or, after a preemption, next) token is out
            self.prefilling.remove(p)
            p.left -= 1
            rid = p.rid
            if np.isnan(t.first_token[rid]):
                t.first_token[rid] = now
            if np.isnan(t.prefill_done[rid]):
                t.prefill_done[rid] = now
            self._cache_prompt(p)
            t.generated[rid] = t.output[rid] - p.left
            if p.left <= 0:
                self.kv.release(p.blocks)
                if p.hits:
                    self.kv.unref_prefix(t.hashes(rid)[: p.hits])
                t.finish[rid] = now
                finished.append(rid)
            elif self.handoff:
                self.held[rid] = (p.blocks, p.hits)
                handed.append(rid)
            else:
                self._join_decode(rid, p.ctx, p.left, p.shared, p.hits, p.order)
        for rid in finished:
            self.controller.finished(rid, self)
        for rid in handed:
            self.controller.handoff(rid, self)
        self.kick()

    def _finish_decodes(self, done: np.ndarray, now: float) -> None:
        t, d = self.table, self.d
        idx = np.flatnonzero(done)
        rids = d["rid"][idx]
        blocks = self._decode_blocks(idx)
        hits = d["hits"][idx]
        t.finish[rids] = now
        t.generated[rids] = t.output[rids]
        self.kv.release(int(blocks.sum()))
        for rid, h in zip(rids.tolist(), hits.tolist(), strict=True):
            if h:
                self.kv.unref_prefix(t.hashes(rid)[:h])
        self._drop_decode(done)
        for rid in rids.tolist():
            self.controller.finished(rid, self)

    def _cache_prompt(self, p: Prefilling) -> None:
        """Index the prompt's whole hash blocks so later requests can reuse them."""
        kv = self.kv
        if not (self.limits.prefix_caching and kv.prefix_block_tokens):
            return
        hashes = self.table.hashes(p.rid)
        whole = min(len(hashes), int(self.table.prompt[p.rid]) // kv.prefix_block_tokens)
        per_hash = kv.blocks_for(kv.prefix_block_tokens)
        added = kv.insert_prefix(hashes[p.hits:whole], per_hash)
        moved = min(added * per_hash, p.blocks)
        p.blocks -= moved
        p.shared += moved
        p.hits += added

    def release_held(self, rid: int) -> None:
        """The KV of a handed-off request has left: free its blocks here."""
        self.cut()
        blocks, hits = self.held.pop(rid)
        self.kv.release(blocks)
        if hits:
            self.kv.unref_prefix(self.table.hashes(rid)[:hits])
        self.kick(Cause.MEMORY_FREED, rid)
