"""Time spent per category on a replica between two instants.

Each replica's iterations are a chain in time; ``ChainTimes.window(c, t0, t1)`` is the
time chain ``c`` spent per category in ``[t0, t1]`` (an iteration cut by the window
counts in proportion) and the time it was busy. Prefix sums make every window O(log n),
for one window or a vector of them.
"""

from __future__ import annotations

import numpy as np

from frontier_dag.analysis.run_data import RunData, categories_with_rest
from frontier_dag.cost.queries import CATEGORIES

#: The iteration categories of a run: the split of an iteration's DAG critical path
#: (CATEGORIES), plus the time of iterations logged without that split.
ITERATION_CATEGORIES = (*CATEGORIES, "unattributed")


class ChainTimes:
    def __init__(self, run: RunData):
        self.run = run
        it = run.iterations
        self.start = it["start_s"].to_numpy(dtype=np.float64) * 1e6
        self.dur = it["duration_us"].to_numpy(dtype=np.float64)
        self.cats = categories_with_rest(run)  # (ni, K)
        self.cum = np.vstack([np.zeros((1, self.cats.shape[1])), np.cumsum(self.cats, axis=0)])  # before row i
        self.lo, self.hi = run.chain_lo, run.chain_hi

    def _level(self, c: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative category time of chain ``c`` up to ``t`` (global prefix, differences
        within a chain are exact) and the count of iterations started by ``t``."""
        lo = self.lo[c]
        k = np.empty(len(c), dtype=np.int64)
        for chain in np.unique(c).tolist():
            sel = c == chain
            k[sel] = lo[sel] + np.searchsorted(self.start[self.lo[chain]:self.hi[chain]], t[sel], side="right") - 1
        has = k >= lo
        kk = np.where(has, k, lo)
        frac = np.where(has, np.clip((t - self.start[kk]) / np.maximum(self.dur[kk], 1e-12), 0.0, 1.0), 0.0)
        level = self.cum[kk] + self.cats[kk] * frac[:, None]
        level = np.where(has[:, None], level, self.cum[lo])
        return level, np.where(has, kk - lo + 1, 0)

    def windows(self, c: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per window: category µs ``(n, K)`` and iterations that overlap it."""
        c = np.asarray(c, dtype=np.int64)
        t0, t1 = np.asarray(t0, dtype=np.float64), np.asarray(t1, dtype=np.float64)
        out = np.zeros((len(c), self.cats.shape[1]))
        count = np.zeros(len(c), dtype=np.int64)
        ok = (c >= 0) & np.isfinite(t0) & np.isfinite(t1) & (t1 > t0)
        if ok.any() and len(self.start):
            a, _ = self._level(c[ok], t0[ok])
            b, _ = self._level(c[ok], t1[ok])
            out[ok] = np.maximum(b - a, 0.0)
            count[ok] = self._overlapping(c[ok], t0[ok], t1[ok])
        return out, count

    def _overlapping(self, c: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """Iterations of chain ``c`` that overlap (t0, t1): started before t1, not ended by t0."""
        out = np.empty(len(c), dtype=np.int64)
        end = self.start + self.dur
        for chain in np.unique(c).tolist():
            sel = c == chain
            lo, hi = self.lo[chain], self.hi[chain]
            started = np.searchsorted(self.start[lo:hi], t1[sel] - 1e-6, side="left")
            ended = np.searchsorted(end[lo:hi], t0[sel] + 1e-6, side="right")
            out[sel] = np.maximum(started - ended, 0)
        return out

    def window(self, c: int, t0: float, t1: float) -> tuple[np.ndarray, int]:
        cats, count = self.windows(np.array([c]), np.array([t0]), np.array([t1]))
        return cats[0], int(count[0])
