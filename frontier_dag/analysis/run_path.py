"""The critical path of one request, and of the run (the path of the request that finished
last: what made it finish when it did).

A request's finish is the end of its last decode iteration; walking back, its decode
iterations follow one another on its decode replica (stream order), back to the batch
that admitted it. Admission is continuous batching: the request joins the replica's next
batch once it is ready, so before that batch the path goes to what made it ready, not
to the replica's earlier iterations (those would not have delayed it had it been ready
sooner). Back through its KV transfer, the wait for decode KV blocks, the iterations
that computed its prompt, and its wait to be scheduled, to its arrival. The pieces
cover the request's latency exactly:

* its own iterations: the split of each iteration's DAG critical path (attention, dense
  GEMM, MoE experts, elementwise, collectives, transfers inside the iteration, waits and
  pipeline bubbles, host overhead), on the pool that ran it;
* ``queueing``: waiting while its replica ran other requests' iterations (to be
  scheduled, or, with its KV arrived, for the decode batch in flight or a free seat);
* ``memory_waits``: waiting while its replica stood idle for lack of KV blocks (the
  ``cause`` of the batch that finally took it says whose freed memory woke it), or
  between its own iterations after a preemption (in PD, a decode stint lost to a
  preemption and the recompute count here too);
* ``backpressure``: its finished prefill waiting for decode KV blocks (``ended_by``: the
  decode iteration that freed them);
* ``kv_transfer``: its KV crossing the link between pools;
* ``host_overhead``: besides its iterations' host time, the engine's intake before it is
  queued and its handoff to the decode server (``engine_overheads``: ``request_us``,
  ``handoff_us``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from frontier_dag.analysis.chain_times import ITERATION_CATEGORIES, ChainTimes
from frontier_dag.analysis.run_data import RunData
from frontier_dag.analysis.run_graph import ROUNDING_US, RecordedGraph
from frontier_dag.errors import FrontierDagError
from frontier_dag.sim.iteration_log import Cause

WAIT_CATEGORIES = ("queueing", "backpressure", "memory_waits")
#: Every category a critical path is attributed to.
RUN_CATEGORIES = (*ITERATION_CATEGORIES, "kv_transfer", *WAIT_CATEGORIES)


@dataclass
class PathReport:
    scope: str  # run | request
    request: int  # the request whose finish the path explains
    start_us: float
    end_us: float
    rows: list[dict[str, Any]]
    attribution_us: dict[str, float]
    by_pool_us: dict[str, dict[str, float]]
    source: str

    @property
    def length_us(self) -> float:
        return self.end_us - self.start_us

    @property
    def attribution(self) -> dict[str, float]:
        total = sum(self.attribution_us.values())
        return {k: (v / total if total > 0 else 0.0) for k, v in self.attribution_us.items()}

    def by_pool(self) -> dict[str, dict[str, float]]:
        total = sum(self.attribution_us.values())
        if total <= 0:
            return {}
        return {p: {k: v / total for k, v in cats.items() if v > 0} for p, cats in self.by_pool_us.items()}


class PathBuilder:
    """Rows of one request's critical path, source to sink."""

    def __init__(self, graph: RecordedGraph, times: ChainTimes):
        self.graph, self.times, self.run = graph, times, graph.run
        self.rows: list[dict[str, Any]] = []

    def _chain(self, pool: str | None, replica: int) -> int:
        try:
            return self.run.chain_of(pool, replica)
        except ValueError:
            return -1

    def _row(self, node: str, op: str, resource: str, pool: str, t0: float, t1: float,
             categories: dict[str, float], iterations: int = 0, **extra) -> None:
        cats = {k: float(v) for k, v in categories.items() if v > 0}
        self.rows.append({"node": node, "op": op, "resource": resource, "layer": None, "micro_batch": None,
                          "start_us": float(t0), "duration_us": float(t1 - t0), "pool": pool,
                          "category": max(cats, key=cats.get) if cats else op, "categories": cats,
                          "iterations": int(iterations), **extra})

    def own(self, chain: int, t0: float, t1: float, what: str) -> None:
        """The request's own iterations on ``chain`` in [t0, t1]; idle gaps are memory waits."""
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 - t0 <= ROUNDING_US or chain < 0:
            return
        pool, rep = self.run.chains[chain]
        cats, n = self.times.window(chain, t0, t1)
        us = dict(zip(ITERATION_CATEGORIES, cats.tolist(), strict=True))
        us["memory_waits"] = _idle(t1 - t0, float(cats.sum()))
        self._row(f"{pool}[{rep}] {what}", "iterations", f"{pool}[{rep}]", pool, t0, t1, us, n)

    def wait(self, chain: int, t0: float, t1: float, r: int, busy_label: str, ended_by: str | None = None,
             pool: str | None = None) -> None:
        """Request ``r`` waiting on ``chain`` (of ``pool``): busy time is ``busy_label``, idle time
        memory waits."""
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 - t0 <= ROUNDING_US:
            return
        pool, rep = self.run.chains[chain] if chain >= 0 else (pool, -1)
        cats, n = self.times.window(chain, t0, t1) if chain >= 0 else (np.zeros(1), 0)
        busy = float(cats.sum())
        us = {busy_label: busy, "memory_waits": _idle(t1 - t0, busy)}
        extra = {"request": r, "ended_by": ended_by} if ended_by else {"request": r}
        label = "queue" if busy_label == "queueing" else busy_label
        self._row(f"request {r} {label} at {pool}[{rep}]", max(us, key=us.get), f"{pool}[{rep}]", pool, t0, t1, us,
                  n, **extra)

    def host(self, pool: str, what: str, t0: float, duration_us: float, r: int) -> float:
        """Request ``r``'s time in the engine's host path from ``t0`` (its intake, or its
        handoff to the decode server: ``engine_overheads``); when it ends."""
        if duration_us <= 0 or not np.isfinite(t0):
            return t0
        self._row(f"request {r} {what}", "host_overhead", f"{pool} host", pool, t0, t0 + duration_us,
                  {"host_overhead": duration_us}, request=r)
        return t0 + duration_us

    def ended_by(self, iteration: int) -> str | None:
        """What woke an idle replica for the iteration ``iteration`` (None if it was busy)."""
        if iteration < 0:
            return None
        it = self.run.iterations
        cause, who = int(it["cause"].iat[iteration]), int(it["cause_request"].iat[iteration])
        if cause == 0:
            return None
        name = Cause.label_of(cause)
        return f"{name} (request {who})" if who >= 0 else name

    def freed_by(self, node: int) -> str | None:
        """What freed the decode KV blocks a transfer waited for (``RequestNodes.memory_node``)."""
        g = self.graph
        if node < 0:
            return None
        if node >= g.ni:
            return (f"a preemption on {self.run.decode} when request {g.request_of(node)}'s KV arrived")
        pool, rep = self.run.chains[g.chain[node]]
        return f"{pool}[{rep}] iteration freeing KV blocks"

    def build(self, r: int) -> list[dict[str, Any]]:
        run, g = self.run, self.graph
        rq = run.requests.iloc[r]
        us = {c: float(rq[c]) * 1e6 for c in ("arrival_s", "first_scheduled_s", "transfer_start_s",
                                                "transfer_end_s", "decode_admitted_s", "finish_s")}
        us["prefill_done_s"] = float(run.prefill_end_s()[r]) * 1e6
        pool = str(rq["prefill_pool"])  # the pool it entered
        entry = self._chain(pool, int(rq["prefill_replica"]))
        queued = self.host(pool, "intake", us["arrival_s"], run.intake_us, r)
        self.wait(entry, queued, us["first_scheduled_s"], r, "queueing",
                  self.ended_by(int(g.nodes.first_iter[r])), pool)
        self.own(entry, us["first_scheduled_s"], us["prefill_done_s"], "prefill" if run.decode else "iterations")
        handed = int(rq["decode_replica"]) >= 0 and run.decode is not None
        if not handed:
            self.own(entry, us["prefill_done_s"], us["finish_s"], "decode" if pool == (run.decode or pool) else "iterations")
            return self.rows
        decode = self._chain(run.decode, int(rq["decode_replica"]))
        freed = self.freed_by(int(g.nodes.memory_node[r]))
        if us["transfer_start_s"] - us["prefill_done_s"] > ROUNDING_US:
            t0, t1 = us["prefill_done_s"], us["transfer_start_s"]
            # the last hand-off's wait for blocks; before it, a preempted request's first decode
            # stint, its preemption and its recompute
            blocked = min(t1 - t0, max(0.0, float(rq["transfer_wait_s"]) * 1e6))
            split = {"backpressure": blocked, "memory_waits": _idle(t1 - t0, blocked)}
            extra = {"request": r, "ended_by": freed} if freed else {"request": r}
            op = max(split, key=split.get)
            what = f"waits for {run.decode} KV blocks" if op == "backpressure" else "preempted in decode, recomputed"
            self._row(f"request {r} {what}", op, run.decode, run.decode, t0, t1, split, **extra)
        if np.isfinite(us["transfer_end_s"]):
            t0, t1 = us["transfer_start_s"], us["transfer_end_s"]
            link = f"{pool}[{int(rq['prefill_replica'])}]->{run.decode}[{int(rq['decode_replica'])}]"
            self.rows.append({"node": f"request {r} KV transfer", "op": "kv_transfer", "resource": link,
                              "layer": None, "micro_batch": None, "start_us": t0, "duration_us": t1 - t0,
                              "pool": run.link or "link", "category": "kv_transfer",
                              "categories": {"kv_transfer": t1 - t0} if t1 > t0 else {}, "iterations": 0,
                              "request": r})
        arrived = self.host(run.decode, "handoff", us["transfer_end_s"], run.handoff_us, r)
        self.wait(decode, arrived, us["decode_admitted_s"], r, "queueing",
                  self.ended_by(int(g.nodes.admit_iter[r])))
        self.own(decode, us["decode_admitted_s"], us["finish_s"], "decode")
        return self.rows


