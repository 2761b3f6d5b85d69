"""A run as a Chrome trace-event file that Perfetto (ui.perfetto.dev) and chrome://tracing open.

* a process per pool, a thread (track) per replica; every iteration is a complete
  event (``ph: X``) whose args hold the batch (sequences, prefill tokens, decoding
  sequences, cached tokens, KV usage), why it started (``cause``) and its time per
  category;
* a process for the KV link, a track per (prefill replica, decode replica) pair with each
  transfer as a slice, and a flow (``ph: s/t/f``, one id per request) from the iteration
  that finished the prefill through the transfer to the decode iteration that admitted it;
* counters (``ph: C``): requests waiting per pool (to be scheduled, for decode KV
  blocks, for a decode seat), requests in the engine's intake and handoff (host overhead,
  with ``engine_overheads``) and KV usage per replica;
* with a cost model, the slowest iteration of every pool rebuilt as its DAG: a track per
  stream, EP rank and link, each op a slice, at the iteration's time.

Large runs stay usable: past ``max_slices`` iterations (or inside ``window_s``) consecutive
iterations of a replica merge into one slice (``name: "decode x12"``, args summed or
averaged, ``merged`` says how many); counters keep at most ``max_counter_points`` points
per series (the largest value of each bin, so peaks survive) and flows at most
``max_flows`` requests (every k-th). ``trace_notes`` says what was reduced.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from frontier_dag.analysis.rebuild import RebuiltIteration
from frontier_dag.analysis.run_data import CATEGORY_COLUMNS, RunData
from frontier_dag.sim.iteration_log import Cause

MAX_SLICES = 200_000
MAX_COUNTER_POINTS = 20_000
MAX_FLOWS = 20_000
LINK_PID = 1000
DETAIL_PID = 2000


def _meta(pid: int, tid: int | None, kind: str, name: str, sort: int | None = None) -> list[dict[str, Any]]:
    events = [{"ph": "M", "pid": pid, "name": kind, "args": {"name": name}}]
    if tid is not None:
        events[0]["tid"] = tid
    if sort is not None:
        key = "process_sort_index" if tid is None else "thread_sort_index"
        events.append({"ph": "M", "pid": pid, "name": key, "args": {"sort_index": sort}}
                      | ({"tid": tid} if tid is not None else {}))
    return events


class TraceBuilder:
    def __init__(self, run: RunData, window_s: tuple[float, float] | None = None, max_slices: int = MAX_SLICES,
                 max_counter_points: int = MAX_COUNTER_POINTS, max_flows: int = MAX_FLOWS):
        self.run = run
        self.window = window_s
        self.max_slices, self.max_points, self.max_flows = max_slices, max_counter_points, max_flows
        self.events: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.rebuilt: list[dict[str, Any]] = []  # the rebuilt iterations checked against their records
        self.pid = {name: i + 1 for i, name in enumerate(run.pools)}
        self.slice_of: dict[int, tuple[int, int, float, float]] = {}  # iteration row -> (pid, tid, its ts, dur)

    def _in_window(self, t0_us: np.ndarray, t1_us: np.ndarray) -> np.ndarray:
        if self.window is None:
            return np.ones(len(t0_us), dtype=bool)
        lo, hi = self.window[0] * 1e6, self.window[1] * 1e6
        return (t1_us >= lo) & (t0_us <= hi)

    # -- iterations ------------------------------------------------------------------------
    def iterations(self) -> None:
        run, it = self.run, self.run.iterations
        for name, pool in run.pools.items():
            pid = self.pid[name]
            members = f" with {', '.join(pool.members[1:])}" if len(pool.members) > 1 else ""
            self.events += _meta(pid, None, "process_name", f"pool {name} ({pool.role}{members})", pid)
        if not len(it):
            return
        start = it["start_s"].to_numpy() * 1e6
        dur = it["duration_us"].to_numpy()
        keep = self._in_window(start, start + dur)
        n = int(keep.sum())
        group = max(1, math.ceil(n / self.max_slices))
        if group > 1:
            self.notes.append(f"{n:,} iterations: every {group} consecutive iterations of a replica merged into one "
                              f"slice (raise --max-slices or pass --window to see each)")
        if self.window is not None:
            self.notes.append(f"only iterations in {self.window[0]:g}-{self.window[1]:g} s")
        cats = it[list(CATEGORY_COLUMNS)].to_numpy(dtype=np.float64)
        cols = {c: it[c].to_numpy() for c in ("num_seqs", "prefill_tokens", "decode_seqs", "ctx_tokens", "kv_usage",
                                              "cause", "cause_request")}
        for c, (pool, rep) in enumerate(run.chains):
            pid = self.pid[pool]
            self.events += _meta(pid, rep, "thread_name", f"{pool}[{rep}]", rep)
            rows = np.arange(run.chain_lo[c], run.chain_hi[c])[keep[run.chain_lo[c]:run.chain_hi[c]]]
            for k in range(0, len(rows), group):
                block = rows[k:k + group]
                self._slice(pool, pid, rep, block, start, dur, cats, cols)

    def _slice(self, pool, pid, rep, block, start, dur, cats, cols) -> None:
        i0, i1 = int(block[0]), int(block[-1])
        ts, end = float(start[i0]), float(start[i1] + dur[i1])
        busy = float(dur[block].sum())
        by_cat = cats[block].sum(axis=0)
        args: dict[str, Any] = {c.removesuffix("_us") + "_us": round(float(v), 3)
                                for c, v in zip(CATEGORY_COLUMNS, by_cat, strict=True) if v > 0}
        if len(block) == 1:
            seqs, pt, dec = int(cols["num_seqs"][i0]), int(cols["prefill_tokens"][i0]), int(cols["decode_seqs"][i0])
            name = f"{pool} {seqs} seqs" + (f", {pt} prefill tok" if pt else "")
            cause = int(cols["cause"][i0])
            args.update(num_seqs=seqs, prefill_tokens=pt, decode_seqs=dec, prefill_seqs=seqs - dec,
                        ctx_tokens=int(cols["ctx_tokens"][i0]), kv_usage=round(float(cols["kv_usage"][i0]), 5),
                        cause=Cause.label_of(cause), iteration=i0)
            if int(cols["cause_request"][i0]) >= 0:
                args["cause_request"] = int(cols["cause_request"][i0])
        else:
            name = f"{pool} x{len(block)}"
            args.update(merged=len(block), busy_us=round(busy, 3),
                        mean_num_seqs=round(float(cols["num_seqs"][block].mean()), 2),
                        prefill_tokens=int(cols["prefill_tokens"][block].sum()),
                        mean_decode_seqs=round(float(cols["decode_seqs"][block].mean()), 2),
                        max_kv_usage=round(float(cols["kv_usage"][block].max()), 5), iterations=[i0, i1])
        self.events.append({"ph": "X", "name": name, "cat": "iteration", "pid": pid, "tid": rep, "ts": ts,
                            "dur": max(end - ts, 0.0), "args": args})
        for i in block.tolist():  # flows bind at the iteration's own time, inside its (merged) slice
            self.slice_of[i] = (pid, rep, float(start[i]), float(dur[i]))

    # -- KV transfers and flows -------------------------------------------------------------
    def transfers(self, prefill_iter: np.ndarray, admit_iter: np.ndarray) -> None:
        run, rq = self.run, self.run.requests
        if run.decode is None:
            return
        ts = rq["transfer_start_s"].to_numpy() * 1e6
        te = rq["transfer_end_s"].to_numpy() * 1e6
        ok = np.isfinite(ts) & np.isfinite(te) & self._in_window(ts, te)
        idx = np.flatnonzero(ok)
        if not len(idx):
            return
        self.events += _meta(LINK_PID, None, "process_name", f"link {run.link}", LINK_PID)
        step = max(1, math.ceil(len(idx) / self.max_flows))
        if step > 1:
            self.notes.append(f"{len(idx):,} KV transfers: flows drawn for every {step}th (all transfers are slices)")
        tids: dict[tuple[int, int], int] = {}
        pr, dr = rq["prefill_replica"].to_numpy(), rq["decode_replica"].to_numpy()
        tokens = (rq["prompt_tokens"].to_numpy())
        for j, r in enumerate(idx.tolist()):
            key = (int(pr[r]), int(dr[r]))
            if key not in tids:
                tids[key] = len(tids)
                self.events += _meta(LINK_PID, tids[key], "thread_name", f"{run.handoff}[{key[0]}] -> {run.decode}[{key[1]}]",
                                     tids[key])
            tid = tids[key]
            self.events.append({"ph": "X", "name": f"KV r{r}", "cat": "kv_transfer", "pid": LINK_PID, "tid": tid,
                                "ts": float(ts[r]), "dur": float(te[r] - ts[r]),
                                "args": {"request": r, "prompt_tokens": int(tokens[r]),
                                         "waited_for_blocks_us": round(float(rq["transfer_wait_s"].iat[r]) * 1e6, 3)}})
            if j % step:
                continue
            src, dst = self.slice_of.get(int(prefill_iter[r])), self.slice_of.get(int(admit_iter[r]))
            if src is None or dst is None:
                continue
            flow = {"cat": "kv", "name": "KV transfer", "id": int(r)}
            self.events.append({**flow, "ph": "s", "pid": src[0], "tid": src[1], "ts": _inside(src)})
            if te[r] > ts[r]:
                self.events.append({**flow, "ph": "t", "pid": LINK_PID, "tid": tid, "bp": "e",
                                    "ts": _inside((0, 0, float(ts[r]), float(te[r] - ts[r])))})
            self.events.append({**flow, "ph": "f", "bp": "e", "pid": dst[0], "tid": dst[1], "ts": _inside(dst, end=False)})

    # -- counters ---------------------------------------------------------------------------
    def counters(self) -> None:
        run, rq = self.run, self.run.requests
        us = lambda c: rq[c].to_numpy() * 1e6  # noqa: E731
        entered = run.entry_of()
        series = [(pool, "waiting to be scheduled", np.where(entered == pool, us("arrival_s"), np.nan), us("first_scheduled_s"))
                  for pool in run.entries]
        if run.intake_us:
            series += [(pool, "in the engine's intake (host overhead)", np.where(entered == pool, us("arrival_s"), np.nan),
                        us("arrival_s") + run.intake_us) for pool in run.entries]
        if run.decode is not None:
            series.append((run.handoff, "prefilled, waiting for decode KV blocks", run.prefill_end_s() * 1e6,
                           us("transfer_start_s")))
            series.append((run.decode, "KV arrived, waiting for a decode batch", us("transfer_end_s"), us("decode_admitted_s")))
            if run.handoff_us:
                series.append((run.decode, "in the handoff to the decode server (host overhead)", us("transfer_end_s"),
                               us("transfer_end_s") + run.handoff_us))
        for pool, name, t_in, t_out in series:
            times, values = _occupancy(t_in, t_out)
            self._counter(self.pid[pool], f"queue: {name}", "requests", times, values)
        it = run.iterations
        if not len(it):
            return
        end = it["start_s"].to_numpy() * 1e6 + it["duration_us"].to_numpy()
        kv = it["kv_usage"].to_numpy(dtype=np.float64)
        for c, (pool, rep) in enumerate(run.chains):
            lo, hi = run.chain_lo[c], run.chain_hi[c]
            self._counter(self.pid[pool], f"KV usage {pool}[{rep}]", "fraction", end[lo:hi], kv[lo:hi])

    def _counter(self, pid: int, name: str, key: str, times: np.ndarray, values: np.ndarray) -> None:
        if not len(times):
            return
        keep = self._in_window(times, times)
        times, values = times[keep], values[keep]
        if len(times) > self.max_points:
            bins = np.linspace(times[0], times[-1], self.max_points + 1)
            which = np.clip(np.searchsorted(bins, times, side="right") - 1, 0, self.max_points - 1)
            first = np.flatnonzero(np.r_[True, np.diff(which) > 0])
            peak = np.maximum.reduceat(values, first)
            times, values = times[first], peak
            self.notes.append(f"counter {name}: {self.max_points:,} points (the peak of each bin)")
        for t, v in zip(times.tolist(), values.tolist(), strict=True):
            self.events.append({"ph": "C", "name": name, "pid": pid, "ts": t, "args": {key: round(v, 6)}})

    # -- rebuilt iterations -----------------------------------------------------------------
    def detail(self, rebuilt: RebuiltIteration, index: int) -> None:
        """The rebuilt DAG of one iteration: a track per resource, its ops as slices."""
        report, graph = rebuilt.report, rebuilt.graph
        pid = DETAIL_PID + index
        self.events += _meta(pid, None, "process_name",
                             f"slowest {rebuilt.pool} iteration (#{rebuilt.row}) rebuilt as its DAG: "
                             f"{report.iteration_time_us:,.0f} µs (recorded {rebuilt.recorded_us:,.0f} µs)", pid)
        tids: dict[str, int] = {}
        critical = set(report.path_positions)
        for v, node in enumerate(report.compiled.nodes.tolist()):
            a = graph.graph.nodes[node]
            dur = float(report.duration_us[v])
            if dur <= 0:
                continue
            resource = a["resource"]
            if resource not in tids:
                tids[resource] = len(tids)
                self.events += _meta(pid, tids[resource], "thread_name", resource, tids[resource])
            self.events.append({"ph": "X", "name": graph.label(node), "cat": "critical" if v in critical else "op",
                                "pid": pid, "tid": tids[resource], "ts": rebuilt.start_us + float(report.start_us[v]),
                                "dur": dur, "args": {"op": a["op"], "layer": a["layer"], "micro_batch": a["micro_batch"],
                                                     "slack_us": round(float(report.slack_us[v]), 3),
                                                     "critical": v in critical, "where": a["where"]}})

    def document(self) -> dict[str, Any]:
        summary = self.run.summary
        return {"traceEvents": self.events, "displayTimeUnit": "ms",
                "metadata": {"run_dir": str(self.run.run_dir), "notes": self.notes, "rebuilt_iterations": self.rebuilt,
                             "warnings": [c["warning"] for c in self.rebuilt if c["warning"]],
                             "num_requests": summary.get("num_requests"), "iterations": summary.get("iterations")}}


def _inside(slice_: tuple[int, int, float, float], end: bool = True) -> float:
    """A timestamp strictly inside a slice (near its end, or its start), so a flow binds to it."""
    _, _, ts, dur = slice_
    nudge = min(0.5, dur / 4) if dur > 0 else 0.0
    return ts + dur - nudge if end else ts + nudge


def _occupancy(t_in: np.ndarray, t_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step function of how many intervals [t_in, t_out) are open, at each change."""
    ok = np.isfinite(t_in) & np.isfinite(t_out) & (t_out > t_in)
    if not ok.any():
        return np.zeros(0), np.zeros(0)
    times = np.concatenate([t_in[ok], t_out[ok]])
    delta = np.concatenate([np.ones(ok.sum()), -np.ones(ok.sum())])
    order = np.lexsort((delta, times))
    times, level = times[order], np.cumsum(delta[order])
    last = np.r_[times[1:] != times[:-1], True]  # one point per instant: the level after all its changes
    return times[last], level[last]


def build_trace(run: RunData, *, cost_model=None, detail: bool = True, window_s: tuple[float, float] | None = None,
                max_slices: int = MAX_SLICES, max_counter_points: int = MAX_COUNTER_POINTS,
                max_flows: int = MAX_FLOWS) -> dict[str, Any]:
    """The trace document of ``run`` (see the module docstring)."""
    from frontier_dag.analysis.rebuild import rebuild_iteration, slowest_iterations
    from frontier_dag.analysis.run_graph import RecordedGraph

    builder = TraceBuilder(run, window_s, max_slices, max_counter_points, max_flows)
    builder.iterations()
    nodes = RecordedGraph(run).nodes if run.decode is not None else None
    if nodes is not None:
        builder.transfers(nodes.prefill_iter, nodes.admit_iter)
    builder.counters()
    if detail:
        for k, row in enumerate(slowest_iterations(run).values()):
            rebuilt = rebuild_iteration(run, row, cost_model)
            builder.detail(rebuilt, k)
            if cost_model is None:  # priced as the run was: the times compare
                builder.rebuilt.append(rebuilt.check())
    return builder.document()


def write_trace(document: dict[str, Any], out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        json.dump(document, f, separators=(",", ":"))
