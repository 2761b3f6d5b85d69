"""The fitted cost model at run time: mixed batches without mixed profiles, the families
it declares measured, what out of range means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from predictor_profiles import H200, SETTINGS, profile

from frontier_dag.predictors.fitted_set import FittedSet
from frontier_dag.predictors.fitting import fit_family
from frontier_dag.predictors.model import FittedCostModel


@pytest.fixture(scope="module")
def uniform_attention():
    """Prefill and decode models, no mixed one (as aiconfigurator's tables)."""
    rng = np.random.default_rng(7)
    models = {f: fit_family(f, profile(f, rng), H200, SETTINGS, n_jobs=1)
              for f in ("attention_prefill", "attention_decode")}
    return FittedSet(H200.name, "synthetic", "0", SETTINGS, models)


def attention_rows(q_lens, ctx_lens):
    n = len(q_lens)
    return {"num_heads": [32] * n, "num_kv_heads": [8] * n, "head_dim": [128] * n, "dtype": ["bf16"] * n,
            "kv_dtype": ["bf16"] * n, "q_lens": [np.array(q) for q in q_lens],
            "ctx_lens": [np.array(c) for c in ctx_lens]}


def test_a_mixed_batch_is_its_prefill_part_plus_its_decode_part(uniform_attention):
    model = FittedCostModel(uniform_attention)
    assert model.measured_families == {"attention_prefill", "attention_decode"}  # the simulator splits itself
    mixed = attention_rows([[512, 1, 1, 1], [300, 200], [1, 1]], [[1000, 50, 900, 4000], [0, 64], [10, 20]])
    got = model.predict("attention_mixed", mixed)
    assert got.source == "rf-split" and got.extra["parts"] == ("attention_prefill", "attention_decode")
    prefill = model.predict("attention_prefill", attention_rows([[512], [300, 200]], [[1000], [0, 64]]))
    decode = model.predict("attention_decode", attention_rows([[1, 1, 1], [1, 1]], [[50, 900, 4000], [10, 20]]))
    assert got.latency_us[0] == prefill.latency_us[0] + decode.latency_us[0]
    assert got.latency_us[1] == prefill.latency_us[1]  # no decode sequences: the prefill part alone
    assert got.latency_us[2] == decode.latency_us[1]  # no prefill sequences: the decode part alone
    assert list(got.out_of_range) == [prefill.out_of_range[0] or decode.out_of_range[0], prefill.out_of_range[1],
                                      decode.out_of_range[1]]


def test_without_both_parts_mixed_batches_fall_back_to_the_roofline(uniform_attention):
    decode_only = FittedSet(H200.name, "synthetic", "0", SETTINGS,
                            {"attention_decode": uniform_attention.models["attention_decode"]})
    got = FittedCostModel(decode_only).predict("attention_mixed", attention_rows([[512, 1]], [[0, 100]]))
    assert got.source == "roofline" and "no attention_mixed profile" in got.extra["reason"]


def uniform_decode_profile() -> pd.DataFrame:
    """Decode batches as aiconfigurator measures them: every sequence at the same context."""
    rows = [(n, ctx) for n in (1, 2, 4, 8, 16, 32, 64) for ctx in (128, 512, 2048, 8192)]
    frame = pd.DataFrame(attention_rows([[1] * n for n, _ in rows], [[ctx] * n for n, ctx in rows]))
    frame["latency_us"] = [5.0 + n * ctx / 4000 for n, ctx in rows]
    frame["latency_std_us"], frame["repeats"] = 0.0, 5
    return frame


def test_out_of_range_means_a_size_outside_the_measured_ones():
    decode = fit_family("attention_decode", uniform_decode_profile(), H200, SETTINGS, n_jobs=1)
    model = FittedCostModel(FittedSet(H200.name, "uniform", "0", SETTINGS, {"attention_decode": decode}))
    rng = np.random.default_rng(0)
    spread = model.predict("attention_decode", attention_rows([[1] * 32], [rng.integers(128, 8192, 32)]))
    assert not spread.out_of_range[0]  # lengths unlike each other, but every size was measured
    beyond = model.predict("attention_decode", attention_rows([[1] * 4, [1] * 100], [[512, 512, 512, 20000], [512] * 100]))
    assert beyond.out_of_range.all()  # a context longer than measured; more sequences than measured
    fp8 = model.predict("attention_decode", {**attention_rows([[1] * 4], [[512] * 4]), "kv_dtype": ["fp8"]})
    assert fp8.out_of_range[0]  # a KV dtype never measured
    assert model.out_of_range_count == 3


def test_the_direct_attention_pricer_gives_what_predict_gives(uniform_attention):
    """The simulator's memo misses call ragged_pricer on flat arrays: the same latencies and
    out-of-range flags as predict, bit for bit, with the same out-of-range count."""
    constants = {"num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "dtype": "bf16", "kv_dtype": "bf16"}
    for family, q_lens, ctx_lens in (
            ("attention_decode", [[1] * 3, [1] * 5, [1]], [[50, 900, 40_000], [10, 20, 30, 40, 50], [7]]),
            ("attention_prefill", [[512], [300, 200]], [[1000], [0, 64]])):
        reference, direct = FittedCostModel(uniform_attention), FittedCostModel(uniform_attention)
        want = reference.predict(family, attention_rows(q_lens, ctx_lens))
        price = direct.ragged_pricer(family, constants)
        latency, out_of_range = price(np.concatenate(q_lens).astype(float), np.concatenate(ctx_lens).astype(float),
                                      np.array([len(q) for q in q_lens], dtype=np.int64))
        assert np.array_equal(latency, want.latency_us) and np.array_equal(out_of_range, want.out_of_range)
        assert direct.out_of_range_count == reference.out_of_range_count
        if family == "attention_decode":  # 40,000 cached tokens: beyond the fitted contexts
            assert out_of_range[0] and direct.out_of_range_count >= 1
    assert FittedCostModel(uniform_attention, jitter=True).ragged_pricer("attention_decode", constants) is None
    assert FittedCostModel(uniform_attention).ragged_pricer("gemm", constants) is None


def test_the_direct_pricer_matches_the_array_path_on_random_batches(uniform_attention):
    """The direct pricer's lists hold the array path's numbers (``CompiledFamily.attention_pricer``
    and ``predict``) bit for bit, on random batches of 1 to 40 rows, some beyond the fitted
    range and some without sequences, and count the same out-of-range rows."""
    constants = {"num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "dtype": "bf16", "kv_dtype": "bf16"}
    rng = np.random.default_rng(7)
    for family in ("attention_decode", "attention_prefill"):
        direct, reference = FittedCostModel(uniform_attention), FittedCostModel(uniform_attention)
        price = direct.ragged_pricer(family, constants)
        arrays = reference._compiled_family(family).attention_pricer(constants)
        for _ in range(60):
            rows = int(rng.integers(1, 41))
            lengths = rng.integers(0 if rows > 1 else 1, 70, rows)
            n = int(lengths.sum())
            new = np.ones(n) if family == "attention_decode" else rng.integers(1, 600, n).astype(float)
            ctx = rng.integers(0, 60_000, n).astype(float)  # some beyond the fitted contexts
            latency, flags = price(new, ctx, lengths.astype(np.int64))
            want, want_flags = arrays(new, ctx, lengths.astype(np.int64))
            assert type(latency) is list and type(flags) is list and all(type(f) is bool for f in flags)
            assert np.array_equal(np.array(latency), want) and flags == want_flags.tolist()
            split = np.split(np.arange(n), np.cumsum(lengths)[:-1])
            query = attention_rows([new[i] for i in split], [ctx[i] for i in split])
            assert np.array_equal(np.array(latency), reference.predict(family, query).latency_us)
        assert direct.out_of_range_count == reference.out_of_range_count > 0


def test_constant_columns_empty_rows_and_uneven_lengths(uniform_attention):
    """Columns given once for every row price as per-row ones; a row without sequences costs
    nothing; q_lens and ctx_lens of different lengths are an error."""
    model = FittedCostModel(uniform_attention)
    rows = attention_rows([[1] * 3, [1] * 5, [1]], [[50, 900, 4000], [10, 20, 30, 40, 50], [7]])
    per_row = model.predict("attention_decode", rows).latency_us
    alone = [model.predict("attention_decode", {c: v[i:i + 1] for c, v in rows.items()}).latency_us[0]
             for i in range(3)]
    assert list(per_row) == alone  # a row's price does not depend on its batch
    empty = {**rows, "q_lens": [*rows["q_lens"][:2], np.zeros(0, dtype=np.int64)],
             "ctx_lens": [*rows["ctx_lens"][:2], np.zeros(0, dtype=np.int64)]}
    got = model.predict("attention_decode", empty)
    assert list(got.latency_us[:2]) == list(per_row[:2]) and got.latency_us[2] == 0 and not got.out_of_range[2]
    with pytest.raises(ValueError, match="differ in length"):
        model.predict("attention_decode", {**rows, "ctx_lens": [c[:-1] for c in rows["ctx_lens"]]})
