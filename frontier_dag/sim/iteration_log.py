"""The codes of the iteration log (iterations.parquet) and of the dependencies it records.

Every iteration records why it started when it did (``cause``, ``cause_request``) and
what it waited for (``waited_for_kind``, ``waited_for``): the previous iteration of its
replica, a request's arrival or KV transfer, or, for a request put back in the queue
after a preemption, what the preempting iteration waited for. The run-level analysis
follows these recorded edges (frontier_dag.analysis.run_graph).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from frontier_dag.cost.queries import CATEGORIES


class Cause(IntEnum):
    """Why an iteration started when it did (the ``cause`` column)."""

    CONTINUE = 0      # the replica's previous iteration ended
    ARRIVAL = 1       # a new request arrived
    KV_ARRIVED = 2    # a request's KV arrived from another pool
    MEMORY_FREED = 3  # KV blocks were freed (a handed-off request's KV left)
    REQUEUE = 4       # a preempted request was queued again

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def label_of(cls, code: int) -> str:
        """The label of a logged code (the code itself, as text, if it is none of these)."""
        try:
            return cls(code).label
        except ValueError:
            return str(code)


class Node(IntEnum):
    """What a recorded dependency points at (the ``*_kind`` columns); the id beside it is
    a row of iterations.parquet or a request id."""

    NONE = 0
    ITERATION = 1  # a row of iterations.parquet
    TRANSFER = 2   # the KV transfer of a request (its last one)
    ARRIVAL = 3    # the arrival of a request


#: A dependency: (Node kind, iteration row or request id).
Ref = tuple[int, int]
NO_REF: Ref = (Node.NONE, -1)

#: One row per iteration. The category columns split its duration along its critical path
#: (they sum to ``duration_us``).
ITERATION_COLUMNS = {"pool": np.int16, "replica": np.int32, "start_s": np.float64, "duration_us": np.float64,
                     "num_seqs": np.int32, "prefill_tokens": np.int32, "decode_seqs": np.int32, "ctx_tokens": np.int64,
                     "kv_usage": np.float32,
                     "cause": np.int16, "cause_request": np.int64, "waited_for_kind": np.int16, "waited_for": np.int64,
                     **{f"{c}_us": np.float32 for c in CATEGORIES}}
