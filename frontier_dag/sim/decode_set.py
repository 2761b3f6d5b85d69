"""The sequences of a replica that decode, on one clock.

Most iterations only decode, and each decoding sequence then gains one token. The decode
set therefore keeps a clock instead of per-sequence counters: sequence i has
``offset[i] + step`` cached tokens at decode step ``step`` and emits its last token at step
``last[i]``. Sums, the longest context, the KV blocks that fill up at each step (a
histogram of offsets modulo the block size) and the next finishing step are kept as plain
numbers, so a decode step costs the same for 10 or 10,000 sequences; arrays are built only
when a price is not memoised.
"""

from __future__ import annotations

import numpy as np

#: Per-sequence columns: request id, cached tokens at step 0, last decode step, KV blocks it
#: shares through the prefix cache, prefix-cache entries it references, admission order.
COLUMNS = ("rid", "offset", "last", "shared", "hits", "order")
NONE_LEFT = 2**62  # ``next_last`` of an empty set
NO_OFFSET = -(2**62)  # ``offset_max`` of an empty set


class DecodeSet:
    """Up to ``capacity`` decoding sequences of a replica whose KV blocks hold ``block_size`` tokens."""

    def __init__(self, capacity: int, block_size: int):
        self.block_size = block_size
        # one row per column, so that dropping sequences compacts every column in one operation
        self._table = np.zeros((len(COLUMNS), capacity), dtype=np.int64)
        self.d = dict(zip(COLUMNS, self._table, strict=True))
        self.n = 0
        self.step = 0
        self.offset_sum = 0
        self.offset_max = NO_OFFSET
        self.next_last = NONE_LEFT
        self.fill = [0] * block_size  # sequences by offset % block_size

    def join(self, rid: int, ctx: int, left: int, shared: int, hits: int, order: int) -> None:
        """Sequence ``rid`` with ``ctx`` cached tokens decodes its next ``left`` tokens from the
        next decode step on."""
        i, d = self.n, self.d
        offset = ctx - self.step
        last = self.step + left - 1
        d["rid"][i], d["offset"][i], d["last"][i] = rid, offset, last
        d["shared"][i], d["hits"][i], d["order"][i] = shared, hits, order
        self.n += 1
        self.offset_sum += offset
        self.offset_max = max(self.offset_max, offset)
        self.next_last = min(self.next_last, last)
        self.fill[offset % self.block_size] += 1

    def drop(self, leaving: np.ndarray) -> np.ndarray:
        """Remove the sequences where ``leaving`` (a mask over the set) is true; their columns
        (one row per entry of COLUMNS)."""
        n = self.n
        rows = self._table[:, :n]
        gone, kept = rows[:, leaving], rows[:, ~leaving]
        offsets = gone[1]
        self.offset_sum -= int(offsets.sum())
        for r in (offsets % self.block_size).tolist():
            self.fill[r] -= 1
        m = kept.shape[1]
        self._table[:, :m] = kept
        self.n = m
        self.offset_max = int(kept[1].max()) if m else NO_OFFSET
        self.next_last = int(kept[2].min()) if m else NONE_LEFT
        return gone

    # -- the clock -----------------------------------------------------------------------------
    def new_blocks(self, ahead: int = 0) -> int:
        """KV blocks the sequences need for decode step ``step + ahead``: one for each sequence
        whose last block is full."""
        return self.fill[-(self.step + ahead) % self.block_size]

    def new_blocks_ahead(self, steps: int) -> list[int]:
        """``new_blocks(j)`` for j in range(steps), as slices of the histogram (it repeats with
        the block size, walking it backwards)."""
        fill, size = self.fill, self.block_size
        out: list[int] = []
        i = -self.step % size
        while len(out) < steps:
            k = min(steps - len(out), i + 1)
            out += fill[i - k + 1:i + 1][::-1]
            i = size - 1
        return out

    def context_sum(self, step: int) -> int:
        """Cached tokens of all sequences at decode step ``step``."""
        return self.offset_sum + self.n * step

    def finished(self) -> np.ndarray:
        """Mask of the sequences that emitted their last token before the current step."""
        return self.d["last"][: self.n] < self.step

    # -- per-sequence arrays (only when a price is not memoised) --------------------------------
    def contexts(self, idx=slice(None)) -> np.ndarray:
        """Cached tokens of the sequences ``idx`` now."""
        return self.d["offset"][: self.n][idx] + self.step

    def remaining(self, idx=slice(None)) -> np.ndarray:
        """Tokens the sequences ``idx`` still emit, from the current step on."""
        return self.d["last"][: self.n][idx] - self.step + 1

    def own_blocks(self, idx) -> np.ndarray:
        """KV blocks each sequence in ``idx`` holds itself (beyond shared prefix blocks)."""
        return self.blocks_held(self.d["offset"][: self.n][idx], self.d["shared"][: self.n][idx])

    def blocks_held(self, offsets: np.ndarray, shared: np.ndarray) -> np.ndarray:
        """``own_blocks`` of sequences with these ``offset`` and ``shared`` columns (those
        ``drop`` returns, say)."""
        size = self.block_size
        return (offsets + self.step + size - 1) // size - shared

    def step_arrays(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """New and cached tokens of every sequence at decode step ``step``."""
        return np.ones(self.n, dtype=np.int64), self.d["offset"][: self.n] + step

    def steps_contexts(self, ahead: list[int]) -> np.ndarray:
        """Cached tokens of every sequence at each step ``step + j`` of ``ahead``, one step after
        the other in one flat array."""
        return (self.d["offset"][: self.n] + (np.array(ahead, dtype=np.int64)[:, None] + self.step)).ravel()

    def newest(self) -> int:
        """Index of the sequence admitted last (-1 when the set is empty)."""
        return int(np.argmax(self.d["order"][: self.n])) if self.n else -1
