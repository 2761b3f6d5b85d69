"""Readers for request traces, each returning the same columnar ``Trace``.

Formats:

- splitwise / Vidur CSV: ``arrived_at`` (seconds, optional), ``num_prefill_tokens``,
  ``num_decode_tokens``;
- Azure LLM inference CSV: ``TIMESTAMP`` (a datetime), ``ContextTokens``,
  ``GeneratedTokens``;
- Mooncake JSONL: one object a line with ``timestamp`` (ms), ``input_length``,
  ``output_length`` and ``hash_ids`` (one id per block of prompt tokens; requests that
  share leading ids share that prefix).

Every problem with a file is a ConfigError naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frontier_dag.errors import ConfigError

FORMATS = ("splitwise", "azure", "mooncake")
SPLITWISE_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(frozen=True)
class Trace:
    """A trace's rows as arrays, sorted by arrival time when it has one.

    ``arrival_s`` is seconds since the earliest row, or None when the file has no arrival
    times. Token counts are int64 >= 0. Block hashes are CSR: row ``i``'s ids are
    ``hash_values[hash_offsets[i]:hash_offsets[i + 1]]``, each covering ``block_tokens``
    prompt tokens (empty for formats without prefixes).
    """

    path: Path
    arrival_s: np.ndarray | None
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    hash_offsets: np.ndarray
    hash_values: np.ndarray
    block_tokens: int

    def __len__(self) -> int:
        return len(self.prompt_tokens)


def read_trace(path: Path, fmt: str = "auto", block_tokens: int = 512) -> Trace:
    """Read a trace file; ``fmt`` is one of FORMATS or ``auto`` (by extension, then columns)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such trace file; check workload.trace.path "
            "(use ${FRONTIER_DAG_DATA}/... for the public traces)"
        )
    if fmt == "mooncake" or (fmt == "auto" and path.suffix.lower() in (".jsonl", ".json")):
        return read_mooncake(path, block_tokens)
    frame = _read_csv(path)
    if fmt == "auto":
        fmt = detect_csv_format(path, frame.columns)
    if fmt == "azure":
        return _azure_from_frame(path, frame)
    if fmt == "splitwise":
        return _splitwise_from_frame(path, frame)
    raise ConfigError(f"{path}: unknown trace format {fmt!r}; use auto, {', '.join(FORMATS)}")


def detect_csv_format(path: Path, columns) -> str:
    """``azure`` or ``splitwise`` by the header, or a ConfigError listing both headers."""
    columns = set(columns)
    if {"ContextTokens", "GeneratedTokens"} <= columns:
        return "azure"
    if {"num_prefill_tokens", "num_decode_tokens"} <= columns:
        return "splitwise"
    raise ConfigError(
        f"{path}: cannot tell the trace format from its columns {sorted(columns)}; expected "
        f"Azure ({', '.join(AZURE_COLUMNS)}) or splitwise ({', '.join(SPLITWISE_COLUMNS)}); "
        "rename the columns or set workload.trace.format"
    )


def read_splitwise(path: Path) -> Trace:
    """A splitwise/Vidur CSV; ``arrived_at`` may be absent (lengths-only traces)."""
    return _splitwise_from_frame(Path(path), _read_csv(Path(path)))


def read_azure(path: Path) -> Trace:
    """An Azure LLM inference trace CSV."""
    return _azure_from_frame(Path(path), _read_csv(Path(path)))


def read_mooncake(path: Path, block_tokens: int = 512) -> Trace:
    """A Mooncake JSONL trace; each hash id covers ``block_tokens`` prompt tokens."""
    path = Path(path)
    arrival_ms, prompt, output, counts, values = [], [], [], [], []
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not valid JSON ({exc.msg}); fix or delete the line") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{where}: expected a JSON object per line")
            arrival_ms.append(_number(record, "timestamp", where))
            if arrival_ms[-1] < 0:
                raise ConfigError(f"{where}: timestamp = {arrival_ms[-1]!r} is not a time >= 0 (milliseconds from "
                                  "the trace's start); fix or delete the line")
            prompt.append(_count(record, "input_length", where))
            output.append(_count(record, "output_length", where))
            ids = record.get("hash_ids", [])
            if not isinstance(ids, list) or not all(_is_int(i) for i in ids):
                raise ConfigError(f"{where}: hash_ids must be a list of integers")
            if len(ids) > math.ceil(prompt[-1] / block_tokens):
                raise ConfigError(
                    f"{where}: {len(ids)} hash_ids of {block_tokens} tokens each exceed "
                    f"input_length={prompt[-1]}; set workload.trace.block_tokens to the "
                    "trace's block size"
                )
            counts.append(len(ids))
            values.extend(ids)
    if not prompt:
        raise ConfigError(f"{path}: the trace has no rows")
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    return _sorted(Trace(
        path=path,
        arrival_s=np.asarray(arrival_ms, dtype=np.float64) / 1000.0,
        prompt_tokens=np.asarray(prompt, dtype=np.int64),
        output_tokens=np.asarray(output, dtype=np.int64),
        hash_offsets=offsets,
        hash_values=np.asarray(values, dtype=np.int64),
        block_tokens=block_tokens,
    ))


