"""Routing between entry pools at run time: the entry rule (``frontier_dag.dsl.entry``)
picks the pool each new request enters, from what it knows of the request and of the
entry pools' state.

A rule reads a ``RequestView`` and a list of ``PoolState`` (the entry pools, in the order
declared) and returns one of them. A pool's state is read when the rule asks for it, so a
rule that reads only the request costs nothing more per arrival. ``scheduler.routing``
then picks the replica of that pool (``ClusterWorker.pick``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from frontier_dag.dsl.entry import Entry
from frontier_dag.errors import SimulationError

if TYPE_CHECKING:
    from frontier_dag.sim.controller import ClusterWorker
    from frontier_dag.sim.state import RequestTable


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a router knows of a new request. ``output_tokens`` is the workload's: a real
    router does not know it before the request ends, so a rule that reads it is an oracle."""

    id: int
    prompt_tokens: int
    output_tokens: int
    arrival_s: float


class PoolState:
    """An entry pool as a rule sees it when a request arrives."""

    def __init__(self, worker: ClusterWorker, role: str, serves: str, gpus: int, ledger: TokenLedger):
        self.worker, self.role, self.serves, self.gpus = worker, role, serves, gpus
        self._ledger = ledger
        self.routed = 0  #: requests the rule sent here so far

    @property
    def name(self) -> str:
        """The pool's name in ``cluster.pools``."""
        return self.worker.name

    @property
    def replicas(self) -> int:
        return len(self.worker.replicas)

    @property
    def queued(self) -> int:
        """Requests waiting on its replicas to be admitted (their prompt to compute, or their
        KV arrived from another pool)."""
        return sum(len(r.waiting) + len(r.incoming) for r in self.worker.replicas)

    @property
    def running(self) -> int:
        """Sequences in its replicas' batches (prefilling or decoding)."""
        return sum(r.running for r in self.worker.replicas)

    @property
    def outstanding_tokens(self) -> int:
        """The prompt and output tokens of the requests it holds (queued, running, or with their
        KV on its way to it), each request's counted whole until it leaves: a prompt until the
        request's prefill hands it off (or its last token, on a pool that also decodes), the
        outputs of the requests it decodes until they finish."""
        return self._ledger.tokens[self.name]

    @property
    def kv_free_tokens(self) -> int:
        """Free KV-cache tokens over its replicas, as of the blocks taken now (a running decode
        stretch has taken its next steps' blocks)."""
        return sum(r.kv.free_blocks * r.kv.block_size for r in self.worker.replicas)

    @property
    def kv_capacity_tokens(self) -> int:
        return sum(r.kv.capacity * r.kv.block_size for r in self.worker.replicas)

    def __repr__(self) -> str:
        return f"PoolState({self.name}, role={self.role})"


class TokenLedger:
    """The outstanding tokens of every pool (``PoolState.outstanding_tokens``), kept as requests
    enter and leave pools, so that reading them costs nothing."""

    def __init__(self, n: int, pools: list[str]):
        self.tokens = dict.fromkeys(pools, 0)
        self._pool: list[str | None] = [None] * n
        self._charged = np.zeros(n, dtype=np.int64)

    def enter(self, rid: int, pool: str, tokens: int) -> None:
        self.leave(rid)
        self._pool[rid] = pool
        self._charged[rid] = tokens
        self.tokens[pool] += tokens

    def leave(self, rid: int) -> None:
        pool = self._pool[rid]
        if pool is not None:
            self.tokens[pool] -= int(self._charged[rid])
            self._pool[rid] = None


class EntryRouter:
    """Sends each new request to an entry pool, as the strategy's entry rule says."""

    def __init__(self, entry: Entry, pools: list[PoolState], table: RequestTable):
        self.entry, self.pools, self.table = entry, pools, table
        # one entry pool: nothing to choose, no rule to call
        self._rule = entry.make() if len(pools) > 1 else None

    def route(self, rid: int) -> PoolState:
        """The entry pool request ``rid`` enters."""
        if self._rule is None:
            chosen = self.pools[0]
        else:
            t = self.table
            request = RequestView(rid, int(t.prompt[rid]), int(t.output[rid]), float(t.arrival[rid]))
            try:
                picked = self._rule(request, self.pools)
            except Exception as exc:  # a user's rule: say which, and for which request
                raise SimulationError(f"{self._who()} failed for request {rid} (prompt {request.prompt_tokens} tokens): "
                                      f"{type(exc).__name__}: {exc}") from exc
            chosen = self._pool_of(picked, rid)
        chosen.routed += 1
        return chosen

    def _pool_of(self, picked: Any, rid: int) -> PoolState:
        for pool in self.pools:
            if picked is pool or picked in (pool.name, pool.role):
                return pool
        names = ", ".join(p.name for p in self.pools)
        raise SimulationError(f"{self._who()} returned {picked!r} for request {rid}; a rule returns one of the pools it "
                              f"is given ({names}): a PoolState, or its name or role")

    def _who(self) -> str:
        return f"entry rule {self.entry.describe()} ({self.entry.where})"

    def counts(self) -> dict[str, int]:
        """Requests sent to each entry pool."""
        return {p.name: p.routed for p in self.pools}
