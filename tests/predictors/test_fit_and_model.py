"""Fitting on the committed fixture: held-out accuracy, the flattened forest, the cost
model's memo, range detection, roofline fallback and jitter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import ExtraTreesRegressor

from frontier_dag.config import load_hardware
from frontier_dag.cost.protocol import CostModel, PerGpuCostModel
from frontier_dag.predictors.evaluation import evaluate, held_out_mask
from frontier_dag.predictors.features import feature_matrix, walk_forest
from frontier_dag.predictors.fitted_set import fit_profiles
from frontier_dag.predictors.fitting import (
    FitSettings,
    calibrate,
    calibrated_roofline,
    fit_family,
    table_query,
)
from frontier_dag.predictors.forest import FlatForest
from frontier_dag.predictors.model import FittedCostModel
from frontier_dag.predictors.schema import read_profile_dir

SMALL = FitSettings(n_estimators=12)


@pytest.fixture(scope="module")
def profiles():
    from pathlib import Path

    return read_profile_dir(Path(__file__).parent / "fixtures" / "tiny_profile")


@pytest.fixture(scope="module")
def fitted(profiles):
    return fit_profiles(profiles, SMALL)


def walk(flat: FlatForest, X: np.ndarray) -> np.ndarray:
    """The compiled walk's leaf of every (row, tree) pair (it reads a last column of zeros at leaves)."""
    return walk_forest(np.column_stack([X, np.zeros(len(X))]).astype(np.float32), flat.nodes, flat.roots, flat.depth)


def test_flat_forest_matches_sklearn():
    rng = np.random.default_rng(0)
    X = rng.random((500, 4)).astype(np.float32).astype(float)
    y = np.sin(4 * X[:, 0]) + X[:, 1]
    forest = ExtraTreesRegressor(n_estimators=5, random_state=0).fit(X, y)
    flat = FlatForest.from_sklearn(forest)
    test = rng.random((50, 4)).astype(np.float32).astype(float)
    leaf_values = flat.nodes.view(np.float32)[:, 3].astype(float)
    for points in (X, test, test[:1]):  # training points sit exactly on split values
        expected = np.stack([e.apply(points.astype(np.float32)) for e in forest.estimators_], axis=1) + flat.roots
        leaves = walk(flat, points)
        assert np.array_equal(leaves, expected)
        assert np.allclose(leaf_values[leaves].mean(axis=1), forest.predict(points), rtol=1e-6)


def test_a_prediction_is_the_calibrated_roofline_times_the_forest_mean(fitted):
    """One compiled call featurizes, range-checks, walks and scales: the same as the steps apart."""
    model, hw = fitted.models["gemm"], fitted.hardware_config
    query = {"m": [64, 700, 65536], "n": [4096, 1024, 4096], "k": [4096] * 3, "dtype": ["bf16", "bf16", "fp8"]}
    X, _, work = feature_matrix("gemm", query, hw, model.vocab)
    leaves = walk(model.forest, X)
    log_ratio = model.forest.nodes.view(np.float32)[:, 3].astype(float)[leaves].mean(axis=1)
    log_cv = model.forest.spread.astype(float)[leaves].mean(axis=1)  # the fixture's GEMMs have a spread
    latency, std, out_of_range = model.predict(query, hw)
    assert latency == pytest.approx(calibrated_roofline(model.calibration, work) * np.exp(log_ratio), rel=1e-12)
    assert std == pytest.approx(latency * np.exp(log_cv), rel=1e-12)
    box = model.range_columns
    assert list(out_of_range) == list(((X[:, box] < model.low[box]) | (X[:, box] > model.high[box])).any(axis=1))
    assert list(out_of_range) == [False, False, True]  # 64k rows and fp8 were never measured


