"""The scheduling-policy protocol, and the continuous batching the engines share.

A replica asks its policy four things: plan the next iteration (``plan``), admit waiting
requests into it (``admit``), take a prefilled request's KV from another pool
(``accepts`` / ``accept``, on decode replicas), and react when a sequence is preempted
(``preempted``). The replica keeps the state (its queues, its decode set, its KV block
manager, the request table) and does the bookkeeping; the policy decides.

``SchedulingPolicy.plan`` is continuous batching as vLLM and SGLang share it: running
sequences first (every decoding sequence one token, prompts in prefill their next chunk)
within the token budget; when their KV does not fit, the newest sequence is preempted and
recomputed later; then waiting requests are admitted in queue order while seats, tokens
and KV blocks last. An engine changes it through small hooks: ``prefill_first`` (SGLang's
prefill batches), ``admission_tokens`` and ``checks_admission`` (what must be free to admit
a prompt), ``order_waiting`` (who is admitted first), ``victim`` (who is preempted).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isnan
from typing import TYPE_CHECKING, ClassVar

from frontier_dag.config.run import PoolConfig, SchedulerConfig
from frontier_dag.sim.batch import Batch, Prefilling, TokenBudget
from frontier_dag.sim.policies.reservation import OutputReservation

if TYPE_CHECKING:
    from frontier_dag.sim.replica import ReplicaWorker


@dataclass(frozen=True, kw_only=True)
class Limits:
    """A replica's scheduler settings (with attention data parallelism, the sequence and
    token limits of all its DP ranks together)."""

    max_seqs: int
    max_tokens: int
    chunked_prefill: bool
    prefix_caching: bool
    max_prefill: int = 0  # SchedulerConfig.max_prefill_tokens (0: none)
    reserve_output: float = 0.0  # SchedulerConfig.reserve_output (0 on prefill-only replicas)
    reserve_min: float = 0.0  # SchedulerConfig.reserve_output_min
    reserve_decay_steps: int = 0  # SchedulerConfig.reserve_output_decay_steps
    reserve_tokens: int = 0  # SchedulerConfig.decode_reserve_tokens (decode replicas of PD only)

    @classmethod
    def of(cls, scheduler: SchedulerConfig, pool: PoolConfig) -> Limits:
        dp = pool.attention_dp
        # a pipelined replica's lanes share its sequences (frontier_dag.sim.pipeline)
        return cls(max_seqs=-(-scheduler.max_num_seqs * dp // pool.pp), max_tokens=scheduler.max_num_batched_tokens * dp,
                   chunked_prefill=scheduler.chunked_prefill, prefix_caching=scheduler.prefix_caching,
                   max_prefill=(scheduler.max_prefill_tokens or 0) * dp,
                   reserve_output=0.0 if pool.role == "prefill" else scheduler.reserve_output,
                   reserve_min=scheduler.reserve_output_min, reserve_decay_steps=scheduler.reserve_output_decay_steps,
                   reserve_tokens=scheduler.decode_reserve_tokens if pool.role == "decode" else 0)


class SchedulingPolicy:
    """How one replica forms its batches. Subclasses set ``name`` and override hooks; one
    instance serves one replica (``attach``)."""

    name: ClassVar[str] = ""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.replica: ReplicaWorker | None = None
        self.reservation: OutputReservation | None = None

    @classmethod
    def from_config(cls, scheduler: SchedulerConfig, pool: PoolConfig) -> SchedulingPolicy:
        """The policy of one replica of ``pool`` under the config's ``scheduler`` section."""
        return cls(Limits.of(scheduler, pool))

    def attach(self, replica: ReplicaWorker) -> None:
        self.replica = replica
        lim = self.limits
        if lim.reserve_output:
            self.reservation = OutputReservation(replica, lim.reserve_output, lim.reserve_min, lim.reserve_decay_steps)

    # -- the protocol ---------------------------------------------------------------------------
    def plan(self) -> Batch | None:
        """Choose the next iteration's work and allocate its KV; None when nothing can run."""
        r, lim, kv = self.replica, self.limits, self.replica.kv
        decode_set = r.decode
        if r.incoming:
            self.seat_arrived()
        self.order_waiting()
        while True:
            prefill_first = self.prefill_first()
            decode = decode_set.n > 0 and not prefill_first
            budget = TokenBudget(lim.max_tokens - (decode_set.n if decode else 0), lim.max_prefill or None)
            need = decode_set.new_blocks() if decode else 0
            chunks = []
            for p in r.prefilling:
                chunk = min(p.todo, budget.tokens) if lim.chunked_prefill else p.todo
                if chunk <= 0 or (chunk > budget.tokens and (chunks or decode)):
                    p.chunk = 0
                    continue
                p.chunk = chunk
                need += max(0, kv.blocks_for(p.ctx + chunk) - p.blocks - p.shared)
                chunks.append(p)
                budget.take(chunk)
            if kv.allocate(need):
                break
            if r.running <= 1:
                return None  # one sequence that cannot grow: the controller reports the deadlock
            self.preempt()
        for p in chunks:
            p.blocks = max(p.blocks, kv.blocks_for(p.ctx + p.chunk) - p.shared)
        if self.admits(prefill_first):
            chunks += self.admit(budget, have_work=decode or bool(chunks), batched=bool(chunks))
        if not decode and not chunks:
            if not (prefill_first and decode_set.n):
                return None
            if not kv.allocate(decode_set.new_blocks()):  # nothing could be prefilled (memory): decode instead
                return None
            decode = True
        return r.batch(decode, chunks)

    def admit(self, budget: TokenBudget, have_work: bool, batched: bool) -> list[Prefilling]:
        """Admit waiting requests in queue order while seats, tokens and KV blocks last, each
        with its first chunk. ``have_work``: the batch already holds work, so a prompt that
        overdraws the budget waits; ``batched``: it already holds a prompt (see
        ``TokenBudget.joins_whole``)."""
        r, lim = self.replica, self.limits
        t, kv = r.table, r.kv
        admitted: list[Prefilling] = []
        per_hash = kv.prefix_blocks_each
        reserved = self.reservation.reserved() if self.reservation is not None else 0
        # a request whose KV is on its way here holds a seat (a pool that prefills and decodes
        # takes both): seated after a new prompt, it could find its blocks but no seat
        waiting, running = r.waiting, r.running + r.inbound
        while waiting and running < lim.max_seqs and budget.tokens > 0:
            rid = waiting[0]
            prompt = int(t.prompt[rid] + t.generated[rid])
            hits, hashes = 0, None
            if lim.prefix_caching and kv.prefix_block_tokens:
                hashes = t.hashes(rid)
                hits = min(kv.cached_prefix(hashes), (prompt - 1) // kv.prefix_block_tokens)
            cached = hits * kv.prefix_block_tokens
            todo = prompt - cached
            chunk = min(todo, budget.tokens) if lim.chunked_prefill else todo
            if chunk > budget.tokens and (admitted or have_work):
                break
            if (admitted or batched) and not budget.joins_whole(todo):
                break
            own = kv.blocks_for(cached + chunk) - hits * per_hash
            left = int(t.output[rid] - t.generated[rid])
            if self.checks_admission() and \
                    not kv.can_allocate(self.admission_blocks(prompt, left, reserved) - hits * per_hash):
                break
            if not kv.allocate(own):
                break
            if hits:
                kv.match_prefix(hashes[:hits])
            waiting.popleft()
            p = Prefilling(rid, cached, todo, left, own, hits * per_hash, hits, r.next_order(),
                           first=isnan(t.first_scheduled[rid]))
            if self.reservation is not None:  # its term of reserved(), without summing them all again
                reserved += self.reservation.blocks(prompt, left) - kv.blocks_for(cached + chunk)
            p.chunk = chunk
            r.start_prefill(p)
            admitted.append(p)
            running += 1
            budget.take(chunk)
        return admitted

    def accepts(self, tokens: int, left: int) -> bool:
        """Whether this (decode) replica takes a prefilled request's KV now: ``tokens`` of KV
        with ``left`` output tokens to go. It needs a free seat and, with ``reserve_tokens``
        (SGLang's decode server), room for the KV plus that many tokens for it and for every
        request it already holds; with an output reservation, room that leaves the running
        and inbound requests what they were promised (TensorRT-LLM's guaranteed-no-evict
        scheduler on the generation side); otherwise room for the KV. A replica that holds
        nothing takes any request whose KV fits."""
        r, lim, kv = self.replica, self.limits, self.replica.kv
        held = r.running + r.inbound
        if held >= lim.max_seqs:
            return False
        need = kv.blocks_for(tokens)
        if held and lim.reserve_tokens:
            need = kv.blocks_for(tokens + lim.reserve_tokens * (held + 1))
        elif held and self.reservation is not None:
            need = max(need, self.reserved() + self.reservation.promised_total + self.reservation.blocks(tokens, left))
        return kv.can_allocate(need)

    def accept(self, rid: int, tokens: int, left: int) -> int:
        """Allocate the KV of an accepted transfer (see ``accepts``); the blocks taken."""
        kv = self.replica.kv
        need = kv.blocks_for(tokens)
        kv.allocate(need)
        self.replica.inbound += 1
        if self.reservation is not None and not self.limits.reserve_tokens:
            self.reservation.promise(rid, self.reservation.blocks(tokens, left) - need)
        return need

    def preempted(self) -> None:
        """A sequence was preempted for lack of KV (the reservation restarts, see
        OutputReservation.retract)."""
        if self.reservation is not None:
            self.reservation.retract()

    # -- the hooks engines override ------------------------------------------------------------
    def prefill_first(self) -> bool:
        """Whether the next iteration prefills without decoding (vLLM: never)."""
        return False

    def admits(self, prefill_first: bool) -> bool:
        """Whether waiting requests join the iteration planned (vLLM: always)."""
        return True

    def checks_admission(self) -> bool:
        """Whether a request is admitted only when ``admission_blocks`` are free (vLLM: only
        with an output reservation; otherwise it needs room for its first chunk)."""
        return self.reservation is not None

    def admission_tokens(self, prompt: int) -> int:
        """Tokens whose KV must be free to admit a prompt (vLLM: its first chunk)."""
        return min(prompt, self.limits.max_tokens)

    def admission_blocks(self, prompt: int, left: int, reserved: int) -> int:
        """Free KV blocks needed to admit a prompt with ``left`` output tokens to go, when the
        running sequences are promised ``reserved`` more (``reserved``)."""
        need = self.replica.kv.blocks_for(self.admission_tokens(prompt))
        if self.reservation is not None:
            need = max(need, reserved + self.reservation.blocks(prompt, left))
        return need

    def reserved(self) -> int:
        """Blocks promised to the running sequences beyond what they hold (0 without a reservation)."""
        return self.reservation.reserved() if self.reservation is not None else 0

    def order_waiting(self) -> None:
        """Put the waiting requests (``replica.waiting``) in the order they are admitted, when
        an iteration is planned. FCFS: as they arrived, a preempted request first."""

    def victim(self) -> Prefilling | int:
        """The sequence to preempt: vLLM's newest (a sequence in prefill, or the index of one
        in the decode set)."""
        r = self.replica
        newest = max(r.prefilling, key=lambda p: p.order, default=None)
        i = r.decode.newest()
        if newest is not None and (i < 0 or newest.order > r.decode.d["order"][i]):
            return newest
        return i

    # -- shared steps ---------------------------------------------------------------------------
    def seat_arrived(self) -> None:
        """Seat requests whose KV arrived, in arrival order while seats last."""
        r = self.replica
        while r.incoming and r.running < self.limits.max_seqs:
            rid = r.incoming.popleft()
            if self.reservation is not None:
                self.reservation.fulfil(rid)
            r.join_arrived(rid)

    def preempt(self) -> None:
        """Free the victim's KV and queue it again (recompute), then react."""
        self.replica.preempt(self.victim())
        self.preempted()
