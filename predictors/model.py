"""The fitted cost model the simulator calls: batched, memoized, range-aware.

``predict(family, query)`` prices a batch of queries. Rows of families without
per-sequence lengths (GEMM, grouped GEMM, collectives, ...) are looked up in a memo
keyed on the row's exact inputs (ragged expert loads by their bytes); only the misses
are featurized and walked through the flattened forest, in one batch. Attention and
MLA rows are not memoized here: the simulator memoizes them itself (in 0.5% buckets
of the batch's sums) and asks for rows it has not priced, and exact keys over every
sequence's lengths would cost kilobytes a row. The miss path is one compiled call
per batch (``fitting.CompiledFamily``): features, range check and forest walk.

Families without a profile fall back to the roofline and say so (``source``), except the
wide-EP expert families (``moe_wideep_prefill``, ``moe_wideep_decode``), priced by the plain
``moe_grouped_gemm`` model where the system and engine have no wide-EP table or the
table never measured the row's experts (aiconfigurator measured DeepSeek-V3's FP8 experts
only: another model's shape or precision is priced from the plain MoE tables), DeepEP's
dispatch and combine, priced by the ``all_to_all`` model on their message where DeepEP was
measured only by message size (the engines' ``moe_a2a`` tables), and
``attention_mixed`` when the prefill and decode families are fitted (aiconfigurator
measures only uniform prefill and decode batches): a mixed batch is then priced as its
prefill sequences through the prefill model plus its decode sequences through the
decode model (``source == "rf-split"``), as vLLM's and FlashAttention's mixed kernels
spend their time at first order. ``measured_families`` lists the fitted families, so
that the simulator can split mixed batches itself and memoize the parts apart.
Rows outside the fitted range are predicted with the efficiency of the nearest
measured points against their own calibrated roofline, flagged, and counted in
``out_of_range_count``. With ``jitter`` each call samples the kernel time from a
log-normal with the predicted median and spread instead of returning the median.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.cost.protocol import Prediction
from frontier_dag.cost.queries import (
    ATTENTION_FAMILIES,
    DEEPEP_FAMILIES,
    MLA_FAMILIES,
    MOE_FAMILIES,
    QUERY_COLUMNS,
    RAGGED_COLUMNS,
    check_query,
)
from frontier_dag.cost.roofline import deepep_bytes, roofline_us

from . import features
from .features import DTYPE_CODES, HardwareTables
from .fitted_set import FittedSet
from .fitting import CompiledFamily

MEMO_SIZE = 1 << 16
#: the wide-EP expert families, and the query columns that say which experts a row runs
WIDE_EP_FAMILIES = frozenset(MOE_FAMILIES) - {"moe_grouped_gemm"}
EXPERT_SHAPE = ("hidden", "inter", "num_experts", "topk")
#: families whose rows list every sequence's lengths: priced without a per-row memo
PER_SEQUENCE_FAMILIES = frozenset({*ATTENTION_FAMILIES, *MLA_FAMILIES})


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
        self._memo: dict[str, dict] = {f: {} for f in fitted.models if f not in PER_SEQUENCE_FAMILIES}
        self._columns = {f: tuple((c, c in RAGGED_COLUMNS) for c in QUERY_COLUMNS[f]) for f in QUERY_COLUMNS}
        self._compiled: dict[str, CompiledFamily] = {}
        self._tables = HardwareTables(self.hardware)

    # -- the protocol ----------------------------------------------------------------------------
    @property
    def measured_families(self) -> frozenset[str]:
        """Families priced from measurements (the others: roofline, or the mixed split)."""
        return frozenset(self.fitted.models)

    #: ``predict`` takes ``memo=False``: a caller that memoises rows itself (the coster's
    #: expert prices) skips this model's memo, which would only miss; the prices are the same
    takes_memo = True

    def predict(self, family: str, query: Mapping[str, Sequence[Any]], memo: bool = True) -> Prediction:
        if family == "all_reduce" and "auto" in list(query.get("impl", ())):
            return self._auto_all_reduce(query)
        model = self.fitted.models.get(family)
        if model is None:
            return self._without_model(family, query, memo)
        if family in WIDE_EP_FAMILIES and "moe_grouped_gemm" in self.fitted.models:
            foreign = self._unmeasured_experts(model, query)
            if foreign.any():
                return self._split_rows(query, foreign, "moe_grouped_gemm", family, memo)
        table = self._memo.get(family) if memo else None
        if table is None:
            rows = check_query(family, query)
            latency, std, out_of_range = self._compute(family, query, rows)
        else:
            latency, std, out_of_range = self._memoized(family, query, table)
        return self._prediction(latency, std, out_of_range, "rf")

    def ragged_pricer(self, family: str, constants: Mapping[str, Any]):
        """``price(new, ctx, lengths)``: the latencies (µs) and out-of-range flags, as lists, of
        ``family``'s attention rows that share ``constants`` (every query column but ``q_lens``
        and ``ctx_lens``), given as flat float64 lengths and int64 row lengths; ``predict``'s
        numbers bit for bit, counting out-of-range rows as ``predict`` does. None where
        ``predict`` would not price them so (no model, or jitter, which samples every call).

        The simulator calls it on every memo miss of a batch's attention, thousands of times a
        run with 1 to 40 rows, so the fixed cost of a call matters more than its arithmetic: the
        compiled kernel is called directly with its arguments bound once, and the rows come
        back as the lists the simulator keeps, in two conversions instead of a handful of
        array operations. The arithmetic is ``CompiledFamily.predict``'s: ``np.exp`` of the
        same (rows x 2) slice, then one float64 product per row (Python's rounds as numpy's)."""
        if self.jitter or family not in PER_SEQUENCE_FAMILIES or family not in self.fitted.models:
            return None
        compiled = self._compiled_family(family)
        featurizer = compiled.featurizer
        per_row = featurizer.attention_rows({c: [v] for c, v in constants.items()}, 1)
        kind, bound = featurizer.kind, (per_row, featurizer.tables.consts, *compiled.model)
        # the built module's function (or numba's dispatcher) itself, without the Kernel's call
        kernel, exp = features.kernel.resolve("predict_rows"), np.exp

        def price(new: np.ndarray, ctx: np.ndarray, lengths: np.ndarray) -> tuple[list[float], list[bool]]:
            out = kernel(kind, len(lengths), new, ctx, lengths, *bound)
            rows = out.tolist()
            latency = [row[2] * factors[0] for row, factors in zip(rows, exp(out[:, :2]).tolist(), strict=True)]
            flags = [row[3] != 0.0 for row in rows]
            if True in flags:
                self.out_of_range_count += flags.count(True)
            return latency, flags
        return price

    def _auto_all_reduce(self, query: Mapping[str, Sequence[Any]]) -> Prediction:
        """impl ``auto``: the engine's own (custom) all-reduce kernel where it is measured and
        faster, NCCL otherwise, as vLLM, SGLang and TensorRT-LLM choose between them by size."""
        rows = len(query["impl"])
        count, jitter = self.out_of_range_count, self.jitter
        self.jitter = False  # sampled once, below
        try:
            nccl = self.predict("all_reduce", {**query, "impl": ["nccl"] * rows})
            custom = self.predict("all_reduce", {**query, "impl": ["custom"] * rows})
        finally:
            self.out_of_range_count, self.jitter = count, jitter
        use = ~custom.out_of_range & (custom.latency_us < nccl.latency_us)
        return self._prediction(np.where(use, custom.latency_us, nccl.latency_us), np.where(use, custom.std_us, nccl.std_us),
                                np.where(use, custom.out_of_range, nccl.out_of_range), nccl.source)

    # -- paths -----------------------------------------------------------------------------------
    def _prediction(self, latency: np.ndarray, std: np.ndarray, out_of_range: np.ndarray, source: str,
                    extra: dict | None = None) -> Prediction:
        self.out_of_range_count += int(out_of_range[0]) if len(out_of_range) == 1 else \
            int(np.count_nonzero(out_of_range))
        if self.jitter:
            latency = self._sample(latency, std)
        return Prediction(latency, std, out_of_range, source=source, extra=extra or {})

    def _compute(self, family: str, query: Mapping[str, Any], rows: int) -> tuple[np.ndarray, ...]:
        """Latency, std and out-of-range flags of every row, without the memo."""
        if rows == 0:
            return np.empty(0), np.empty(0), np.zeros(0, dtype=bool)
        return self._compiled_family(family).predict(query, rows)

    def _compiled_family(self, family: str) -> CompiledFamily:
        compiled = self._compiled.get(family)
        if compiled is None:
            compiled = self._compiled[family] = CompiledFamily(self.fitted.models[family], self._tables)
        return compiled

    def _keys(self, family: str, query: Mapping[str, Sequence[Any]]) -> list:
        columns = []
        for column, ragged in self._columns[family]:
            values = query[column]
            if ragged:  # by the bytes of the row's int64 values
                columns.append([(v if type(v) is np.ndarray and v.dtype == np.int64 else
                                 np.asarray(v, dtype=np.int64)).tobytes() for v in values])
            else:
                columns.append(values.tolist() if isinstance(values, np.ndarray) else values)
        return list(zip(*columns, strict=True))

    def _memoized(self, family: str, query: Mapping[str, Sequence[Any]], memo: dict) -> tuple[np.ndarray, ...]:
        try:
            keys = self._keys(family, query)
        except (KeyError, ValueError):
            check_query(family, query)  # names the missing column or the uneven lengths
            raise
        get = memo.get
        entries = [get(key) for key in keys]
        if None not in entries:  # every row seen before
            if len(entries) == 1:
                latency, std, out_of_range = entries[0]
                return np.array([latency]), np.array([std]), np.array([out_of_range])
            table = np.array(entries, dtype=float)
            return table[:, 0], table[:, 1], table[:, 2] != 0
        missing = [i for i, entry in enumerate(entries) if entry is None]
        if len(missing) == len(keys):  # every row is new: no gathering
            latency, std, out_of_range = self._compute(family, query, len(keys))
            memo.update(zip(keys, zip(latency.tolist(), std.tolist(), out_of_range.tolist(), strict=True),
                            strict=True))
            self._trim(memo)
            return latency, std, out_of_range
        if missing:
            part = {c: [query[c][i] for i in missing] for c in QUERY_COLUMNS[family]}
            latency, std, out_of_range = self._compute(family, part, len(missing))
            for i, entry in zip(missing, zip(latency.tolist(), std.tolist(), out_of_range.tolist(), strict=True),
                                strict=True):
                entries[i] = memo[keys[i]] = entry
            self._trim(memo)
        table = np.array(entries, dtype=float).reshape(len(entries), 3)
        return table[:, 0], table[:, 1], table[:, 2] != 0

    def _trim(self, memo: dict) -> None:
        """Past ``memo_size`` entries, drop the older half (insertion order)."""
        if len(memo) > self.memo_size:
            for key in list(memo)[: len(memo) - self.memo_size // 2]:
                del memo[key]

    @staticmethod
    def _unmeasured_experts(model, query: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Rows whose experts (``EXPERT_SHAPE`` or precision) the wide-EP model never saw:
        aiconfigurator measured DeepSeek-V3's FP8 experts only."""
        outside = np.zeros(len(query["dtype"]), dtype=bool)
        for column in EXPERT_SHAPE:
            j = model.names.index(column)
            x = np.log1p(np.asarray(query[column], dtype=float)).astype(np.float32).astype(float)
            outside |= (x < model.low[j]) | (x > model.high[j])
        j = model.names.index("dtype")
        codes = np.array([DTYPE_CODES.get(str(d), -1.0) for d in query["dtype"]], dtype=float)
        return outside | (codes < model.low[j]) | (codes > model.high[j])

    def _split_rows(self, query: Mapping[str, Sequence[Any]], rows: np.ndarray, family: str, rest: str,
                    memo: bool = True) -> Prediction:
        """``rows`` of ``query`` priced by ``family``, the others by ``rest``."""
        if rows.all():
            return self.predict(family, query, memo)
        parts = [(np.flatnonzero(rows), family), (np.flatnonzero(~rows), rest)]
        n = len(rows)
        latency, std, out_of_range = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
        jitter, self.jitter = self.jitter, False  # sampled once, below
        try:
            for index, name in parts:
                part = self.predict(name, {c: [query[c][i] for i in index] for c in QUERY_COLUMNS[name]}, memo)
                latency[index], std[index], out_of_range[index] = part.latency_us, part.std_us, part.out_of_range
                self.out_of_range_count -= int(np.count_nonzero(part.out_of_range))
        finally:
            self.jitter = jitter
        return self._prediction(latency, std, out_of_range, "rf")

    def _without_model(self, family: str, query: Mapping[str, Sequence[Any]], memo: bool = True) -> Prediction:
        models = self.fitted.models
        if family == "attention_mixed" and "attention_prefill" in models and "attention_decode" in models:
            return self._split_mixed(query)
        if family in MOE_FAMILIES and "moe_grouped_gemm" in models:
            # no wide-EP table for this system and engine: the plain MoE tables price the experts
            return self.predict("moe_grouped_gemm", query, memo)
        if family in DEEPEP_FAMILIES and "all_to_all" in models:
            # DeepEP measured by message size only (the engines' moe_a2a tables): the all-to-all
            # model prices the message, its impl the mode and phase
            phase = family.removeprefix("deepep_")
            return self.predict("all_to_all", {"bytes": deepep_bytes(family, query), "group_size": query["group_size"],
                                               "placement": query["placement"],
                                               "impl": [f"{impl}_{phase}" for impl in query["impl"]]})
        return Prediction(roofline_us(family, query, self.hardware), source="roofline",
                          extra={"reason": f"no {family} profile in {self.fitted.description}"})

    def _split_mixed(self, query: Mapping[str, Sequence[Any]]) -> Prediction:
        """A mixed batch as its prefill sequences (prefill model) plus its decode sequences
        (decode model); the spreads add in quadrature, a row is out of range if a part is."""
        rows = check_query("attention_mixed", query)
        latency, variance, out_of_range = np.zeros(rows), np.zeros(rows), np.zeros(rows, dtype=bool)
        q_lens = [np.asarray(q).ravel() for q in query["q_lens"]]
        ctx_lens = [np.asarray(c).ravel() for c in query["ctx_lens"]]
        for family, is_part in (("attention_prefill", np.greater), ("attention_decode", np.equal)):
            picks = [is_part(q, 1) for q in q_lens]
            have = [i for i, pick in enumerate(picks) if pick.any()]
            if not have:
                continue
            part = {c: [query[c][i] for i in have] for c in QUERY_COLUMNS[family] if c not in ("q_lens", "ctx_lens")}
            part["q_lens"] = [q_lens[i][picks[i]] for i in have]
            part["ctx_lens"] = [ctx_lens[i][picks[i]] for i in have]
            lat, std, oor = self._compute(family, part, len(have))
            latency[have] += lat
            variance[have] += std**2
            out_of_range[have] |= oor
        return self._prediction(latency, np.sqrt(variance), out_of_range, "rf-split",
                                {"parts": ("attention_prefill", "attention_decode")})

    def _sample(self, median: np.ndarray, std: np.ndarray) -> np.ndarray:
        """Log-normal draws with the given median and (approximately) the given std."""
        sigma = np.sqrt(np.log1p((std / np.maximum(median, 1e-12)) ** 2))
        return median * np.exp(sigma * self.rng.standard_normal(len(median)))
