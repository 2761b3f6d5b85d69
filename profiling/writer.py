"""The canonical profile directory (docs/profile-schema.md), written by the profilers.

    DIR/meta.yaml          the device (gpu, system, sm_count, ...), the torch and CUDA
                           versions, the dtypes, the tool, and one record per run
    DIR/<family>.parquet   the input columns of the family's queries
                           (``QUERY_COLUMNS[family]``) then latency_us (median),
                           latency_std_us, repeats, method, source; ragged columns
                           as list<int64>

A directory is written only by this tool and only for one device: rows of a later
run on the same device are appended to the family files (every measurement is a
sample), and anything else (a file this tool did not write, another device's
profile, a table with other columns) is refused with a message naming the file.
Files are replaced atomically, so an interrupted run leaves the previous ones whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from frontier_dag.cost.queries import CATEGORICAL_COLUMNS, QUERY_COLUMNS, RAGGED_COLUMNS
from frontier_dag.errors import ProfilingError

from .device import DeviceInfo

META_FILE = "meta.yaml"
TOOL = "frontier-dag profile"
SOURCE = "frontier-dag profile"
MEASUREMENT_COLUMNS = ("latency_us", "latency_std_us", "repeats", "method", "source")


def columns(family: str) -> tuple[str, ...]:
    return (*QUERY_COLUMNS[family], *MEASUREMENT_COLUMNS)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def tool_version() -> str:
    try:
        return version("frontier-dag")
    except PackageNotFoundError:
        return "unknown"


def check_writable(out: Path, info: DeviceInfo, families: Iterable[str]) -> None:
    """Raise a ProfilingError, naming the file, unless the rows of ``families`` measured on
    this device can be added to ``out``."""
    if out.exists() and not out.is_dir():
        raise ProfilingError(f"--out {out}: is a file; give a directory (it is created when missing)")
    meta_path = out / META_FILE
    if meta_path.exists():
        meta = yaml.safe_load(meta_path.read_text()) or {}
        if meta.get("tool") != TOOL:
            raise ProfilingError(f"{meta_path}: was not written by {TOOL}; refusing to change it. "
                                 "Choose another --out directory.")
        if (meta.get("device"), meta.get("gpu")) != (info.device, info.gpu):
            raise ProfilingError(
                f"{meta_path}: holds measurements of {meta.get('gpu')} ({meta.get('device')}), this run measures "
                f"{info.gpu} ({info.device}); one directory holds one device. Choose another --out directory."
            )
    for family in families:
        path = out / f"{family}.parquet"
        if not path.exists():
            continue
        if not meta_path.exists():
            raise ProfilingError(f"{path}: exists but {out} has no {META_FILE}, so it is not a profile this tool "
                                 "wrote; refusing to overwrite it. Choose another --out directory.")
        found = tuple(pq.read_schema(path).names)
        if found != columns(family):
            raise ProfilingError(f"{path}: has columns {', '.join(found)}, expected {', '.join(columns(family))}; "
                                 "refusing to mix them. Choose another --out directory.")


def write(out: Path, rows: Sequence[dict[str, Any]], info: DeviceInfo, run: dict[str, Any]) -> list[Path]:
    """Append ``rows`` (each with a ``family`` key) to ``out``'s family files and record the
    run in meta.yaml. Returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META_FILE
    if meta_path.exists():
        meta = yaml.safe_load(meta_path.read_text())
    else:
        # Claim the directory first: family files next to no meta.yaml would read as a user's files.
        meta = _new_meta(info)
        _write_meta(meta_path, meta)
    by_family: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_family.setdefault(row["family"], []).append(row)
    written = []
    for family, family_rows in by_family.items():
        path = out / f"{family}.parquet"
        table = _table(family, family_rows)
        if path.exists():
            table = pa.concat_tables([pq.read_table(path), table.cast(pq.read_schema(path))])
        _replace(path, lambda tmp, t=table: pq.write_table(t, tmp))
        written.append(path)
    meta["families"] = {f.stem: pq.read_metadata(f).num_rows for f in sorted(out.glob("*.parquet"))}
    dtypes = set(filter(None, str(meta.get("dtype") or "").split(","))) | {r["dtype"] for r in rows if "dtype" in r}
    meta["dtype"] = ",".join(sorted(dtypes)) or None
    meta["runs"] = [*meta.get("runs", []), run]
    _write_meta(meta_path, meta)
    return [*written, meta_path]


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    _replace(path, lambda tmp: Path(tmp).write_text(yaml.safe_dump(meta, sort_keys=False)))


def _new_meta(info: DeviceInfo) -> dict[str, Any]:
    fields = info.as_dict()
    return {
        "gpu": fields.pop("gpu"),
        # a hardware preset name (load_hardware), or null on the CPU and on unknown GPUs
        "system": fields.pop("system"),
        "sm_count": fields.pop("sm_count"),
        "torch": fields.pop("torch"),
        "cuda": fields.pop("cuda"),
        "date": now(),
        "dtype": None,
        "tool": TOOL,
        "tool_version": tool_version(),
        **fields,  # device, l2_bytes, memory_bytes, compute_capability
    }


def _table(family: str, rows: Sequence[dict[str, Any]]) -> pa.Table:
    arrays = []
    for column in columns(family):
        values = [SOURCE if column == "source" else row[column] for row in rows]
        if column in RAGGED_COLUMNS:
            arrays.append(pa.array([[int(v) for v in value] for value in values], type=pa.list_(pa.int64())))
        elif column in CATEGORICAL_COLUMNS or column in ("method", "source"):
            arrays.append(pa.array([str(v) for v in values], type=pa.string()))
        elif column in ("latency_us", "latency_std_us"):
            arrays.append(pa.array([float(v) for v in values], type=pa.float64()))
        else:  # every numeric query column is a count
            arrays.append(pa.array([int(v) for v in values], type=pa.int64()))
    return pa.Table.from_arrays(arrays, names=list(columns(family)))


def _replace(path: Path, write_to) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write_to(tmp)
    os.replace(tmp, path)
