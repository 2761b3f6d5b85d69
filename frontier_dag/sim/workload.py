"""The request stream a simulation consumes: arrival times, token counts, prefix blocks.

Each concern draws from its own named stream (``frontier_dag.streams``), so a run is
reproducible bit for bit and changing the length model does not move the arrivals.

Trace rows: when arrivals are replayed (``arrival.kind == "trace"``) the rows
``start .. start + num_requests - 1`` are used in order, and asking for more rows than
the trace has is an error (wrapping around would repeat prompts and break prefix reuse).
Otherwise each request draws one row, with replacement, from the rows from ``start`` on;
a request's prompt, output and prefix blocks come from the same row, so their
correlation survives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from frontier_dag.config.workload import ArrivalConfig, LengthConfig, TraceConfig, WorkloadConfig
from frontier_dag.data import expand_data_path
from frontier_dag.errors import ConfigError
from frontier_dag.streams import stream

if TYPE_CHECKING:
    import pandas as pd

    from frontier_dag.sim.traces import Trace

# The largest token count a float holds exactly; a cap for unbounded lognormal draws.
MAX_TOKENS = 2**53


@dataclass(frozen=True)
class Requests:
    """One entry per request, in arrival order (for a closed loop, in the order clients
    send them).

    ``arrival_s``: seconds from the first request (which arrives at 0); all NaN in a
    closed loop, where the simulator sets a request's arrival when a client sends it.
    ``prompt_tokens``, ``output_tokens``: int64 >= 1. Prefix blocks are CSR: request
    ``i``'s block hashes are ``hash_values[hash_offsets[i]:hash_offsets[i + 1]]``, the
    k-th covering prompt tokens ``[k * block_tokens, (k + 1) * block_tokens)`` (the last
    may be partial); equal leading hashes mean a shared prefix. Without prefix
    information every offset is 0 and ``block_tokens`` is 0.
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    hash_offsets: np.ndarray
    hash_values: np.ndarray
    block_tokens: int = 0

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if not (len(self.prompt_tokens) == len(self.output_tokens) == n == len(self.hash_offsets) - 1):
            raise ValueError("Requests arrays disagree in length")
        if self.hash_offsets[-1] != len(self.hash_values):
            raise ValueError("hash_offsets[-1] must equal len(hash_values)")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def closed_loop(self) -> bool:
        """True when the simulator, not the workload, sets arrival times."""
        return len(self) > 0 and bool(np.isnan(self.arrival_s[0]))

    def block_hashes(self, i: int) -> np.ndarray:
        """Request ``i``'s block hashes (a view)."""
        return self.hash_values[self.hash_offsets[i] : self.hash_offsets[i + 1]]

    def to_frame(self) -> pd.DataFrame:
        """A table for debugging, one row per request (block hashes as arrays)."""
        import pandas as pd

        return pd.DataFrame({
            "arrival_s": self.arrival_s,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "num_blocks": np.diff(self.hash_offsets),
            "block_hashes": np.split(self.hash_values, self.hash_offsets[1:-1]),
        })


