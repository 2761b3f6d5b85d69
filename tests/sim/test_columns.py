"""Result tables as numpy columns: the DataFrame and the Arrow table they convert to are
what pandas would have built and written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from frontier_dag.sim.columns import Categories, Columns


def _table(categories: tuple[str, ...] = ("prefill", "decode")) -> Columns:
    rng = np.random.default_rng(0)
    n = 7
    floats = rng.uniform(size=n)
    floats[[1, 4]] = np.nan
    return Columns({
        "request_id": np.arange(n),
        "arrival_s": floats,
        "kv_usage": rng.uniform(size=n).astype(np.float32),
        "preemptions": np.zeros(n, dtype=np.int32),
        "kind": np.arange(n, dtype=np.int16),
        "pool": Categories(np.array([0, 1, -1, 1, 0, 0, 1], dtype=np.int16), categories),
    })


def test_frame_has_the_columns_and_dtypes():
    table = _table()
    frame = table.to_frame()
    assert list(frame.columns) == table.columns and len(frame) == len(table) == 7
    assert frame["preemptions"].dtype == np.int32 and frame["kv_usage"].dtype == np.float32
    assert frame["pool"].tolist()[:2] == ["prefill", "decode"] and pd.isna(frame["pool"].iloc[2])
    assert table["pool"].labels().tolist()[:3] == ["prefill", "decode", None]


@pytest.mark.parametrize("categories", [("prefill", "decode"), tuple(f"pool{i}" for i in range(200)), ()])
def test_arrow_table_is_what_pandas_writes(categories):
    """Schema, metadata (the pandas block, byte for byte) and values, NaN written as null;
    200 categories take int16 codes; no categories (no request entered a pool) goes through pandas."""
    table = _table(categories) if categories else Columns({"pool": Categories(np.full(3, -1, np.int16), ())})
    ours = table.to_arrow()
    theirs = pa.Table.from_pandas(table.to_frame(), preserve_index=False)
    assert ours.schema.equals(theirs.schema, check_metadata=True)
    assert ours.equals(theirs, check_metadata=True)
    pd.testing.assert_frame_equal(ours.to_pandas(), table.to_frame())


def test_columns_must_agree_in_length():
    with pytest.raises(ValueError, match="different lengths"):
        Columns({"a": np.zeros(2), "b": np.zeros(3)})


@pytest.mark.parametrize("categories", [("prefill", "decode"), tuple(f"pool{i}" for i in range(200)), ()])
def test_a_table_is_written_as_write_table_writes_it(categories, tmp_path, monkeypatch):
    """run_dir.write_parquet skips pyarrow.parquet's import but not a byte of its file; with a
    pyarrow whose writer takes other options, write_table itself writes."""
    import pyarrow.parquet as pq

    from frontier_dag.sim import run_dir

    table = (_table(categories) if categories else Columns({"pool": Categories(np.full(3, -1, np.int16), ())})).to_arrow()
    pq.write_table(table, tmp_path / "theirs.parquet")
    run_dir.write_parquet(table, tmp_path / "ours.parquet")
    assert (tmp_path / "ours.parquet").read_bytes() == (tmp_path / "theirs.parquet").read_bytes()
    monkeypatch.setitem(run_dir._WRITER_OPTIONS, "no_such_option", 1)
    run_dir.write_parquet(table, tmp_path / "fallback.parquet")
    assert (tmp_path / "fallback.parquet").read_bytes() == (tmp_path / "theirs.parquet").read_bytes()
