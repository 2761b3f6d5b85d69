"""The steady window of a run: throughput and latency with the warm-up and the drain left out.

A run starts empty (closed-loop clients all send at once, an open loop fills its queues)
and ends draining (after the last arrival the load falls to nothing), so figures over the
whole run lean on both, the more the shorter the run. The steady window

* ends at the **last arrival**: after it no new work comes and the batches shrink;
* starts where the **warm-up** ends, found by MSER-5 (White, 1997) on the output tokens/s
  of 100 bins up to the last arrival: the truncation that minimises the standard error
  of the mean of the bins that remain. Never before the first measured request
  (``workload.warmup_requests``).

``workload.measure.start_s`` / ``end_s`` fix either end instead. Over the window:
tokens/s count the output tokens made in it (every iteration's decoding sequences and
every first token) and the prompts whose first token falls in it; requests/s count the
requests that finish in it; latencies are those of the requests that arrive in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from frontier_dag.config.workload import WorkloadConfig

#: A table by column name: ``frontier_dag.sim.columns.Columns`` or a pandas DataFrame.
Table = Mapping[str, Any]

#: Bins of the token-rate series that MSER-5 truncates (at most; fewer for short runs).
BINS = 100
#: MSER's batch: bins averaged in fives, as in MSER-5.
BATCH = 5
#: Above this share of the window's requests finishing after it, their latency leans on the drain.
DRAIN_SHARE_WARNING = 0.25


@dataclass(frozen=True)
class TokenTimes:
    """When output tokens came out: ``counts[i]`` tokens at ``times_s[i]``."""

    times_s: np.ndarray
    counts: np.ndarray

    @staticmethod
    def of(iterations: Table, requests: Table) -> TokenTimes:
        """One token per decoding sequence at the end of every iteration, and every first token."""
        end = column(iterations, "start_s") + column(iterations, "duration_us") * 1e-6
        first = column(requests, "first_token_s")
        first = first[np.isfinite(first)]
        return TokenTimes(np.concatenate([end, first]),
                          np.concatenate([column(iterations, "decode_seqs"), np.ones(len(first))]))

    def between(self, start_s: float, end_s: float) -> float:
        inside = (self.times_s > start_s) & (self.times_s <= end_s)
        return float(self.counts[inside].sum())


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    chosen: str  # detected | configured | whole run
    how: str  # one sentence for the summary and the report

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


def column(table: Table, name: str, dtype=np.float64) -> np.ndarray:
    """A column of ``table`` as an array of ``dtype``."""
    return np.asarray(table[name], dtype=dtype)


def nanmin(values: np.ndarray, largest: bool = False) -> float:
    """The smallest (``largest``: the largest) value that is not NaN; 0 for no values and
    NaN for only NaNs (as pandas' ``min`` and ``max``)."""
    if not len(values):
        return 0.0
    kept = values[~np.isnan(values)]
    if not len(kept):
        return float("nan")
    return float(kept.max() if largest else kept.min())


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    """Mean, p50, p90 and p99 of the finite ``values`` (None where there are none)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = linear_percentiles(values, [50, 90, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def linear_percentiles(values: np.ndarray, q: list[float]) -> np.ndarray:
    """``np.percentile(values, q)`` of finite ``values``, bit for bit: numpy's default (linear)
    method in numpy's own arithmetic. numpy's version imports ``numpy.ma`` on its first call
    (its ``unique`` checks for masked arrays), a fifth of a short simulation's CPU."""
    ordered = np.sort(values)
    n = len(ordered)
    virtual = (n - 1) * np.true_divide(q, 100)
    lower = np.floor(virtual)
    upper = lower + 1
    last = virtual >= n - 1  # at the top: the largest value
    lower[last] = upper[last] = -1
    lower, upper = lower.astype(np.intp), upper.astype(np.intp)
    a, b, t = ordered[lower], ordered[upper], np.asanyarray(virtual - lower, dtype=virtual.dtype)
    diff = b - a
    out = np.add(a, diff * t)
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=type(out.dtype))
    return out


def mser_truncation(series: np.ndarray, batch: int = BATCH) -> int:
    """MSER-``batch``: how many leading values of ``series`` to drop so that the standard
    error of the mean of the rest is smallest (searched over the first half)."""
    n = len(series) // batch
    if n < 2:
        return 0
    means = series[: n * batch].reshape(n, batch).mean(axis=1)
    # sums and sums of squares of every suffix, to score each truncation in one pass
    suffix = np.cumsum(means[::-1])[::-1]
    suffix_sq = np.cumsum((means ** 2)[::-1])[::-1]
    kept = np.arange(n, 0, -1, dtype=np.float64)
    variance = np.maximum(suffix_sq / kept - (suffix / kept) ** 2, 0.0)
    score = variance / kept  # MSER statistic: squared deviations / (n - d)^2
    candidates = n // 2 + 1
    return int(np.argmin(score[:candidates])) * batch