def generate_requests(cfg: WorkloadConfig, seed: int, base_dir: Path | None = None) -> Requests:
    """The workload's ``cfg.num_requests`` requests for ``seed``.

    ``base_dir`` (the config file's folder) anchors a relative trace path. Trace problems
    (missing file, column or row; too few rows to replay) raise ConfigError.
    """
    n = cfg.num_requests
    replay = cfg.arrival is not None and cfg.arrival.kind == "trace"
    lengths_from_trace = "trace" in (cfg.prompt_tokens.kind, cfg.output_tokens.kind)
    trace = rows = None
    if replay or lengths_from_trace:
        trace = load_trace(cfg.trace, base_dir)
        if replay:
            rows = replayed_rows(trace, cfg.trace.start, n)
        else:
            rows = sampled_rows(trace, cfg.trace.start, n, stream(seed, "trace_rows"))

    if cfg.clients is not None:
        arrival_s = np.full(n, np.nan)
    else:
        replayed = _trace_arrivals(trace, cfg.trace, rows) if replay else None
        arrival_s = arrival_times(cfg.arrival, n, stream(seed, "arrivals"), replayed)

    if cfg.prompt_pool is not None:
        return _from_pool(cfg, n, seed, arrival_s)
    prompt = token_counts(cfg.prompt_tokens, n, stream(seed, "prompt_lengths"),
                          trace.prompt_tokens[rows] if trace is not None else None)
    output = token_counts(cfg.output_tokens, n, stream(seed, "output_lengths"),
                          trace.output_tokens[rows] if trace is not None else None)

    if cfg.prompt_tokens.kind == "trace" and trace.block_tokens > 0:
        # A clipped prompt keeps only the blocks it still covers.
        covered = -(-prompt // trace.block_tokens)
        from frontier_dag.sim.traces import take_blocks

        offsets, values = take_blocks(trace.hash_offsets, trace.hash_values, rows, covered)
        block_tokens = trace.block_tokens
    else:
        offsets, values, block_tokens = np.zeros(n + 1, np.int64), np.zeros(0, np.int64), 0
    return Requests(arrival_s, prompt, output, offsets, values, block_tokens)


def pool_entries(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """The dataset entry each of ``n`` requests sends: shuffled passes over ``size`` entries,
    each entry once per pass (aiperf's ``shuffle`` sampling)."""
    passes = -(-n // size)
    return np.concatenate([rng.permutation(size) for _ in range(passes)])[:n].astype(np.int64)


def _from_pool(cfg: WorkloadConfig, n: int, seed: int, arrival_s: np.ndarray) -> Requests:
    """Requests whose prompts come from ``cfg.prompt_pool``: an entry's length is drawn once,
    and its full blocks hash the same every time it is sent (and differently from every
    other entry's), so the prefix cache sees the dataset's repeats and nothing else."""
    pool = cfg.prompt_pool
    lengths = token_counts(cfg.prompt_tokens, pool.size, stream(seed, "prompt_lengths"))
    entry = pool_entries(pool.size, n, stream(seed, "prompt_pool"))
    prompt = lengths[entry]
    output = token_counts(cfg.output_tokens, n, stream(seed, "output_lengths"))
    blocks = prompt // pool.block_tokens
    offsets = np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
    stride = int(lengths.max()) // pool.block_tokens + 1
    within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], blocks)
    values = np.repeat(entry, blocks) * stride + within
    return Requests(arrival_s, prompt, output, offsets, values, pool.block_tokens)


def arrival_times(
    cfg: ArrivalConfig, n: int, rng: np.random.Generator, replayed: np.ndarray | None = None
) -> np.ndarray:
    """``n`` non-decreasing open-loop arrival times in seconds, the first at 0.

    poisson: exponential gaps of mean 1/rate; gamma: gaps of mean 1/rate and coefficient
    of variation ``cv`` (shape 1/cv^2); constant: gaps of exactly 1/rate; trace: the
    ``replayed`` times shifted to start at 0.
    """
    if cfg.kind == "trace":
        if replayed is None:
            raise ValueError("arrival kind 'trace' needs the replayed trace times")
        return replayed - replayed[0]
    mean_gap = 1.0 / cfg.rate_per_s
    if cfg.kind == "poisson":
        gaps = rng.exponential(mean_gap, n - 1)
    elif cfg.kind == "gamma":
        shape = 1.0 / cfg.cv**2
        gaps = rng.gamma(shape, mean_gap / shape, n - 1)
    else:
        gaps = np.full(n - 1, mean_gap)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def token_counts(
    cfg: LengthConfig, n: int, rng: np.random.Generator, from_trace: np.ndarray | None = None
) -> np.ndarray:
    """``n`` token counts (int64), rounded and clipped to [max(1, low), high].

    fixed: ``value``; uniform: integers in [low, high]; lognormal: mean ``mean`` and
    coefficient of variation ``cv`` before rounding; trace: ``from_trace`` as given.
    """
    if cfg.kind == "fixed":
        raw = np.full(n, float(cfg.value))
    elif cfg.kind == "uniform":
        raw = rng.integers(cfg.low, cfg.high, size=n, endpoint=True)
    elif cfg.kind == "lognormal":
        sigma2 = math.log1p(cfg.cv**2)
        raw = rng.lognormal(math.log(cfg.mean) - sigma2 / 2, math.sqrt(sigma2), n)
    else:
        if from_trace is None:
            raise ValueError("length kind 'trace' needs the trace's column")
        raw = from_trace
    low = max(1, cfg.low or 1)
    high = cfg.high if cfg.high is not None else MAX_TOKENS
    return np.clip(np.rint(raw), low, high).astype(np.int64)


def load_trace(cfg: TraceConfig, base_dir: Path | None = None) -> Trace:
    """Read ``cfg.path`` (``${FRONTIER_DAG_DATA}`` expanded, relative to ``base_dir``)."""
    from frontier_dag.sim.traces import read_trace  # pandas reads the CSV formats

    trace = read_trace(expand_data_path(cfg.path, base_dir), cfg.format, cfg.block_tokens)
    if cfg.start >= len(trace):
        raise ConfigError(
            f"{trace.path}: workload.trace.start={cfg.start} but the trace has "
            f"{len(trace)} rows; lower workload.trace.start"
        )
    return trace


def replayed_rows(trace: Trace, start: int, n: int) -> np.ndarray:
    """Rows ``start .. start + n - 1``, or a ConfigError when the trace is too short."""
    if start + n > len(trace):
        raise ConfigError(
            f"{trace.path}: replaying {n} requests from row {start} needs {start + n} rows "
            f"but the trace has {len(trace)}; lower workload.num_requests or "
            "workload.trace.start, or give workload.arrival (e.g. {kind: poisson, "
            "rate_per_s: 10}) to resample the trace's lengths instead"
        )
    return np.arange(start, start + n, dtype=np.int64)


def sampled_rows(trace: Trace, start: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows drawn uniformly with replacement from ``start`` on."""
    return rng.integers(start, len(trace), size=n, dtype=np.int64)


def _trace_arrivals(trace: Trace, cfg: TraceConfig, rows: np.ndarray) -> np.ndarray:
    if trace.arrival_s is None:
        raise ConfigError(
            f"{trace.path}: the trace has no arrival times to replay; give "
            "workload.arrival (e.g. {kind: poisson, rate_per_s: 10}) to draw them"
        )
    return trace.arrival_s[rows] * cfg.time_scale

