"""Fitting one random forest per (hardware, operator family) on a log target.

The forest predicts ``log(latency / baseline)``, where the baseline is the family's
calibrated roofline ``t0 + u w + max(c, m) + s min(c, m)`` with c = compute / e_c and
m = memory / e_m: the work's time at the GPU's peaks (``features``) with a fixed
overhead, two efficiencies and the share ``s`` of the shorter time not hidden behind
the longer, fitted to the profile; attention adds ``u`` µs per wave ``w`` of the thread
blocks its kernel launches (their set-up cost: a decode batch of 2048 sequences takes
the same time over 1 or 63 cached tokens, a prefill of 16 to 128 tokens as many blocks). The residual varies slowly with the shape where the raw roofline ratio jumps
(a kernel's fixed cost stops dominating), so a piecewise-constant forest interpolates
to unseen shapes, and the baseline carries predictions beyond the measured range.
A forest is fitted in seconds with fixed settings (no grid search), then flattened
(``forest``). Each of
its leaves also records the mean log CV (std / median) of the training rows that
reach it, where the profile measured a spread, so one walk predicts both the kernel
time and its jitter. The bounding box of the training's size features (``SIZE_FEATURES``)
marks a query as out of range; such a query is predicted with the efficiency of the
nearest measured shapes, scaled by its own calibrated roofline time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.cost.queries import (
    ATTENTION_FAMILIES,
    COLLECTIVE_FAMILIES,
    DEEPEP_FAMILIES,
    MLA_FAMILIES,
    MOE_FAMILIES,
    QUERY_COLUMNS,
    check_query,
)
from frontier_dag.errors import PredictorError
from frontier_dag.lazy import lazy_module

from .features import (
    MLA_PREFILL,
    Featurizer,
    HardwareTables,
    feature_matrix,
    learn_vocab,
    predict_rows,
)
from .forest import FlatForest

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: loading fitted predictors from the cache needs neither
    pd = lazy_module("pandas")

#: a measured spread above this CV is an outlier-ridden timing, not kernel jitter
MAX_CV = 0.5

_ATTENTION_SIZE = ("n_seqs", "q_sum", "q_max", "kv_sum", "kv_max", "heads", "dtype", "kv_dtype")
#: the features that say how big a query is, and its categories: a query is out of range
#: when one of them lies outside what was measured. How a batch's lengths spread (std,
#: quantiles, shares) is not a size: aiconfigurator measures uniform batches only, and a
#: heterogeneous batch of measured sizes is interpolated, not extrapolated.
SIZE_FEATURES: dict[str, tuple[str, ...]] = {
    **{f: (*_ATTENTION_SIZE, "kv_heads", "head_dim") for f in ATTENTION_FAMILIES},
    **{f: (*_ATTENTION_SIZE, "kv_lora_rank", "rope_dim", "nope_dim", "v_dim") for f in MLA_FAMILIES},
    "gemm": ("m", "n", "k", "dtype"),
    **dict.fromkeys(MOE_FAMILIES, ("num_tokens", "hidden", "inter", "num_experts", "topk", "ep", "moe_tp", "dtype",
                                   "n_local", "routed", "load_max")),
    **{f: ("log_bytes", "group_size", "placement", "impl") for f in COLLECTIVE_FAMILIES},
    **dict.fromkeys(DEEPEP_FAMILIES, ("num_tokens", "hidden", "topk", "num_experts", "group_size", "placement", "impl")),
    "p2p": ("log_bytes", "placement"),
    "elementwise": ("op", "num_tokens", "hidden", "dtype"),
}


@dataclass(frozen=True)
class FitSettings:
    """Forest settings; part of the cache key. Fixed defaults, chosen once (docs/predictors.md)."""

    kind: str = "extra"
    n_estimators: int = 24
    max_depth: int | None = 24
    min_samples_leaf: int = 1
    #: leaves of at least this many rows where the repeats scatter by more than ``noisy_cv``
    noisy_leaf: int = 5
    noisy_cv: float = 0.02
    #: a noisy leaf's value is the mean log ratio of its rows within this of their median: a
    #: timing spike (2-4x in single rows of some public sets) does not move it; None: sklearn's mean
    noisy_spike: float | None = 0.2
    max_features: float = 1.0
    max_samples: float | None = None
    seed: int = 0

    def key(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_SETTINGS = FitSettings()


@dataclass
class FamilyModel:
    """A fitted family: its feature names, learned categories, box (of every feature, and
    the columns of its size features, which the range check reads), and flattened forest."""

    family: str
    names: list[str]
    vocab: dict[str, tuple[str, ...]]
    low: np.ndarray
    high: np.ndarray
    calibration: np.ndarray
    forest: FlatForest
    has_spread: bool
    n_train: int
    info: dict[str, Any] = field(default_factory=dict)
    range_columns: np.ndarray | None = None

    def predict(self, query: Mapping[str, Any], hw: HardwareConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Median latency (µs), its std (µs) and the out-of-range flag of each query row."""
        return CompiledFamily(self, HardwareTables(hw)).predict(query, check_query(self.family, query))