def find_window(requests: Table, tokens: TokenTimes, workload: WorkloadConfig) -> Window:
    """The steady window of a finished run (``requests``: requests.parquet's columns)."""
    measure = workload.measure
    finish = column(requests, "finish_s")
    arrival = column(requests, "arrival_s")
    last_finish = float(np.nanmax(finish)) if np.isfinite(finish).any() else 0.0
    first_arrival = nanmin(arrival[workload.warmup_requests:])
    last_arrival = nanmin(arrival, largest=True)
    if measure.end_s != "auto":
        end, end_how = min(float(measure.end_s), last_finish), f"ends at {float(measure.end_s):g} s (configured)"
    else:
        end, end_how = last_arrival, "ends at the last arrival (after it the load drains)"
    if measure.start_s != "auto":
        start = float(measure.start_s)
        start_how = f"starts at {start:g} s (configured)"
    else:
        start = first_arrival
        if end > start:
            edges = np.linspace(start, end, _bins(tokens, start, end) + 1)
            rate, _ = np.histogram(tokens.times_s, edges, weights=tokens.counts)
            start = float(edges[mser_truncation(rate)])
        start_how = "starts where the warm-up ends (MSER-5 on output tokens/s up to the last arrival)"
    chosen = "configured" if "configured" in start_how + end_how else "detected"
    if end - start <= 0 or tokens.between(start, end) <= 0:
        # every request arrived at once, or the configured window holds no tokens
        return Window(first_arrival, max(last_finish, first_arrival + 1e-12), "whole run",
                      f"no steady window ({start_how.split(' (')[0]}, {end_how.split(' (')[0]}: "
                      f"{start:.3g}-{end:.3g} s holds no output); the whole run instead")
    return Window(start, end, chosen, f"{start_how}, {end_how}")


def _bins(tokens: TokenTimes, start: float, end: float) -> int:
    """About four token events a bin at least, 10 to BINS bins."""
    events = int(np.count_nonzero((tokens.times_s > start) & (tokens.times_s <= end)))
    return int(np.clip(events // 4, 2 * BATCH, BINS))


def _enough(total: int, in_window: int, drain_share: float) -> int:
    """Requests for a window whose drain share is 1/5: the requests that finish in the drain
    are about as many whatever the run's length (the clients, or the queue at the end)."""
    draining = drain_share * in_window
    needed = total - in_window + 5 * draining
    scale = 10 ** max(0, len(str(int(needed))) - 2)
    return int(-(-needed // scale) * scale)


def steady_figures(requests: Table, tokens: TokenTimes, window: Window, *, gpus: int, slo_ttft_ms: float,
                   slo_tpot_ms: float, warmup_requests: int = 0) -> dict[str, Any]:
    """Throughput, latency and goodput over ``window``; the whole run's keys with ``steady`` meaning."""
    t0, t1, span = window.start_s, window.end_s, max(window.length_s, 1e-12)
    arrival, finish, first = (column(requests, c) for c in ("arrival_s", "finish_s", "first_token_s"))
    measured = np.arange(len(requests)) >= warmup_requests
    arrived = measured & (arrival >= t0) & (arrival <= t1) & np.isfinite(finish)
    finished = measured & (finish > t0) & (finish <= t1)
    prompts = measured & (first > t0) & (first <= t1)
    out_tokens = tokens.between(t0, t1)
    prompt_tokens = float(np.asarray(requests["prompt_tokens"])[prompts].sum())
    ttft, tpot, e2e = (column(requests, c)[arrived] for c in ("ttft_ms", "tpot_ms", "e2e_ms"))
    late = finish[arrived] > t1
    good = (ttft <= slo_ttft_ms) & ((tpot <= slo_tpot_ms) | np.isnan(tpot))
    attained = float(good.mean()) if len(ttft) else 0.0
    # Little's law: the time-average of the requests in the system (warm-up ones too) over the window
    overlap = np.clip(np.minimum(np.where(np.isfinite(finish), finish, t1), t1) - np.maximum(arrival, t0), 0.0, None)
    in_flight = float(overlap.sum()) / span
    drain_share = float(late.mean()) if len(late) else 0.0
    warnings = []
    if window.chosen == "whole run":
        warnings.append(window.how)
    if drain_share > DRAIN_SHARE_WARNING:
        warnings.append(f"{drain_share * 100:.0f}% of the window's requests finish after it, in the drain: their "
                        f"latency is measured at a falling load; raise workload.num_requests to about "
                        f"{_enough(len(requests), len(ttft), drain_share):,}")
    requests_per_s = float(finished.sum()) / span
    return {
        "start_s": t0,
        "end_s": t1,
        "chosen": window.chosen,
        "how": window.how,
        "num_requests": int(arrived.sum()),
        "num_finished": int(finished.sum()),
        "throughput_tokens_per_s": (out_tokens + prompt_tokens) / span,
        "output_tokens_per_s": out_tokens / span,
        "output_tokens_per_s_per_gpu": out_tokens / span / gpus,
        "requests_per_s": requests_per_s,
        "in_flight": in_flight,
        "ttft_ms": percentiles(ttft),
        "tpot_ms": percentiles(tpot),
        "e2e_ms": percentiles(e2e),
        "goodput_requests_per_s": requests_per_s * attained,
        "slo_attained": attained,
        "drain_share": drain_share,
        # one per line, "" when none: a plain string in sweep tables as in the JSON
        "warnings": "\n".join(warnings),
    }
