"""Trace readers: each format on a fixture in its real layout, and clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frontier_dag.data import shared_data_dir
from frontier_dag.errors import ConfigError
from frontier_dag.sim.traces import (
    read_azure,
    read_mooncake,
    read_splitwise,
    read_trace,
    take_blocks,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_splitwise_fixture_matches_the_file():
    trace = read_trace(FIXTURES / "splitwise_small.csv")
    rows = [line.split(",") for line in _lines(FIXTURES / "splitwise_small.csv")[1:]]
    assert len(trace) == len(rows) == 30
    np.testing.assert_allclose(trace.arrival_s, [float(r[0]) for r in rows])
    assert trace.prompt_tokens.tolist() == [int(r[1]) for r in rows]
    assert trace.output_tokens.tolist() == [int(r[2]) for r in rows]
    assert trace.hash_offsets.tolist() == [0] * 31 and trace.block_tokens == 0


def test_azure_fixture_parses_datetimes_with_and_without_fractions():
    trace = read_trace(FIXTURES / "azure_conv.csv")
    assert len(trace) == 30
    assert trace.arrival_s[0] == 0.0
    assert trace.arrival_s[1] == pytest.approx(47.0995920 - 46.6805900, abs=1e-9)
    # Line 9 of the fixture is the whole second 18:15:48.
    assert trace.arrival_s[7] == pytest.approx(48.0 - 46.6805900, abs=1e-9)
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert trace.prompt_tokens[:2].tolist() == [1346, 2686]
    assert trace.output_tokens[:2].tolist() == [155, 50]


def test_mooncake_fixture_keeps_hash_ids_per_row():
    records = [json.loads(line) for line in _lines(FIXTURES / "mooncake.jsonl")]
    trace = read_trace(FIXTURES / "mooncake.jsonl", block_tokens=512)
    assert len(trace) == len(records) == 30
    assert trace.block_tokens == 512
    np.testing.assert_allclose(trace.arrival_s, [r["timestamp"] / 1000 for r in records])
    assert trace.prompt_tokens.tolist() == [r["input_length"] for r in records]
    for i, record in enumerate(records):
        ids = trace.hash_values[trace.hash_offsets[i] : trace.hash_offsets[i + 1]]
        assert ids.tolist() == record["hash_ids"]


def test_format_is_detected_from_columns_whatever_the_extension(tmp_path):
    text = (FIXTURES / "azure_conv.csv").read_text()
    (tmp_path / "trace.txt").write_text(text)
    assert len(read_trace(tmp_path / "trace.txt")) == 30
    forced = read_trace(FIXTURES / "splitwise_small.csv", fmt="splitwise")
    assert len(forced) == 30


def test_lengths_only_csv_has_no_arrivals(tmp_path):
    path = tmp_path / "lengths.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens,num_total_tokens\n10,2,12\n30,4,34\n")
    trace = read_splitwise(path)
    assert trace.arrival_s is None
    assert trace.prompt_tokens.tolist() == [10, 30]


def test_unsorted_rows_are_sorted_stably_with_their_hashes(tmp_path):
    path = tmp_path / "t.jsonl"
    rows = [(5, [1, 2]), (0, [3]), (5, [4]), (2, [])]
    path.write_text("".join(
        json.dumps({"timestamp": ts, "input_length": 600, "output_length": 1, "hash_ids": ids}) + "\n"
        for ts, ids in rows
    ))
    trace = read_mooncake(path)
    assert trace.arrival_s.tolist() == [0.0, 0.002, 0.005, 0.005]
    got = [trace.hash_values[a:b].tolist() for a, b in zip(trace.hash_offsets[:-1], trace.hash_offsets[1:], strict=True)]
    assert got == [[3], [], [1, 2], [4]]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(-5, 99), max_size=5), min_size=1, max_size=8),
    data=st.data(),
)
def test_take_blocks_matches_a_plain_gather(rows, data):
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    values = np.array([v for r in rows for v in r], dtype=np.int64)
    picks = data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=10))
    caps = data.draw(st.lists(st.integers(0, 6), min_size=len(picks), max_size=len(picks)))
    new_offsets, new_values = take_blocks(offsets, values, np.array(picks, dtype=np.int64), np.array(caps, dtype=np.int64))
    expected = [rows[p][:c] for p, c in zip(picks, caps, strict=True)]
    assert new_offsets.tolist() == np.concatenate([[0], np.cumsum([len(e) for e in expected])]).tolist()
    assert new_values.tolist() == [v for e in expected for v in e]


@pytest.mark.skipif(shared_data_dir() is None, reason="no shared data folder (set FRONTIER_DAG_DATA)")
def test_real_splitwise_conv_trace():
    path = shared_data_dir() / "vidur/data/processed_traces/splitwise_conv.csv"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    trace = read_trace(path)
    assert len(trace) == 19366
    assert (trace.prompt_tokens[0], trace.output_tokens[0]) == (374, 44)
    assert trace.arrival_s[1] == pytest.approx(4.314579)
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert trace.prompt_tokens.min() >= 1 and trace.output_tokens.min() >= 1


# --- errors: each names the file, the place, and a fix -----------------------------------


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        read_trace(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_file(tmp_path):
    assert "workload.trace.path" in _error(tmp_path / "nope.csv")


def test_missing_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,5\n")
    message = _error(path)
    assert "ContextTokens" in message and "workload.trace.format" in message
    with pytest.raises(ConfigError, match="no column GeneratedTokens"):
        read_azure(path)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("0.0,10,5\n1.0,ten,5\n", "line 3, column num_prefill_tokens: 'ten'"),
        ("0.0,10,5\n1.0,10,-2\n", "line 3, column num_decode_tokens"),
        ("0.0,10,5\n1.0,10.5,2\n", "line 3, column num_prefill_tokens"),
        ("0.0,10,5\nsoon,10,2\n", "line 3, column arrived_at: 'soon'"),
        ("0.0,10,5\n1.0,,2\n", "line 3, column num_prefill_tokens"),
    ],
)
def test_bad_csv_row(tmp_path, body, where):
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + body)
    message = _error(path)
    assert where in message and "fix or delete the row" in message


def test_bad_azure_timestamp(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,5,6\nyesterday,5,6\n")
    assert "line 3, column TIMESTAMP: 'yesterday'" in _error(path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"timestamp": 1, "input_length": 5', "line 2: not valid JSON"),
        ('{"timestamp": 1, "output_length": 5, "hash_ids": []}', "line 2: no key 'input_length'"),
        ('{"timestamp": "x", "input_length": 5, "output_length": 5}', "line 2: timestamp = 'x'"),
        ('{"timestamp": 1, "input_length": 5, "output_length": 1.5}', "line 2: output_length = 1.5"),
        ('{"timestamp": 1, "input_length": 5, "output_length": 5, "hash_ids": ["a"]}', "line 2: hash_ids"),
        ('{"timestamp": 1, "input_length": 600, "output_length": 5, "hash_ids": [1, 2, 3]}', "block_tokens"),
        ("[1, 2]", "line 2: expected a JSON object"),
    ],
)
def test_bad_mooncake_line(tmp_path, line, expected):
    path = tmp_path / "t.jsonl"
    good = '{"timestamp": 0, "input_length": 5, "output_length": 5, "hash_ids": [0]}'
    path.write_text(good + "\n" + line + "\n")
    assert expected in _error(path)


def test_unknown_columns_and_empty_files(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    assert "cannot tell the trace format" in _error(path)
    path.write_text("")
    assert "not a readable CSV" in _error(path)
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n")
    assert "no rows" in _error(path)
    empty = tmp_path / "t.jsonl"
    empty.write_text("\n")
    assert "no rows" in _error(empty)


@pytest.mark.parametrize(("name", "text", "where"), [
    ("bad.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,2\n-1e9,10,2\n1.0,10,2\n",
     "line 3, column arrived_at: -1e9 is not a time >= 0"),
    ("bad.jsonl", '{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": []}\n'
                  '{"timestamp": -5, "input_length": 10, "output_length": 2, "hash_ids": []}\n',
     "line 2: timestamp = -5.0 is not a time >= 0"),
])
def test_a_negative_arrival_time_is_an_error_naming_the_row(tmp_path, name, text, where):
    """One broken row would otherwise move every other request by as much."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=where):
        read_trace(path)


def test_a_row_with_more_or_fewer_fields_than_the_header_is_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n\n1.0,10\n")
    assert "line 4 has 2 fields where the header has 3" in _error(path)
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n\n1.0,ten,2\n")
    assert "line 4, column num_prefill_tokens: 'ten'" in _error(path)  # lines of the file, blank ones counted