def take_blocks(
    offsets: np.ndarray, values: np.ndarray, rows: np.ndarray, max_blocks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gather CSR rows ``rows`` (any order, repeats allowed), keeping at most
    ``max_blocks[k]`` leading ids of the k-th gathered row. Returns (offsets, values)."""
    rows = np.asarray(rows, dtype=np.int64)
    counts = offsets[rows + 1] - offsets[rows]
    if max_blocks is not None:
        counts = np.minimum(counts, max_blocks)
    new_offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    # Each kept id's source index is its row's start plus its position within the row.
    shift = np.repeat(offsets[rows] - new_offsets[:-1], counts)
    return new_offsets, values[np.arange(new_offsets[-1], dtype=np.int64) + shift]


@dataclass(frozen=True)
class _Csv:
    """A CSV file's cells as text, by column (the reader needs no more than this, and
    pandas would cost a run more memory and start-up than the whole simulation)."""

    columns: list[str]
    cells: dict[str, list[str]]
    lines: list[int]  # each row's line in the file (blank lines are skipped)

    def __len__(self) -> int:
        return len(self.cells[self.columns[0]])


def _read_csv(path: Path) -> _Csv:
    rows, lines = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            for row in reader:
                if row:
                    rows.append(row)
                    lines.append(reader.line_num)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable CSV trace ({exc}); fix the file") from None
    if not rows:
        raise ConfigError(f"{path}: not a readable CSV trace (no header); fix the file")
    columns = [c.strip() for c in rows[0]]
    for number, row in zip(lines[1:], rows[1:], strict=True):
        if len(row) != len(columns):
            raise ConfigError(f"{path}: line {number} has {len(row)} fields where the header has {len(columns)}; "
                              "fix or delete the row")
    if len(rows) == 1:
        raise ConfigError(f"{path}: the trace has a header but no rows")
    return _Csv(columns, {c: list(cells) for c, cells in zip(columns, zip(*rows[1:], strict=True), strict=True)}, lines[1:])


def _splitwise_from_frame(path: Path, frame: _Csv) -> Trace:
    _require(path, frame, SPLITWISE_COLUMNS[1:], "splitwise", SPLITWISE_COLUMNS)
    arrival = None
    if "arrived_at" in frame.columns:
        arrival = _float_column(path, frame, "arrived_at")
        # a negative time would move every other request by as much: it is a broken row, not an offset
        _first_bad(path, frame, "arrived_at", arrival < 0, "a time >= 0 (seconds from the trace's start)")
        arrival = arrival - arrival.min()
    return _csv_trace(path, frame, arrival, "num_prefill_tokens", "num_decode_tokens")


def _azure_from_frame(path: Path, frame: _Csv) -> Trace:
    _require(path, frame, AZURE_COLUMNS, "Azure", AZURE_COLUMNS)
    stamps = np.array([_datetime(text) for text in frame.cells["TIMESTAMP"]], dtype="datetime64[ns]")
    _first_bad(path, frame, "TIMESTAMP", np.isnat(stamps), "a date and time")
    # nanoseconds over 1e9, as a timedelta's total_seconds divides them
    arrival = (stamps - stamps.min()).astype(np.int64) / 1e9
    return _csv_trace(path, frame, arrival, "ContextTokens", "GeneratedTokens")


def _datetime(text: str) -> np.datetime64:
    try:
        return np.datetime64(text.strip(), "ns")
    except ValueError:
        return np.datetime64("NaT")


def _csv_trace(path, frame, arrival, prompt_column, output_column) -> Trace:
    n = len(frame)
    return _sorted(Trace(
        path=path,
        arrival_s=arrival,
        prompt_tokens=_count_column(path, frame, prompt_column),
        output_tokens=_count_column(path, frame, output_column),
        hash_offsets=np.zeros(n + 1, dtype=np.int64),
        hash_values=np.zeros(0, dtype=np.int64),
        block_tokens=0,
    ))


def _sorted(trace: Trace) -> Trace:
    """The trace with rows in arrival order (stable), so replay yields sorted arrivals."""
    if trace.arrival_s is None or np.all(np.diff(trace.arrival_s) >= 0):
        return trace
    order = np.argsort(trace.arrival_s, kind="stable")
    offsets, values = take_blocks(trace.hash_offsets, trace.hash_values, order)
    return Trace(trace.path, trace.arrival_s[order], trace.prompt_tokens[order],
                 trace.output_tokens[order], offsets, values, trace.block_tokens)


def _require(path, frame, needed, name, header) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{path}: no column {', '.join(missing)} (columns: {', '.join(frame.columns)}); "
            f"a {name} trace has the header {','.join(header)}"
        )


def _first_bad(path, frame: _Csv, column, bad: np.ndarray, expected: str) -> None:
    if bad.any():
        row = int(np.argmax(bad))
        text = frame.cells[column][row].strip()
        shown = text if math.isfinite(_number_or_nan(text)) else repr(text)
        raise ConfigError(f"{path}: line {frame.lines[row]}, column {column}: {shown} is not {expected}; "
                          "fix or delete the row")


def _number_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _float_column(path, frame: _Csv, column) -> np.ndarray:
    values = np.array([_number_or_nan(text) for text in frame.cells[column]], dtype=np.float64)
    _first_bad(path, frame, column, ~np.isfinite(values), "a number")
    return values


def _count_column(path, frame: _Csv, column) -> np.ndarray:
    values = np.array([_number_or_nan(text) for text in frame.cells[column]], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values))
    _first_bad(path, frame, column, bad, "a token count (an integer >= 0)")
    return values.astype(np.int64)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(record: dict, key: str, where: str):
    if key not in record:
        raise ConfigError(f"{where}: no key {key!r}; a Mooncake line has timestamp, "
                          "input_length, output_length and hash_ids")
    return record[key]


def _number(record: dict, key: str, where: str) -> float:
    value = _field(record, key, where)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} = {value!r} is not a number; fix or delete the line")
    return float(value)


def _count(record: dict, key: str, where: str) -> int:
    value = _field(record, key, where)
    if not _is_int(value) or value < 0:
        raise ConfigError(
            f"{where}: {key} = {value!r} is not a token count (an integer >= 0); fix or delete the line"
        )
    return value