class CompiledFamily:
    """A fitted family bound to one GPU: a query's features, range check, calibrated roofline
    and forest walk in one compiled call (``features.predict_rows``).

    An unknown category is coded -1, below every code seen in training. Beyond the box a
    tree goes where it goes at the box's edge (its thresholds lie inside), so the forest
    gives the inefficiency of the nearest measured shapes unclipped."""

    def __init__(self, model: FamilyModel, tables: HardwareTables):
        self.family, self.has_spread = model.family, model.has_spread
        self.featurizer = Featurizer(model.family, tables, model.vocab)
        checked = np.arange(len(model.names)) if model.range_columns is None else model.range_columns
        box = np.array([checked, model.low[checked], model.high[checked]], dtype=np.float64)
        forest = model.forest
        spread = forest.spread if forest.spread is not None else np.zeros(0, dtype=np.float32)
        self.model = (self.featurizer.transform, box, forest.nodes, spread, forest.roots, forest.depth,
                      np.asarray(model.calibration, dtype=np.float64))

    def predict(self, query: Mapping[str, Any], rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latency (µs), std (µs) and out-of-range flag of each of the ``rows`` rows of ``query``."""
        out = predict_rows(*self.featurizer.inputs(query, rows), *self.model)
        factors = np.exp(out[:, :2])
        latency = out[:, 2] * factors[:, 0]
        std = latency * factors[:, 1] if self.has_spread else np.zeros(rows)
        return latency, std, out[:, 3] != 0

    def attention_pricer(self, constants: Mapping[str, Any]):
        """``price(new, ctx, lengths)``: the latency (µs) and out-of-range flag of attention
        rows that share ``constants`` (every query column but ``q_lens`` and ``ctx_lens``),
        given as flat float64 lengths and int64 row lengths: ``predict``'s numbers without
        building a query (the simulator's memo misses)."""
        featurizer = self.featurizer
        if featurizer.kind > MLA_PREFILL:
            raise KeyError(f"{self.family} is not an attention family")
        per_row, consts = featurizer.attention_rows({c: [v] for c, v in constants.items()}, 1), featurizer.tables.consts
        kind, model = featurizer.kind, self.model

        def price(new: np.ndarray, ctx: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out = predict_rows(kind, len(lengths), new, ctx, lengths, per_row, consts, *model)
            return out[:, 2] * np.exp(out[:, :2])[:, 0], out[:, 3] != 0
        return price


def table_query(family: str, table: pd.DataFrame) -> dict[str, np.ndarray]:
    """The query columns of a profile table as a query batch."""
    return {c: table[c].to_numpy() for c in QUERY_COLUMNS[family]}


def metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Share of predictions within 5% and 10% relative error, median and p90 relative error."""
    ape = np.abs(predicted - measured) / measured
    return {"within_5pct": float(np.mean(ape <= 0.05)), "within_10pct": float(np.mean(ape <= 0.10)),
            "median_ape": float(np.median(ape)), "p90_ape": float(np.quantile(ape, 0.9))}


def calibrated_roofline(calibration: np.ndarray, work: np.ndarray) -> np.ndarray:
    """``t0 + u w + max(c, m) + s min(c, m)`` in µs, with c = compute / e_c and m = memory / e_m
    for work = (compute, memory) µs at peak and w waves of thread blocks: ``s`` is how much
    of the shorter of the two the kernel fails to hide behind the longer (0: all, the plain
    roofline; 1: none), ``u`` the µs a wave of blocks costs beyond them."""
    overhead, compute_efficiency, memory_efficiency, serial, per_wave = calibration
    compute, memory = work[:, 0] / compute_efficiency, work[:, 1] / memory_efficiency
    return overhead + per_wave * work[:, 2] + np.maximum(compute, memory) + serial * np.minimum(compute, memory)


def calibrate(work: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """The (t0, e_c, e_m, s, u) that fit ``latency`` best in log space (robust to outliers);
    u = 0 where the work counts no waves of blocks (every family but attention)."""

    from scipy.optimize import least_squares  # fitting only; loading a fitted model needs no scipy

    waves = bool(np.any(work[:, 2] > 0))

    def params(x: np.ndarray) -> np.ndarray:
        return np.array([*np.exp(x[:3]), x[3], np.exp(x[4]) if waves else 0.0])

    def residual(x: np.ndarray) -> np.ndarray:
        return np.log(calibrated_roofline(params(x), work)) - np.log(latency)

    start = [*np.log([max(float(np.min(latency)) * 0.5, 1e-3), 0.5, 0.5]), 0.5] + ([0.0] if waves else [])
    bounds = ([-np.inf, -np.inf, -np.inf, 0.0] + [-np.inf] * waves, [np.inf, np.inf, np.inf, 1.0] + [np.inf] * waves)
    return params(least_squares(residual, start, loss="soft_l1", f_scale=0.1, bounds=bounds).x)


def _leaf_means(forest, X: np.ndarray, values: np.ndarray, known: np.ndarray,
                fallback: float) -> list[np.ndarray]:
    """Per tree, each node's mean of ``values`` over the known rows reaching it (``fallback``
    where none does)."""
    out = []
    for estimator in forest.estimators_:
        leaf = estimator.apply(X.astype(np.float32))[known]
        count = np.bincount(leaf, minlength=estimator.tree_.node_count)
        total = np.bincount(leaf, weights=values[known], minlength=estimator.tree_.node_count)
        out.append(np.where(count > 0, total / np.maximum(count, 1), fallback))
    return out


def _leaf_robust_means(forest, X: np.ndarray, values: np.ndarray, spike: float) -> list[np.ndarray]:
    """Per tree, each leaf's mean of ``values`` over the rows reaching it whose value lies
    within ``spike`` of the leaf's median (sklearn's mean at the other nodes)."""
    out = []
    for estimator in forest.estimators_:
        leaf = estimator.apply(X.astype(np.float32))
        order = np.lexsort((values, leaf))
        count = np.bincount(leaf, minlength=estimator.tree_.node_count)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        ordered = values[order]
        median = estimator.tree_.value[:, 0, 0].copy()
        reached = count > 0
        low, high = start[reached] + (count[reached] - 1) // 2, start[reached] + count[reached] // 2
        median[reached] = (ordered[low] + ordered[high]) / 2
        kept = np.abs(values - median[leaf]) <= spike  # the median itself is always kept
        total = np.bincount(leaf, weights=np.where(kept, values, 0.0), minlength=len(median))
        kept_count = np.bincount(leaf, weights=kept.astype(float), minlength=len(median))
        out.append(np.where(kept_count > 0, total / np.maximum(kept_count, 1), median))
    return out


def _predict_with(forest, values: list[np.ndarray] | None, X: np.ndarray) -> np.ndarray:
    """The forest's mean over trees, with per-node ``values`` in place of sklearn's where given."""
    if values is None:
        return forest.predict(X)
    X32 = X.astype(np.float32)
    return np.mean([v[e.apply(X32)] for e, v in zip(forest.estimators_, values, strict=True)], axis=0)


def fit_family(family: str, table: pd.DataFrame, hw: HardwareConfig, settings: FitSettings = DEFAULT_SETTINGS,
               n_jobs: int = 2, estimate_trees: int = 0) -> FamilyModel:
    """Fit ``family``'s forest to a profile table (schema columns) measured on ``hw``.

    With ``estimate_trees``, also estimate its held-out accuracy (``info["accuracy"]``):
    a forest of that many trees, on the same features, fitted on a random 80% of the
    rows and scored on the rest (slightly pessimistic for the full forest)."""
    if len(table) < 2:
        raise PredictorError(f"{family}: needs at least 2 profile rows to fit, got {len(table)}")
    query = table_query(family, table)
    vocab = learn_vocab(family, query)
    X, names, work = feature_matrix(family, query, hw, vocab)
    latency = table["latency_us"].to_numpy(float)
    cv = np.clip(table["latency_std_us"].to_numpy(float) / latency, 0.0, MAX_CV)
    measured = cv > 0
    # noisy medians: average a few rows per leaf rather than chase each one
    noisy = measured.any() and float(np.median(cv[measured])) > settings.noisy_cv
    leaf = max(settings.min_samples_leaf, settings.noisy_leaf if noisy else 1)
    calibration = calibrate(work, latency)
    target = np.log(latency / calibrated_roofline(calibration, work))
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor  # fitting only

    def forest_of(trees: int):
        model = ExtraTreesRegressor if settings.kind == "extra" else RandomForestRegressor
        return model(bootstrap=settings.max_samples is not None, n_estimators=trees, max_depth=settings.max_depth,
                     min_samples_leaf=leaf, max_features=settings.max_features,
                     max_samples=settings.max_samples if len(table) > 50 else None,
                     random_state=settings.seed, n_jobs=n_jobs)

    spike = settings.noisy_spike if noisy else None
    forest = forest_of(settings.n_estimators).fit(X, target)
    leaf_values = None if spike is None else _leaf_robust_means(forest, X, target, spike)
    info: dict[str, Any] = {}
    if estimate_trees and len(table) >= 10:
        held = np.random.default_rng(settings.seed).random(len(table)) < 0.2
        if held.any() and not held.all():
            estimate = forest_of(estimate_trees).fit(X[~held], target[~held])
            values = None if spike is None else _leaf_robust_means(estimate, X[~held], target[~held], spike)
            predicted = latency[held] / np.exp(target[held]) * np.exp(_predict_with(estimate, values, X[held]))
            info["accuracy"] = {"n_train": int((~held).sum()), "n_test": int(held.sum()),
                                **metrics(predicted, latency[held])}
    if measured.any():
        log_cv = np.log(np.where(measured, cv, 1.0))
        leaf_cv = _leaf_means(forest, X, log_cv, measured, float(np.median(log_cv[measured])))
    else:  # no spread to learn: skip walking every row through every tree
        leaf_cv = [np.zeros(e.tree_.node_count) for e in forest.estimators_]
    return FamilyModel(
        range_columns=np.array([names.index(n) for n in SIZE_FEATURES[family] if n in names], dtype=np.int64),
        family=family, names=names, vocab=vocab, low=X.min(axis=0), high=X.max(axis=0), calibration=calibration,
        forest=FlatForest.from_sklearn(forest, leaf_cv, node_values=leaf_values), has_spread=bool(measured.any()), n_train=len(table),
        info={**info, "min_samples_leaf": leaf, "spike": spike, "t0_us": float(calibration[0]),
              "compute_efficiency": float(calibration[1]), "memory_efficiency": float(calibration[2]),
              "serial_share": float(calibration[3]), "us_per_block_wave": float(calibration[4])},
    )
