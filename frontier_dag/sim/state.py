"""Per-request state and results as numpy columns: no per-request Python objects, so
memory grows only by the result rows."""

from __future__ import annotations

from array import array

import numpy as np

from frontier_dag.sim.columns import Categories, Columns
from frontier_dag.sim.workload import Requests


class RequestTable:
    """Columns indexed by request id (the request's position in the workload)."""

    def __init__(self, requests: Requests):
        n = len(requests)
        self.n = n
        self.requests = requests
        self.arrival = requests.arrival_s.astype(float).copy()
        self.prompt = requests.prompt_tokens.astype(np.int64)
        self.output = requests.output_tokens.astype(np.int64)
        nan = lambda: np.full(n, np.nan)  # noqa: E731
        self.first_scheduled = nan()   # first iteration that worked on it
        self.first_token = nan()
        self.prefill_done = nan()
        self.transfer_ready = nan()    # prefill done and waiting for decode KV blocks
        self.transfer_start = nan()
        self.transfer_end = nan()
        self.decode_admitted = nan()
        self.finish = nan()
        self.generated = np.zeros(n, dtype=np.int64)  # output tokens so far
        self.cached_tokens = np.zeros(n, dtype=np.int64)  # prompt tokens served by the prefix cache
        self.preemptions = np.zeros(n, dtype=np.int32)
        self.prefill_pool = np.full(n, -1, dtype=np.int16)  # the pool it entered: an index of pool_names
        self.pool_names: list[str] = []
        self.prefill_replica = np.full(n, -1, dtype=np.int32)
        self.decode_replica = np.full(n, -1, dtype=np.int32)
        # the recorded dependencies (rows of the iteration log; -1: none)
        never = lambda: np.full(n, -1, dtype=np.int64)  # noqa: E731
        self.first_scheduled_iteration = never()  # the iteration that first worked on it
        self.first_token_iteration = never()      # ... that emitted its first token
        self.handoff_iteration = never()          # ... that finished the prefill it was (last) handed off after
        self.decode_admitted_iteration = never()  # ... that decoded it first after its (last) hand-off
        self.finish_iteration = never()           # ... that emitted its last token
        self.transfer_waited_for_kind = np.zeros(n, dtype=np.int16)  # what let its (last) KV transfer start
        self.transfer_waited_for = never()        # after waiting for decode KV blocks (iteration_log.Node, id)
        self.follows_request = never()            # closed loop: the request whose finish sent it

    def hashes(self, rid: int) -> np.ndarray:
        r = self.requests
        return r.hash_values[r.hash_offsets[rid]:r.hash_offsets[rid + 1]]

    def to_columns(self) -> Columns:
        """requests.parquet's columns."""
        tpot = (self.finish - self.first_token) / np.maximum(self.output - 1, 1)
        return Columns({
            "request_id": np.arange(self.n),
            "arrival_s": self.arrival,
            "prompt_tokens": self.prompt,
            "output_tokens": self.output,
            "first_scheduled_s": self.first_scheduled,
            "first_token_s": self.first_token,
            "prefill_done_s": self.prefill_done,
            "transfer_start_s": self.transfer_start,
            "transfer_end_s": self.transfer_end,
            "decode_admitted_s": self.decode_admitted,
            "finish_s": self.finish,
            "queue_s": self.first_scheduled - self.arrival,
            "transfer_wait_s": self.transfer_start - self.transfer_ready,
            "transfer_s": self.transfer_end - self.transfer_start,
            "decode_wait_s": self.decode_admitted - self.transfer_end,
            "ttft_ms": (self.first_token - self.arrival) * 1e3,
            "tpot_ms": np.where(self.output > 1, tpot * 1e3, np.nan),
            "e2e_ms": (self.finish - self.arrival) * 1e3,
            "cached_tokens": self.cached_tokens,
            "preemptions": self.preemptions,
            "prefill_pool": Categories(self.prefill_pool, tuple(self.pool_names)),
            "prefill_replica": self.prefill_replica,
            "decode_replica": self.decode_replica,
            "first_scheduled_iteration": self.first_scheduled_iteration,
            "first_token_iteration": self.first_token_iteration,
            "handoff_iteration": self.handoff_iteration,
            "decode_admitted_iteration": self.decode_admitted_iteration,
            "finish_iteration": self.finish_iteration,
            "transfer_waited_for_kind": self.transfer_waited_for_kind,
            "transfer_waited_for": self.transfer_waited_for,
            "follows_request": self.follows_request,
        })


_SEQUENCES = (list, tuple, np.ndarray)  # a column's values, not one value for every row


class ColumnLog:
    """An append-only table in typed arrays: 8 bytes or less per value, O(1) appends."""

    _CODES = {np.int16: "h", np.int32: "i", np.int64: "q", np.float32: "f", np.float64: "d"}

    #: rows appended one at a time are held as tuples and moved into the arrays a batch at a
    #: time (a transposition and one extend per column, in C)
    PENDING_ROWS = 1024

    def __init__(self, columns: dict[str, type]):
        self._dtypes = dict(columns)
        self._data = {c: array(self._CODES[t]) for c, t in columns.items()}
        self._extenders = [col.extend for col in self._data.values()]
        # one-value arrays: a value repeated over rows is extended by array repetition (in C)
        self._ones = [array(self._CODES[t], (0,)) for t in columns.values()]
        self._pending: list[tuple] = []
        self.size = 0  # rows so far: the next row's index

    def append(self, *values) -> None:
        if len(values) != len(self._extenders):
            raise ValueError(f"a row of {len(values)} values for {len(self._extenders)} columns")
        self._pending.append(values)
        self.size += 1
        if len(self._pending) >= self.PENDING_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            for values, extend in zip(zip(*self._pending, strict=True), self._extenders, strict=True):
                extend(values)
            self._pending = []

    def extend(self, *columns) -> None:
        """Append several rows: one sequence (or a scalar, repeated) per column."""
        self._flush()
        rows = next(len(c) for c in columns if isinstance(c, _SEQUENCES))
        self.size += rows
        for values, extend, one in zip(columns, self._extenders, self._ones, strict=True):
            if isinstance(values, _SEQUENCES):
                extend(values)
            else:
                one[0] = values
                extend(one * rows)

    def column(self, name: str) -> np.ndarray:
        self._flush()
        return np.frombuffer(self._data[name], dtype=self._dtypes[name]) if len(self._data[name]) else np.empty(0, self._dtypes[name])

    def to_columns(self) -> Columns:
        """The table over the log's own buffers (no copy: the log is done)."""
        return Columns({c: self.column(c) for c in self._data})
