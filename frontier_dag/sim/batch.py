"""The records a replica plans and runs: sequences in prefill, the token budget of an
iteration, a planned iteration, and a planned run of decode steps."""

from __future__ import annotations

from dataclasses import dataclass

from frontier_dag.cost.batch import BatchSummary
from frontier_dag.sim.iteration_log import Ref


class Prefilling:
    """A sequence whose prompt (plus, after a preemption, its generated tokens) is computing."""

    __slots__ = ("rid", "ctx", "todo", "left", "blocks", "shared", "hits", "order", "chunk", "first")

    def __init__(self, rid: int, ctx: int, todo: int, left: int, blocks: int, shared: int, hits: int, order: int,
                 first: bool = False):
        self.rid = rid
        self.ctx = ctx        # tokens whose KV is computed (or served by the prefix cache)
        self.todo = todo      # tokens still to compute
        self.left = left      # output tokens still to emit
        self.blocks = blocks  # KV blocks it holds itself
        self.shared = shared  # KV blocks it uses from the prefix cache
        self.hits = hits      # prefix-cache entries it references
        self.order = order    # admission order on its replica (the newest is preempted first)
        self.chunk = 0        # tokens it computes in the iteration being planned
        self.first = first    # the iteration being planned is the first to work on the request


class TokenBudget:
    """New tokens an iteration may still take: ``max_num_batched_tokens`` less what it holds
    (a token per decoding sequence, prompt chunks). With SGLang's ``max_prefill_tokens``,
    ``prefill`` is what prompts may still add; a further prompt joins only whole and within it.
    A prompt that is never split may overdraw the budget when it is alone in the batch."""

    __slots__ = ("tokens", "prefill")

    def __init__(self, tokens: int, prefill: int | None = None):
        self.tokens = tokens
        self.prefill = prefill

    def take(self, tokens: int) -> None:
        self.tokens -= tokens
        if self.prefill is not None:
            self.prefill -= tokens

    def joins_whole(self, todo: int) -> bool:
        """Whether a further prompt with ``todo`` tokens to compute fits the prefill limit."""
        return self.prefill is None or todo < self.prefill


class Batch:
    """An iteration planned on a replica: its decode step and prompt chunks, when it started,
    its price, and what it waited for."""

    __slots__ = ("decode", "chunks", "summary", "kv_out_tokens", "joined", "start", "duration_us", "categories",
                 "cause", "cause_request", "after")

    def __init__(self, decode: bool, chunks: list[Prefilling], summary: BatchSummary, kv_out_tokens: int,
                 joined: list[int]):
        self.decode = decode  # every decoding sequence of the replica takes a step
        self.chunks = chunks
        self.summary = summary
        self.kv_out_tokens = kv_out_tokens  # KV tokens the iteration hands off to another pool
        self.joined = joined  # requests whose KV arrived and that decode from this iteration on
        # the replica sets start, duration_us, categories (its time by category), cause,
        # cause_request and after (what it waited for, a Ref) when the iteration starts


@dataclass(slots=True)
class Stretch:
    """Decode steps planned at once (see ReplicaWorker.launch_stretch): per step its price,
    critical-path categories, cached tokens and new KV blocks."""

    start: float
    durations: list[float]
    categories: list  # per category, a list over the steps or one number for all of them
    contexts: list[int]
    needs: list[int]
    cause: int
    cause_request: int
    after: Ref

    def cut_after(self, j: int) -> int:
        """Keep the steps up to ``j``; the KV blocks the later steps had taken."""
        freed = sum(self.needs[j + 1:])
        for column in (self.durations, self.contexts, self.needs, *self.categories):
            if isinstance(column, list):
                del column[j + 1:]
        return freed
