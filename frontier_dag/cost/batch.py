"""A micro-batch's load as the coster reads it: the sums over its sequences
(``BatchSummary``), the keys its attention prices are memoised under, the load itself
(``MicroBatchLoad``, built lazily from the simulator's summary), and the ways a batch is
cut: into micro-batches, by attention data parallelism, and by a sliding window.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

#: Relative width of the buckets that attention prices are memoised in. Within a bucket
#: the batch has the same sequence and token counts and its context sum, longest context
#: and prefill work differ by less than this fraction, so reusing the price is accurate to
#: well under 1% while a decode batch, whose contexts grow by one token per step, reuses a
#: price for many iterations. 0 memoises only identical batches.
ATTENTION_MEMO_RESOLUTION = 0.005
_LOG_STEP = math.log1p(ATTENTION_MEMO_RESOLUTION)


class BatchSummary(NamedTuple):
    """Sums over a micro-batch's sequences: everything an iteration's Syms and the attention
    memo need, so that the simulator can supply it without building per-sequence arrays."""

    seqs: int
    tokens: int
    prefill_tokens: int
    prefill_seqs: int
    ctx_tokens: int
    ctx_max: int
    work: int  # sum of q x ctx: attention work against the cache
    q_squared: int  # sum of q x q: attention work among the new tokens
    decode_ctx_tokens: int = 0  # the same over the sequences with one new token (q == 1)
    decode_ctx_max: int = 0
    prefill_ctx_max: int = 0  # the longest context among the others

    @staticmethod
    def of(q: np.ndarray, ctx: np.ndarray) -> BatchSummary:
        prefill = q > 1
        decode_ctx, prefill_ctx = ctx[~prefill], ctx[prefill]
        return BatchSummary(len(q), int(q.sum()), int(q[prefill].sum()), int(prefill.sum()), int(ctx.sum()),
                            int(ctx.max()) if len(ctx) else 0, int((q * ctx).sum()), int((q * q).sum()),
                            int(decode_ctx.sum()), int(decode_ctx.max()) if len(decode_ctx) else 0,
                            int(prefill_ctx.max()) if len(prefill_ctx) else 0)

    def decode_part(self) -> BatchSummary:
        """The summary of the sequences with one new token."""
        n = self.seqs - self.prefill_seqs
        return BatchSummary(n, n, 0, 0, self.decode_ctx_tokens, self.decode_ctx_max, self.decode_ctx_tokens, n,
                            self.decode_ctx_tokens, self.decode_ctx_max, 0)

    def prefill_part(self) -> BatchSummary:
        """The summary of the sequences with several new tokens."""
        n = self.seqs - self.prefill_seqs
        ctx = self.ctx_tokens - self.decode_ctx_tokens
        return BatchSummary(self.prefill_seqs, self.prefill_tokens, self.prefill_tokens, self.prefill_seqs, ctx,
                            self.prefill_ctx_max, self.work - self.decode_ctx_tokens, self.q_squared - n,
                            0, 0, self.prefill_ctx_max)

    def stats(self, kv_out_tokens: int = 0) -> tuple[int, ...]:
        """Values of frontier_dag.dsl.BATCH_STATS, in order."""
        return (self.tokens, self.seqs, self.prefill_tokens, self.prefill_seqs, self.seqs - self.prefill_seqs,
                self.ctx_tokens, self.ctx_tokens + self.tokens, kv_out_tokens)


STAT_NAMES = ("tokens", "seqs", "prefill_tokens", "prefill_seqs", "decode_seqs", "ctx_tokens", "kv_tokens", "kv_out_tokens")


def _bucket(value: int, _log1p=math.log1p, _step=_LOG_STEP) -> int:
    """The memo bucket of a non-negative count (see ATTENTION_MEMO_RESOLUTION)."""
    return int(_log1p(value) / _step)


def coster_memo_is_bucketed() -> bool:
    return ATTENTION_MEMO_RESOLUTION > 0


def decode_key(seqs: int, ctx_tokens: int, ctx_max: int) -> tuple:
    """``attention_key`` of a decode batch (one new token per sequence) from its sums."""
    return (seqs, seqs, _bucket(ctx_tokens), _bucket(ctx_max))


@functools.cache
def _bucket_start(bucket: int) -> int:
    """The smallest count in memo bucket ``bucket`` or a later one (found from the bucket's
    edge, then checked with ``_bucket`` itself so that rounding cannot move it)."""
    start = max(0, math.ceil(math.expm1(bucket * _LOG_STEP)))
    while _bucket(start) < bucket:
        start += 1
    while start > 0 and _bucket(start - 1) >= bucket:
        start -= 1
    return start


def decode_key_runs(seqs: int, ctx_tokens: int, ctx_max: int, steps: int) -> list[tuple[tuple, int]]:
    """``decode_key`` of ``steps`` consecutive decode steps of ``seqs`` sequences whose context
    sum and longest context are ``ctx_tokens`` and ``ctx_max`` at the first (each step adds
    one token to every sequence), as runs ``(key, steps with it)`` in step order. Both
    buckets only grow, so a key never comes back once its run ends; a run costs two bucket
    evaluations, however many steps it spans."""
    runs: list[tuple[tuple, int]] = []
    step = 0
    while step < steps:
        ctx, top = ctx_tokens + seqs * step, ctx_max + step
        in_ctx, in_top = _bucket(ctx), _bucket(top)
        to_ctx = -(-(_bucket_start(in_ctx + 1) - ctx) // seqs)  # steps until the context sum leaves its bucket
        length = min(to_ctx, _bucket_start(in_top + 1) - top, steps - step)
        runs.append(((seqs, seqs, in_ctx, in_top), length))
        step += length
    return runs


def attention_key(summary: BatchSummary) -> tuple:
    """The memo key of an attention batch (see ATTENTION_MEMO_RESOLUTION)."""
    s = summary
    if s.tokens == s.seqs:  # decode: one new token each
        return decode_key(s.seqs, s.ctx_tokens, s.ctx_max)
    return (s.seqs, s.tokens, s.prefill_seqs, _bucket(s.ctx_tokens), _bucket(s.ctx_max), _bucket(s.work),
            _bucket(s.q_squared))


def attention_family_of(summary: BatchSummary) -> str:
    if summary.prefill_seqs == 0:
        return "attention_decode"
    return "attention_prefill" if summary.prefill_seqs == summary.seqs else "attention_mixed"


class MicroBatchLoad:
    """One micro-batch of an iteration: per sequence, new tokens ``q`` and cached tokens
    ``ctx``. The arrays may be supplied lazily (``materialize``) with a ``summary``: they are
    then built only when a price is not memoised."""

    __slots__ = ("_q", "_ctx", "_materialize", "kv_out_tokens", "expert_loads", "summary", "stretch")

    def __init__(self, q: np.ndarray | None = None, ctx: np.ndarray | None = None, kv_out_tokens: int = 0,
                 expert_loads: np.ndarray | None = None, summary: BatchSummary | None = None, materialize=None,
                 stretch: tuple[np.ndarray, int] | None = None):
        self._q, self._ctx, self._materialize = q, ctx, materialize
        #: ``(ctx0, j)`` for step j of a decode stretch: one new token per sequence, contexts ``ctx0 + j``
        self.stretch = stretch
        self.kv_out_tokens = int(kv_out_tokens)  # KV tokens of sequences whose prefill completes now
        self.expert_loads = expert_loads  # (layers, ranks, experts per rank) routed tokens
        self.summary = summary if summary is not None else BatchSummary.of(q, ctx)

    def _arrays(self) -> None:
        self._q, self._ctx = self._materialize()
        self._materialize = None

    def part(self, decode: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(q, ctx)`` of the sequences with one new token (``decode``) or more, in batch
        order; from the lazy arrays' own ``part`` where they have one (without building the
        whole batch)."""
        split = getattr(self._materialize, "part", None) if self._q is None else None
        if split is not None:
            return split(decode)
        q, ctx = self.q, self.ctx
        chosen = (q == 1) if decode else (q > 1)
        return q[chosen], ctx[chosen]

    @property
    def q(self) -> np.ndarray:
        if self._q is None:
            self._arrays()
        return self._q

    @property
    def ctx(self) -> np.ndarray:
        if self._ctx is None:
            self._arrays()
        return self._ctx

    @property
    def tokens(self) -> int:
        return self.summary.tokens

    def stats(self) -> dict[str, int]:
        return dict(zip(STAT_NAMES, self.summary.stats(self.kv_out_tokens), strict=True))


