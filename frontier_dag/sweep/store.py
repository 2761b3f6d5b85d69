"""A sweep directory:

    DIR/sweep.yaml          the sweep, base config inlined (rewritten by --resume)
    DIR/points/ID.json      one record per finished point, written atomically
    DIR/results.parquet     every record in one table, rewritten (atomically) as points finish

The per-point files are the truth: a sweep killed at any moment loses at most the points
that were running, and ``--resume`` reads them back. ``results.parquet`` is rebuilt from
them. A directory holding anything else is never written into.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from frontier_dag.errors import FrontierDagError

SWEEP_FILES = ("sweep.yaml", "points", "results.parquet")
#: Columns every record has, in this order, before its axes and its summary.
META_COLUMNS = ("point_id", "status", "reason", "strategy", "workflow", "gpus", "wall_s", "cpu_s")


def prepare(out: Path, resume: bool) -> None:
    """Check that ``out`` may hold this sweep: new or empty, or (with ``resume``) a sweep's."""
    if out.exists() and not out.is_dir():
        raise FrontierDagError(f"--out {out} is a file; give a directory for the sweep")
    if not out.exists() or not any(out.iterdir()):
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in SWEEP_FILES and not p.name.startswith(".tmp"))
    if foreign:
        raise FrontierDagError(f"--out {out} holds files that are not a sweep's ({', '.join(foreign[:3])}); "
                               "choose an empty or new directory")
    if not resume:
        raise FrontierDagError(f"--out {out} already holds a sweep; pass --resume to continue it, "
                               "or choose another directory")


def write_spec(out: Path, spec: dict[str, Any]) -> None:
    _atomic_write(out / "sweep.yaml", yaml.safe_dump(spec, sort_keys=False).encode())


def read_spec(out: Path) -> dict[str, Any]:
    path = out / "sweep.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def write_record(out: Path, record: dict[str, Any]) -> None:
    folder = out / "points"
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / f"{record['point_id']}.json", json.dumps(record, default=_json_default).encode())


def read_records(out: Path) -> dict[str, dict[str, Any]]:
    """Every point recorded in ``out``, by point id (partial writes never count)."""
    records = {}
    for path in sorted((out / "points").glob("*.json")):
        if path.name.startswith(".tmp"):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        records[record["point_id"]] = record
    return records


def write_results(out: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    target = out / "results.parquet"
    frame = to_frame(records)
    handle, temporary = tempfile.mkstemp(dir=out, prefix=".tmp", suffix=".parquet")
    os.close(handle)
    try:
        frame.to_parquet(temporary, index=False)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def load_results(out: Path) -> pd.DataFrame:
    """A sweep's table: from its point records when there are any, else results.parquet."""
    out = Path(out)
    if out.is_file():
        return pd.read_parquet(out)
    records = read_records(out)
    if records:
        return to_frame(records.values())
    if (out / "results.parquet").is_file():
        return pd.read_parquet(out / "results.parquet")
    raise FrontierDagError(f"{out}: no sweep results (no points/*.json or results.parquet); "
                           "run frontier-dag sweep SWEEP.yaml --out DIR first")


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"ttft_ms": {"p90": 1.0}}`` -> ``{"ttft_ms.p90": 1.0}``."""
    flat = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            flat.update(flatten(item, f"{name}."))
        else:
            flat[name] = item
    return flat


def cell(value: Any) -> Any:
    """An axis value as a table cell: scalars as they are, mappings and lists as JSON."""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def to_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    # in point order, so that the columns (first seen first) do not depend on which point finished first
    rows = sorted(records, key=lambda r: r["point_id"])
    frame = pd.DataFrame.from_records(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(META_COLUMNS))
    first = [c for c in META_COLUMNS if c in frame.columns]
    axes = sorted((c for c in frame.columns if c.startswith("axis.")), key=lambda c: _first_seen(rows, c))
    rest = [c for c in frame.columns if c not in first and c not in axes and c != "config"]
    frame = frame[first + axes + rest + (["config"] if "config" in frame.columns else [])]
    for column in frame.columns:
        if frame[column].dtype == object:
            kinds = {type(v) for v in frame[column] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1 and not kinds <= {int, float}:
                frame[column] = [None if v is None else str(v) for v in frame[column]]
    return frame.sort_values("point_id", kind="stable").reset_index(drop=True)


def _first_seen(rows: list[Mapping[str, Any]], column: str) -> int:
    for row in rows:
        if column in row:
            return list(row).index(column)
    return 0


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp", suffix=path.suffix)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    return str(value)

