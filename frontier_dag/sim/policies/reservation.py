"""KV kept free for the running requests' outputs when another request is admitted.

SGLang admits a request only when the KV of its prompt and of ``new_token_ratio`` of every
running request's remaining output fits; TensorRT-LLM's guaranteed-no-evict scheduler
reserves the whole outputs. ``reserve_output`` is that share. With ``reserve_decay_steps``
it falls per decode step to ``reserve_min`` as SGLang's ratio does, is set back when the
replica idles, and after a preemption restarts from the running requests' decoded share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from frontier_dag.sim.replica import ReplicaWorker

#: Decode steps SGLang adds per running request to the decoded tokens when it estimates
#: the share of outputs to reserve after a retraction (SGLANG_RETRACT_DECODE_STEPS).
RETRACT_DECODE_STEPS = 20


class OutputReservation:
    """The output share one replica reserves, and the blocks it has promised."""

    def __init__(self, replica: ReplicaWorker, share: float, minimum: float, decay_steps: int):
        self.replica = replica
        self.initial, self.minimum, self.decay_steps = share, minimum, decay_steps
        self._base, self._base_step = share, 0  # the share as it decays: its value at decode step _base_step
        self._promised: dict[int, int] = {}  # inbound requests' output reservations (see promise)
        self.promised_total = 0

    def share(self) -> float:
        """The share of running requests' remaining outputs reserved now."""
        if not self.decay_steps:
            return self.initial
        r = self.replica
        step = r.decode.step
        if not (r.decode.n or r.prefilling):  # idle: SGLang resets the ratio
            self._base, self._base_step = self.initial, step
            return self.initial
        fall = (self.initial - self.minimum) / self.decay_steps * (step - self._base_step)
        return max(self.minimum, self._base - fall)

    def blocks(self, ctx: int, left: int) -> int:
        """KV blocks a request of ``ctx`` tokens with ``left`` output tokens to go is promised
        when it is admitted."""
        return self.replica.kv.blocks_for(ctx + int(self.share() * left))

    def reserved(self) -> int:
        """Blocks promised to the running sequences beyond what they hold: the KV of their
        prompts still to prefill and of the reserved share of their remaining outputs."""
        r = self.replica
        share, kv, size, decode = self.share(), r.kv, r.kv.block_size, r.decode
        ctx = decode.contexts()
        left = decode.remaining()
        grown = (ctx + (share * left).astype(np.int64) + size - 1) // size - (ctx + size - 1) // size
        total = int(grown.sum())
        for p in r.prefilling:
            total += kv.blocks_for(p.ctx + p.todo + int(share * p.left)) - kv.blocks_for(p.ctx + p.chunk)
        return total

    def retract(self) -> None:
        """A sequence was preempted for lack of KV: the share restarts from the running
        requests' (decoded tokens + 20 each) / output tokens, at most 1 (SGLang's
        retract_decode)."""
        if not self.decay_steps:
            return
        r = self.replica
        t, decode = r.table, r.decode
        out = t.output[decode.d["rid"][: decode.n]]
        decoded = int((out - decode.remaining()).sum()) + RETRACT_DECODE_STEPS * (decode.n + len(r.prefilling))
        total = int(out.sum()) + sum(int(t.output[p.rid]) for p in r.prefilling)
        self._base = min(1.0, decoded / total) if total else self.initial
        self._base_step = decode.step

    # -- requests whose KV is on its way (decode replicas) -------------------------------------
    def promise(self, rid: int, blocks: int) -> None:
        self._promised[rid] = blocks
        self.promised_total += blocks

    def fulfil(self, rid: int) -> None:
        """Request ``rid`` runs: what it was promised counts among the running requests'."""
        self.promised_total -= self._promised.pop(rid, 0)