def split_micro_batches(q: np.ndarray, ctx: np.ndarray, parts: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deal sequences into ``parts`` micro-batches with balanced tokens (longest first)."""
    order = np.argsort(-q, kind="stable")
    buckets: list[list[int]] = [[] for _ in range(parts)]
    load = np.zeros(parts)
    for i in order:
        j = int(np.argmin(load))
        buckets[j].append(i)
        load[j] += q[i]
    return [(q[b], ctx[b]) for b in (np.array(b, dtype=np.int64) for b in buckets)]


def stage_env(stage: str, loads: list[MicroBatchLoad]) -> tuple[dict[str, int], dict[str, MicroBatchLoad]]:
    env, batches = {}, {}
    for i, load in enumerate(loads):
        key = f"{stage}.mb{i}"
        batches[key] = load
        for stat, value in load.stats().items():
            env[f"{key}.{stat}"] = value
    return env, batches


def dp_share(q: np.ndarray, ctx: np.ndarray, dp: int) -> tuple[np.ndarray, np.ndarray]:
    """The sequences of the most loaded of ``dp`` attention-DP ranks when sequences are dealt
    out longest first (the scheduler balances ranks; rank 0 gets the largest share)."""
    if dp <= 1 or len(q) <= 1:
        return q, ctx
    order = np.argsort(-(q * (ctx + q) + ctx), kind="stable")[::dp]
    return q[order], ctx[order]


def windowed_batch(q: np.ndarray, ctx: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """A sliding-window attention batch (each query attends to at most ``window`` keys) as
    a full-attention batch of the same work: a decode sees ``min(ctx, window - 1)`` cached
    keys, a chunk of up to ``2 x window`` tokens ``min(ctx, window)``, and a longer chunk
    becomes pieces of ``2 x window`` new tokens without cache (a causal piece of 2W tokens
    attends to W keys per query on average, as the window does)."""
    span = 2 * window
    long = q > span
    ctx = np.where(q == 1, np.minimum(ctx, window - 1), np.minimum(ctx, window))
    if not long.any():
        return q, ctx
    pieces = [np.minimum(span, qi - np.arange(0, qi, span)) for qi in q[long].tolist()]
    extra = np.concatenate(pieces)
    return (np.concatenate([q[~long], extra]),
            np.concatenate([ctx[~long], np.zeros(len(extra), dtype=ctx.dtype)]))
