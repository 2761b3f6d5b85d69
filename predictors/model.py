"""The fitted cost model the simulator calls: batched, memoized, range-aware.

``predict(family, query)`` prices a batch of queries. Each row is looked up in an LRU
memo keyed on the row's exact inputs (ragged columns by their bytes); only the misses
are featurized and walked through the flattened forest, in one vectorized batch.
Families without a profile fall back to the roofline and say so (``source``).
Rows outside the fitted range are predicted with the efficiency of the nearest
measured points against their own calibrated roofline, flagged, and counted in
``out_of_range_count``. With ``jitter`` each call samples the kernel time from a
log-normal with the predicted median and spread instead of returning the median.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.cost.protocol import Prediction
from frontier_dag.cost.queries import QUERY_COLUMNS, RAGGED_COLUMNS
from frontier_dag.cost.roofline import roofline_us

from .fitted_set import FittedSet

MEMO_SIZE = 1 << 16


def _column_keys(values: Sequence[Any], ragged: bool) -> list:
    if ragged:
        return [np.asarray(v, dtype=np.int64).tobytes() for v in values]
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


class FittedCostModel:
    """A ``CostModel`` over a ``FittedSet``; memo entries are (latency, std, out_of_range)."""

    name = "fitted"

    def __init__(self, fitted: FittedSet, jitter: bool = False, seed: int = 0, memo_size: int = MEMO_SIZE):
        self.fitted = fitted
        self.hardware: HardwareConfig = fitted.hardware_config
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)
        self.memo_size = memo_size
        self.out_of_range_count = 0
        self._memo: dict[str, OrderedDict] = {f: OrderedDict() for f in fitted.models}
        self._ragged = {f: [c in RAGGED_COLUMNS for c in QUERY_COLUMNS[f]] for f in QUERY_COLUMNS}

    def predict(self, family: str, query: Mapping[str, Sequence[Any]]) -> Prediction:
        model = self.fitted.models.get(family)
        if model is None:
            return Prediction(roofline_us(family, query, self.hardware), source="roofline",
                              extra={"reason": f"no {family} profile in {self.fitted.description}"})
        memo = self._memo[family]
        columns = QUERY_COLUMNS[family]
        keys = list(zip(*(_column_keys(query[c], r) for c, r in zip(columns, self._ragged[family], strict=True)),
                        strict=True))
        found: list = [None] * len(keys)
        missing = []
        for i, key in enumerate(keys):
            entry = memo.get(key)
            if entry is None:
                missing.append(i)
            else:
                memo.move_to_end(key)
                found[i] = entry
        if missing:
            rows = {c: [query[c][i] for i in missing] for c in columns}
            latency, std, out_of_range = model.predict(rows, self.hardware)
            for j, i in enumerate(missing):
                found[i] = memo[keys[i]] = (float(latency[j]), float(std[j]), bool(out_of_range[j]))
            while len(memo) > self.memo_size:
                memo.popitem(last=False)
        latency, std, out_of_range = (np.array(v, dtype=float) for v in zip(*found, strict=True)) if found \
            else (np.empty(0), np.empty(0), np.empty(0))
        flagged = out_of_range.astype(bool)
        self.out_of_range_count += int(flagged.sum())
        if self.jitter:
            latency = self._sample(latency, std)
        return Prediction(latency, std, flagged, source="rf")

    def _sample(self, median: np.ndarray, std: np.ndarray) -> np.ndarray:
        """Log-normal draws with the given median and (approximately) the given std."""
        sigma = np.sqrt(np.log1p((std / np.maximum(median, 1e-12)) ** 2))
        return median * np.exp(sigma * self.rng.standard_normal(len(median)))
