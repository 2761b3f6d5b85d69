"""The profile directory round trip and its errors; synthetic routing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from frontier_dag.errors import PredictorError
from frontier_dag.predictors.schema import read_profile_dir, write_meta, write_profile
from frontier_dag.predictors.synthetic_routing import (
    balanced_expert_tokens,
    expert_tokens_from_stats,
    power_law_expert_tokens,
)


def decode_rows():
    return pd.DataFrame({"num_heads": [32, 32], "num_kv_heads": [8, 8], "head_dim": [128, 128], "dtype": ["bf16"] * 2,
                         "kv_dtype": ["fp8"] * 2, "q_lens": [[1, 1], [1]], "ctx_lens": [[5, 900], [17]],
                         "latency_us": [11.5, 9.25], "latency_std_us": [0.2, 0.1], "repeats": [20, 20],
                         "source": ["test", "test"]})


def test_profile_dir_round_trip(tmp_path):
    write_profile(tmp_path, "attention_decode", decode_rows())
    write_meta(tmp_path, {"system": "h100_sxm", "gpu": "NVIDIA H100", "tool": "test"})
    profiles = read_profile_dir(tmp_path)
    table = profiles.tables["attention_decode"]
    assert profiles.hardware == "h100_sxm"
    assert table["ctx_lens"].iloc[0].tolist() == [5, 900] and table["ctx_lens"].iloc[0].dtype == np.int64
    assert table["latency_us"].tolist() == [11.5, 9.25] and table["source"].tolist() == ["test", "test"]
    assert len(profiles.data_hash()) == 64


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns="kv_dtype"), "lacks column"),
    (lambda f: f.assign(latency_us=[0.0, 1.0]), "latency_us must be positive"),
    (lambda f: f.assign(q_lens=[[1, -1], [1]]), "non-negative integers"),
    (lambda f: f.assign(head_dim=["x", 128]), "is not a number"),
])
def test_schema_errors_name_the_problem(tmp_path, change, message):
    with pytest.raises(PredictorError, match=message):
        write_profile(tmp_path, "attention_decode", change(decode_rows()))


def test_profile_dir_errors(tmp_path):
    with pytest.raises(PredictorError, match="no meta.yaml"):
        read_profile_dir(tmp_path)
    write_meta(tmp_path, {"system": "h100_sxm"})
    (tmp_path / "attention.parquet").write_bytes(b"")
    with pytest.raises(PredictorError, match="not an operator family"):
        read_profile_dir(tmp_path)


def test_balanced_routing_matches_the_collector_pattern():
    # 16 tokens, 128 experts, top-8: stride 16; token i takes experts i, i+16, ... -> 128 distinct experts
    assert balanced_expert_tokens(16, 128, 8, 1).tolist() == [1] * 128
    local = balanced_expert_tokens(1000, 64, 4, 4)
    assert len(local) == 16 and local.sum() == pytest.approx(1000 * 4 / 4, abs=16)


def test_power_law_routing_is_skewed_and_reproducible():
    loads = power_law_expert_tokens(4096, 128, 8, 8, 1.2)
    assert len(loads) == 16 and (np.diff(loads) <= 0).all()  # sorted, hottest first
    assert loads[0] > 2 * loads.mean()  # the measured (most loaded) rank is skewed
    assert loads.sum() > 4096 * 8 / 8  # and holds more than its even share
    assert np.array_equal(loads, power_law_expert_tokens(4096, 128, 8, 8, 1.2))


def test_loads_rebuilt_from_statistics():
    loads = expert_tokens_from_stats(16, 384, 1.0, 0.583333, 1.416667, 0.222439)
    mean = 384 / 16
    assert loads.sum() == 384 and loads.max() == round(1.416667 * mean) and loads.min() == round(0.583333 * mean)
    assert loads.std() / loads.mean() == pytest.approx(0.222439, rel=0.15)
    sparse = expert_tokens_from_stats(8, 6, 0.75, 0.0, 1.333333, 0.57735)
    assert sparse.sum() == 6 and (sparse == 0).sum() == 2