def _idle(span: float, busy: float) -> float:
    """Time of ``span`` not covered by ``busy``, without float dust."""
    idle = span - busy
    return idle if idle > ROUNDING_US + 1e-9 * span else 0.0


def critical_path(graph: RecordedGraph, times: ChainTimes, request: int | None = None) -> PathReport:
    """The run's critical path (``request=None``: the path of the request that finished
    last) or one request's."""
    run: RunData = graph.run
    fin = run.requests["finish_s"].to_numpy()
    if request is None:
        if not np.isfinite(fin).any():
            raise FrontierDagError(f"{run.label}: no request finished; there is no critical path")
        r = int(np.nanargmax(fin))
    else:
        if not 0 <= request < graph.nr:
            raise FrontierDagError(f"--request {request}: the run has requests 0 to {graph.nr - 1}")
        r = int(request)
        if not np.isfinite(fin[r]):
            raise FrontierDagError(f"--request {r} did not finish in this run")
    rows = PathBuilder(graph, times).build(r)
    totals = dict.fromkeys(RUN_CATEGORIES, 0.0)
    by_pool: dict[str, dict[str, float]] = {}
    for row in rows:
        for cat, value in row["categories"].items():
            totals[cat] += value
            pool = by_pool.setdefault(row["pool"], {})
            pool[cat] = pool.get(cat, 0.0) + value
    start = float(run.requests["arrival_s"].iat[r]) * 1e6
    return PathReport("run" if request is None else "request", r, start, float(fin[r]) * 1e6, rows, totals, by_pool,
                      f"the arrival of request {r}")