def test_calibration_recovers_the_cost_of_a_wave_of_blocks():
    """Latencies made by t0 + u w + max(c, m) + s min(c, m) give back (t0, e_c, e_m, s, u);
    work without waves of blocks (every family but attention) fits u = 0."""
    rng = np.random.default_rng(0)
    work = np.column_stack([rng.uniform(1, 500, 400), rng.uniform(1, 500, 400), rng.uniform(0, 60, 400)])
    truth = np.array([9.0, 0.5, 0.8, 0.3, 1.5])
    assert calibrate(work, calibrated_roofline(truth, work)) == pytest.approx(truth, rel=1e-3)
    flat = work * [1, 1, 0]
    fitted = calibrate(flat, calibrated_roofline(truth, flat))
    assert fitted[4] == 0 and fitted[:4] == pytest.approx(truth[:4], rel=1e-3)


def test_held_out_accuracy_on_unseen_shapes(profiles):
    report = evaluate(profiles, split="grouped", seed=0, settings=SMALL)
    # the fixture's law: fixed cost + work at fixed efficiencies, 2% noise
    assert report["gemm"]["within_10pct"] >= 0.9 and report["gemm"]["median_ape"] <= 0.04
    assert report["attention_decode"]["within_10pct"] >= 0.9
    assert all(r["n_test"] > 0 and r["n_train"] > r["n_test"] for r in report.values())


def test_grouped_split_holds_out_whole_interior_groups(profiles):
    table = profiles.tables["gemm"]
    held = held_out_mask("gemm", table, "grouped", seed=3)
    sites = set(zip(table["n"][held], table["k"][held], strict=True))
    kept = set(zip(table["n"][~held], table["k"][~held], strict=True))
    assert sites and not sites & kept
    for n, k in sites:  # never the edges of the measured range
        assert table["n"].min() < n < table["n"].max() and table["k"].min() < k < table["k"].max()


@pytest.mark.parametrize("seed", range(6))
def test_spaced_split_never_holds_out_two_neighbouring_token_counts(seed):
    """14 token counts on a doubling grid, as the wide-EP tables: ``spaced`` holds out as many
    interior counts as ``grouped``, each with both measured neighbours left in training."""
    counts = [2.0**i for i in range(14)]
    table = pd.DataFrame({"num_tokens": [c for c in counts for _ in range(3)]})
    grouped = held_out_mask("moe_wideep_decode", table, "grouped", seed)
    spaced = held_out_mask("moe_wideep_decode", table, "spaced", seed)
    held = sorted(set(table["num_tokens"][spaced]))
    assert len(held) == len(set(table["num_tokens"][grouped])) == 3
    positions = [counts.index(c) for c in held]
    assert all(0 < p < len(counts) - 1 for p in positions)  # never an edge
    assert (np.diff(positions) > 1).all()  # never neighbours
    assert spaced.sum() == 3 * len(held)  # whole groups


def test_cost_model_memo_and_protocol(fitted):
    model = FittedCostModel(fitted)
    assert isinstance(model, CostModel)
    query = {"m": [64, 64, 4096], "n": [4096] * 3, "k": [4096] * 3, "dtype": ["bf16"] * 3}
    first = model.predict("gemm", query)
    assert first.source == "rf" and len(first.latency_us) == 3 and first.latency_us[0] == first.latency_us[1]
    assert first.latency_us[2] > first.latency_us[0] and (first.std_us > 0).all()  # the fixture has a spread
    assert len(model._memo["gemm"]) == 2
    again = model.predict("gemm", {c: v[::-1] for c, v in query.items()})
    assert np.array_equal(again.latency_us, first.latency_us[::-1])
    direct = fitted.models["gemm"].predict(query, fitted.hardware_config)[0]
    assert np.allclose(first.latency_us, direct)


def test_predict_without_the_memo_prices_the_same_and_keeps_none(fitted):
    """``memo=False`` (a caller with a memo of its own): the memoised prices, nothing memoised."""
    model, plain = FittedCostModel(fitted), FittedCostModel(fitted)
    query = {"m": [64, 512, 4096], "n": [4096] * 3, "k": [4096] * 3, "dtype": ["bf16"] * 3}
    fresh = model.predict("gemm", query, memo=False)
    assert "gemm" not in model._memo or not model._memo["gemm"]
    assert np.array_equal(fresh.latency_us, plain.predict("gemm", query).latency_us)
    assert model.takes_memo and PerGpuCostModel(model, {}).predict("gemm", query, memo=False).source == "rf"


