"""Every request's latency split into the categories of its critical path, and what
dominates at the median and in the tail of TTFT and TPOT.

A request's time from arrival to finish is a sequence of phases, and each phase is
attributed as the request's critical path attributes it (see ``run_path``):

* queue (arrival to first scheduled), on its prefill replica (of the pool it entered): ``queueing`` while the
  replica ran other iterations, ``memory_waits`` while it stood idle (no KV blocks);
* prefill (to its first token): the category split of the replica's iterations;
* in PD: ``backpressure`` (waiting for decode KV blocks), ``kv_transfer``, ``queueing``
  (KV arrived, waiting for the decode iteration in flight or a free seat);
* ``host_overhead`` beyond the iterations' own: the engine's intake before the queue and, in
  PD, its handoff to the decode server (``engine_overheads``); with an overhead model the
  client's first token of a PD request comes from the decode server, so the backpressure,
  the transfer and the handoff count in its TTFT;
* decode (to its last token): the split of its decode replica's iterations.

TTFT is the part up to the first token, TPOT the rest divided by output tokens - 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from frontier_dag.analysis.chain_times import ITERATION_CATEGORIES, ChainTimes
from frontier_dag.analysis.run_data import RunData
from frontier_dag.analysis.run_path import RUN_CATEGORIES


def _chains(run: RunData, pool: str | None, replicas: np.ndarray) -> np.ndarray:
    index = {key: c for c, key in enumerate(run.chains)}
    return np.array([index.get((pool, int(r)), -1) for r in replicas.tolist()], dtype=np.int64)


def breakdown(run: RunData, times: ChainTimes) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per request, µs per ``pool:category`` up to the first token, and after it."""
    rq = run.requests
    us = lambda col: rq[col].to_numpy(dtype=np.float64) * 1e6  # noqa: E731
    arr, fs, fin = us("arrival_s"), us("first_scheduled_s"), us("finish_s")
    ft = run.prefill_end_s() * 1e6  # the prompt is in (the client's first token may come later: see below)
    entered = run.entry_of()
    first: dict[str, np.ndarray] = {}
    after: dict[str, np.ndarray] = {}

    def add(table: dict, pool: str, cat: str, values: np.ndarray) -> None:
        values = np.nan_to_num(values, nan=0.0)
        if np.any(values):
            key = f"{pool}:{cat}"
            table[key] = table.get(key, 0.0) + values

    def phase(table: dict, pool: str, chain: np.ndarray, t0: np.ndarray, t1: np.ndarray, wait: bool) -> None:
        cats, _ = times.windows(chain, t0, t1)
        busy = cats.sum(axis=1)
        span = np.where(np.isfinite(t0) & np.isfinite(t1), np.maximum(t1 - t0, 0.0), 0.0)
        idle = span - busy
        idle = np.where(idle > 1e-3 + 1e-9 * span, idle, 0.0)
        if wait:
            add(table, pool, "queueing", busy)
        else:
            for k, cat in enumerate(ITERATION_CATEGORIES):
                add(table, pool, cat, cats[:, k])
        add(table, pool, "memory_waits", idle)

    dec = rq["decode_replica"].to_numpy()
    handed = (dec >= 0) & (run.decode is not None)
    chains = {}
    for pool in run.entries:  # each request's intake, queue and prefill on the pool it entered
        mine = entered == pool
        chains[pool] = entry = np.where(mine, _chains(run, pool, rq["prefill_replica"].to_numpy()), -1)
        add(first, pool, "host_overhead", np.where(mine & np.isfinite(arr), run.intake_us, 0.0))
        phase(first, pool, entry, np.where(mine, arr + run.intake_us, np.nan), fs, wait=True)
        phase(first, pool, entry, np.where(mine, fs, np.nan), ft, wait=False)
    if run.decode is not None:
        ts, te, da = us("transfer_start_s"), us("transfer_end_s"), us("decode_admitted_s")
        # with an overhead model the client's first token comes from the decode server: the
        # hand-off counts before it (TTFT), else after it (TPOT)
        to = first if run.overheads is not None else after
        gap = np.nan_to_num(ts - ft, nan=0.0)
        blocked = np.minimum(gap, np.maximum(np.nan_to_num(rq["transfer_wait_s"].to_numpy() * 1e6, nan=0.0), 0.0))
        add(to, run.decode, "backpressure", blocked)
        rest = gap - blocked  # a preempted request's lost decode stint and recompute
        add(to, run.decode, "memory_waits", np.where(rest > 1e-3, rest, 0.0))
        add(to, run.link or "link", "kv_transfer", te - ts)
        handoff = np.where(np.isfinite(te), run.handoff_us, 0.0)
        add(to, run.decode, "host_overhead", handoff)
        add(after, run.decode, "queueing", da - te - handoff)
        phase(after, run.decode, _chains(run, run.decode, dec), np.where(handed, da, np.nan), fin, wait=False)
    for pool in run.entries:  # and the rest on it, unless its KV moved
        ok = (entered == pool) & ~handed
        phase(after, pool, np.where(ok, chains[pool], -1), np.where(ok, ft, np.nan), fin, wait=False)
    return first, after


def _group_shares(table: dict[str, np.ndarray], members: np.ndarray) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    sums = {k: float(np.sum(v[members])) for k, v in table.items()}
    total = sum(sums.values())
    shares = dict.fromkeys(RUN_CATEGORIES, 0.0)
    pools: dict[str, dict[str, float]] = {}
    for key, value in sums.items():
        pool, cat = key.rsplit(":", 1)
        share = value / total if total > 0 else 0.0
        shares[cat] += share
        if share > 0:
            pools.setdefault(pool, {})[cat] = share
    return shares, pools


def tail_attribution(run: RunData, times: ChainTimes, band: float = 0.05) -> dict[str, Any]:
    """For TTFT and TPOT, the attribution of the requests at the median (the ``band``
    fraction closest to it) and in the tail (at or above the p99), shares summing to 1."""
    first, after = breakdown(run, times)
    rq = run.requests
    measured = np.zeros(len(rq), dtype=bool)
    measured[run.config.workload.warmup_requests:] = True
    done = measured & np.isfinite(rq["finish_s"].to_numpy())
    out: dict[str, Any] = {}
    for metric, table in (("ttft", first), ("tpot", after)):
        values = rq[f"{metric}_ms"].to_numpy(dtype=np.float64)
        ok = done & np.isfinite(values)
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            continue
        vals = values[idx]
        p50, p99 = np.percentile(vals, [50, 99])
        k = max(1, int(round(band * len(idx))))
        median_group = idx[np.argsort(np.abs(vals - p50), kind="stable")[:k]]
        tail_group = idx[vals >= p99 - 1e-12]
        for name, members, value in (("p50", median_group, p50), ("p99", tail_group, p99)):
            shares, pools = _group_shares(table, members)
            dominant = max(shares, key=shares.get) if any(shares.values()) else None
            out[f"{metric}_{name}"] = {f"{metric}_ms": float(value), "requests": int(len(members)),
                                       "attribution": shares, "by_pool": pools, "dominant": dominant}
    return out


def request_attribution(run: RunData, times: ChainTimes, r: int) -> dict[str, float]:
    """One request's µs per category over its whole latency (sums to its E2E)."""
    first, after = breakdown(run, times)
    out = dict.fromkeys(RUN_CATEGORIES, 0.0)
    for table in (first, after):
        for key, values in table.items():
            out[key.rsplit(":", 1)[1]] += float(values[r])
    return out
