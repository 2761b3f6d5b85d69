"""What if one category were ``x`` times faster? Re-evaluate the recorded dependency graph.

Every iteration keeps its batch; its duration loses ``(1 - 1/x)`` of the time its own
critical path spent in the category (``<category>_us`` of iterations.parquet); KV
transfers lose it for ``kv_transfer``; ``pool:NAME`` speeds up every iteration of a
pool (``pool:attention+ffn`` for an AF stage, whose pools step together). The graph is then evaluated forward (a longest path through the recorded
dependencies: chains of iterations, arrivals, hand-offs, freed memory), giving every
request's new first-token and finish times, hence throughput and p99 latencies.

What the estimate holds fixed, and when to re-simulate instead:

* the batches. A request joins the batch it joined in the recording, or, when it is ready
  only later, shifts by its lateness (soft admission, see ``run_graph``). Whether the
  recorded batches still describe the scenario is checked with Little's law: each pool's
  mean batch occupancy (requests in its batches: their time there over the run's span)
  against the recording's (``batch_occupancy_change``; ``batch_change`` is the largest
  change in absolute value). Above ``RESIMULATE_FRACTION`` the scenario says
  ``resimulate``: batch sizes, hence iteration times, would change;
* each iteration's internal critical path. Its time is cut by the category's share of
  that path: first order, an optimistic bound once another path inside the iteration
  takes over (AF ping-pong, EP barriers).

A category that lies on no request's path (zero share of every iteration on it, or on
iterations that had slack) predicts exactly no gain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from frontier_dag.analysis.chain_times import ITERATION_CATEGORIES
from frontier_dag.analysis.run_data import categories_with_rest
from frontier_dag.analysis.run_graph import FINISH, FIRST_TOKEN, RecordedGraph

#: Above this change of a pool's mean batch occupancy, a scenario asks for a re-simulation.
RESIMULATE_FRACTION = 0.10
#: Categories a what-if can scale (waits are not weights: they shrink when what they wait for does).
SCALABLE = tuple(c for c in ITERATION_CATEGORIES if c != "unattributed") + ("kv_transfer",)


@dataclass
class Metrics:
    occupancy: dict[str, np.ndarray]
    makespan_us: np.ndarray
    throughput_tokens_per_s: np.ndarray
    p99_ttft_ms: np.ndarray
    p99_tpot_ms: np.ndarray
    p99_e2e_ms: np.ndarray


def pool_scenario(members: tuple[str, ...]) -> str:
    """The what-if name of speeding up every iteration of a pool (AF: the pools stepping together)."""
    return "pool:" + "+".join(members)


def scenario_weights(graph: RecordedGraph, factor: float) -> tuple[list[str], np.ndarray]:
    """Names and ``(N, S)`` weights: the recorded run first, then each category and pool."""
    run = graph.run
    ni, nr = graph.ni, graph.nr
    cats = categories_with_rest(run)
    keep = 1.0 - 1.0 / factor
    names = ["recorded"]
    columns = [graph.dur0.copy()]
    for k, cat in enumerate(ITERATION_CATEGORIES[:-1]):
        w = graph.dur0.copy()
        w[:ni] -= cats[:, k] * keep
        names.append(cat)
        columns.append(w)
    w = graph.dur0.copy()
    w[ni:ni + nr] = graph.transfer_us / factor + (w[ni:ni + nr] - graph.transfer_us)  # the handoff stays
    names.append("kv_transfer")
    columns.append(w)
    pool_of = run.iterations["pool"].astype(str).to_numpy() if ni else np.array([])
    for pool, info in run.pools.items():
        w = graph.dur0.copy()
        w[:ni] = np.where(pool_of == pool, w[:ni] / factor, w[:ni])
        names.append(pool_scenario(info.members))
        columns.append(w)
    return names, np.column_stack(columns)


def occupancy(graph: RecordedGraph, ev, idx: np.ndarray, arr, first, fin) -> dict[str, np.ndarray]:
    """Per pool, the mean number of measured requests in its batches, per scenario: the time
    each request spends from joining a batch to leaving the pool, summed, over the run's
    span (Little's law). Batch sizes set iteration times, so where this moves, the recorded
    batches no longer describe the scenario."""
    run, n = graph.run, graph.nodes
    span = fin.max(axis=0) - arr.min(axis=0)
    join = np.fmax(arr, ev.start_many(n.first_iter[idx]))
    handed = graph.has_xfer[idx] & (n.admit_iter[idx] >= 0)
    held = np.where(handed[:, None], first, fin) - join  # in the batches of the pool it entered
    entered = run.entry_of()[idx]
    out = {pool: np.nansum(held[entered == pool], axis=0) for pool in run.entries}
    if run.decode is not None and handed.any():
        ready = ev.finish_many(graph.xfer(idx[handed]))
        decoding = np.nansum(fin[handed] - np.fmax(ready, ev.start_many(n.admit_iter[idx[handed]])), axis=0)
        out[run.decode] = out.get(run.decode, 0.0) + decoding
    return {pool: time / np.maximum(span, 1e-12) for pool, time in out.items()}


def metrics(graph: RecordedGraph, ev) -> Metrics:
    """Throughput and p99 latencies of the measured requests (after warm-up), per scenario."""
    run = graph.run
    rq = run.requests
    n = graph.nodes
    done = np.isfinite(rq["finish_s"].to_numpy()) & (n.finish_iter >= 0)
    done[: run.config.workload.warmup_requests] = False
    done &= n.prefill_iter >= 0
    idx = np.flatnonzero(done)
    arr = ev.finish_many(graph.arr(idx)) - run.intake_us  # the client's send, before the engine's intake
    first = ev.milestones(idx, FIRST_TOKEN)
    if run.overheads is not None and run.decode is not None:  # PD: the client's first token comes from decode
        handed = graph.has_xfer[idx]
        first[handed] = ev.finish_many(graph.xfer(idx[handed]))
    fin = ev.milestones(idx, FINISH)
    out = rq["output_tokens"].to_numpy()[idx]
    tokens = float((rq["prompt_tokens"].to_numpy()[idx] + out).sum())
    S = ev.sh.shape[1]
    if len(idx) == 0:
        zero = np.zeros(S)
        return Metrics({}, zero, zero, zero, zero, zero)
    makespan = fin.max(axis=0) - arr.min(axis=0)
    tpot = (fin - first) / np.maximum(out - 1, 1)[:, None] / 1e3
    multi = out > 1

    def p99(x: np.ndarray) -> np.ndarray:
        return np.percentile(x, 99, axis=0) if len(x) else np.zeros(S)

    return Metrics(occupancy(graph, ev, idx, arr, first, fin), makespan, tokens / np.maximum(makespan * 1e-6, 1e-12), p99((first - arr) / 1e3),
                   p99(tpot[multi]), p99((fin - arr) / 1e3))


def what_if(graph: RecordedGraph, factor: float = 2.0, path_shares: dict[str, float] | None = None) -> dict[str, Any]:
    """Predicted gains per category (and per pool) at ``factor`` x speed, ranked by the p99
    end-to-end latency they save, then by throughput."""
    if factor <= 0:
        raise ValueError("--what-if needs a factor > 0")
    names, weights = scenario_weights(graph, factor)
    ev = graph.evaluate(weights)
    m = metrics(graph, ev)
    base = {f: float(getattr(m, f)[0]) for f in Metrics.__dataclass_fields__ if f != "occupancy"}
    base["batch_occupancy"] = {pool: float(v[0]) for pool, v in m.occupancy.items()}
    rows = []
    cats = categories_with_rest(graph.run)
    for s, name in enumerate(names[1:], start=1):
        if name == "kv_transfer":
            present = float(graph.transfer_us.sum())
        elif name.startswith("pool:"):
            present = 1.0
        else:
            present = float(cats[:, ITERATION_CATEGORIES.index(name)].sum())
        change = {pool: float(v[s] / v[0] - 1) if v[0] > 0 else 0.0 for pool, v in m.occupancy.items()}
        fraction = max((abs(c) for c in change.values()), default=0.0)

        def gain(field: str, s=s) -> float:
            before, after = base[field], float(getattr(m, field)[s])
            return (before - after) / before if before > 0 else 0.0

        thr = float(m.throughput_tokens_per_s[s]) / base["throughput_tokens_per_s"] - 1 if base["throughput_tokens_per_s"] else 0.0
        row = {
            "category": name, "factor": factor,
            "critical_path_share": (path_shares or {}).get(name),
            "throughput_gain": thr,
            "p99_e2e_reduction": gain("p99_e2e_ms"), "p99_ttft_reduction": gain("p99_ttft_ms"),
            "p99_tpot_reduction": gain("p99_tpot_ms"),
            "throughput_tokens_per_s": float(m.throughput_tokens_per_s[s]),
            "p99_e2e_ms": float(m.p99_e2e_ms[s]), "p99_ttft_ms": float(m.p99_ttft_ms[s]),
            "p99_tpot_ms": float(m.p99_tpot_ms[s]),
            "batch_occupancy_change": change, "batch_change": fraction,
            "resimulate": fraction > RESIMULATE_FRACTION,
        }
        if present <= 0:
            row["note"] = "not in this run"
        elif fraction > RESIMULATE_FRACTION:
            pool = max(change, key=lambda p: abs(change[p]))
            row["note"] = (f"pool {pool}'s batches would hold {change[pool] * 100:+.0f}% requests: "
                           "re-simulate for a firm number")
        rows.append(row)
    rows.sort(key=lambda r: (-round(r["p99_e2e_reduction"], 9), -round(r["throughput_gain"], 9), r["category"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return {"factor": factor, "recorded": base, "scenarios": rows, "resimulate_above": RESIMULATE_FRACTION}