def test_out_of_range_is_detected_counted_and_extrapolated(fitted):
    model = FittedCostModel(fitted)
    inside = model.predict("gemm", {"m": [512], "n": [4096], "k": [4096], "dtype": ["bf16"]})
    beyond = model.predict("gemm", {"m": [65536], "n": [4096], "k": [4096], "dtype": ["bf16"]})
    unknown = model.predict("gemm", {"m": [512], "n": [4096], "k": [4096], "dtype": ["fp8"]})
    assert not inside.out_of_range[0] and beyond.out_of_range[0] and unknown.out_of_range[0]
    assert model.out_of_range_count == 2
    # 8x the rows of the largest measured GEMM: the calibrated roofline carries the estimate
    largest = model.predict("gemm", {"m": [8192], "n": [4096], "k": [4096], "dtype": ["bf16"]}).latency_us[0]
    assert 6 < beyond.latency_us[0] / largest < 10


def test_roofline_fallback_says_so(fitted):
    model = FittedCostModel(fitted)
    p = model.predict("elementwise", {"op": ["rmsnorm"], "num_tokens": [128], "hidden": [4096], "dtype": ["bf16"]})
    assert p.source == "roofline" and "no elementwise profile" in p.extra["reason"] and p.latency_us[0] > 0


def test_jitter_samples_around_the_median(fitted):
    query = {"m": [2048] * 400, "n": [4096] * 400, "k": [4096] * 400, "dtype": ["bf16"] * 400}
    median = FittedCostModel(fitted).predict("gemm", query)
    sampled = FittedCostModel(fitted, jitter=True, seed=1).predict("gemm", query)
    assert np.std(sampled.latency_us) > 0
    assert np.median(sampled.latency_us) == pytest.approx(median.latency_us[0], rel=0.01)
    assert np.std(sampled.latency_us) == pytest.approx(median.std_us[0], rel=0.3)


def test_ragged_queries_and_spread_free_families(fitted, profiles):
    model = FittedCostModel(fitted)
    table = profiles.tables["attention_decode"].iloc[:5]
    p = model.predict("attention_decode", table_query("attention_decode", table))
    assert np.all(np.abs(p.latency_us / table["latency_us"].to_numpy() - 1) < 0.15)
    assert (p.std_us == 0).all()  # the fixture's decode rows carry no spread


def test_fit_needs_rows(profiles):
    from frontier_dag.errors import PredictorError

    with pytest.raises(PredictorError, match="at least 2"):
        fit_family("gemm", profiles.tables["gemm"].iloc[:1], load_hardware("h200_sxm"), SMALL)


def test_a_timing_spike_does_not_move_a_noisy_leaf():
    import pandas as pd

    # each GEMM shape timed 5 times with a 5% spread, one of them a 3x spike (as in some public sets)
    rng = np.random.default_rng(0)
    shapes = [(m, n, 1024) for m in (64, 128, 256, 512) for n in (1024, 2048, 4096)]
    rows = [(m, n, k, t) for m, n, k in shapes for t in 2e-3 * m * n / 1024 * rng.normal(1, 0.01, 5)]
    table = pd.DataFrame(rows, columns=["m", "n", "k", "latency_us"]).assign(dtype="bf16")
    table.loc[table.index[::5], "latency_us"] *= 3  # the first timing of every shape
    table["latency_std_us"], table["repeats"] = 0.05 * table["latency_us"], 5
    h200 = load_hardware("h200_sxm")
    model = fit_family("gemm", table, h200, FitSettings(n_estimators=8), n_jobs=1)
    assert model.info["spike"] == 0.2 and model.info["min_samples_leaf"] == 5
    typical = table.groupby(["m", "n"])["latency_us"].transform("median").to_numpy()
    predicted = model.predict(table_query("gemm", table), h200)[0]
    assert np.median(np.abs(predicted / typical - 1)) < 0.05
    plain = fit_family("gemm", table, h200, FitSettings(n_estimators=8, noisy_spike=None), n_jobs=1)
    assert np.median(np.abs(plain.predict(table_query("gemm", table), h200)[0] / typical - 1)) > 0.1
