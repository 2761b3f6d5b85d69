"""A sweep directory:

    DIR/sweep.yaml          the sweep, base config inlined; its id is the hash of its content
    DIR/points/ID.json      one record per finished point, written atomically, with the sweep id
    DIR/results.parquet     every record in one table, rewritten (atomically) as points finish
    DIR/.lock               held by the sweep that is writing the directory

The per-point files are the truth: a sweep killed at any moment loses at most the points
that were running, and ``--resume`` reads them back. ``results.parquet`` is rebuilt from
them. A directory holding anything else is never written into; ``--resume`` continues
only the sweep the directory holds (``--extend`` adds a changed one to it), and one sweep
at a time writes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from frontier_dag.errors import FrontierDagError, RunDataError

SWEEP_FILES = ("sweep.yaml", "points", "results.parquet")
#: Columns every record has, in this order, before its axes and its summary.
META_COLUMNS = ("point_id", "status", "reason", "strategy", "workflow", "gpus", "wall_s", "cpu_s")
STATUSES = ("ok", "early_stopped", "pruned", "invalid", "failed")
#: sweep.yaml's comment naming the earlier sweeps an --extend added this one to
_EARLIER = "# extends sweeps: "


def prepare(out: Path, resume: bool) -> None:
    """Check that ``out`` may hold this sweep: new or empty, or (with ``resume``) a sweep's."""
    if out.exists() and not out.is_dir():
        raise FrontierDagError(f"--out {out} is a file; give a directory for the sweep")
    if not out.exists() or not any(out.iterdir()):
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in SWEEP_FILES and not p.name.startswith((".tmp", ".lock")))
    if foreign:
        raise FrontierDagError(f"--out {out} holds files that are not a sweep's ({', '.join(foreign[:3])}); "
                               "choose an empty or new directory")
    if not resume:
        raise FrontierDagError(f"--out {out} already holds a sweep; pass --resume to continue it, "
                               "or choose another directory")


def sweep_id(spec: Mapping[str, Any]) -> str:
    """The id of a sweep: sha256 over its content as sweep.yaml records it (comments and
    key order aside), so the same sweep file and overrides always give the same id."""
    canonical = yaml.safe_load(yaml.safe_dump(dict(spec), sort_keys=False))
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_spec(out: Path, spec: dict[str, Any], earlier: Iterable[str] = ()) -> None:
    header = f"{_EARLIER}{' '.join(earlier)}\n" if earlier else ""
    _atomic_write(out / "sweep.yaml", (header + yaml.safe_dump(spec, sort_keys=False)).encode())


def read_spec(out: Path) -> dict[str, Any]:
    path = out / "sweep.yaml"
    if not path.is_file():
        return {}
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _unreadable(path, f"{type(exc).__name__}: {str(exc).splitlines()[0]}", out) from None
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise _unreadable(path, f"a YAML {type(spec).__name__}, not a mapping", out)
    return spec


def sweep_ids(out: Path) -> set[str]:
    """The ids of the sweeps recorded in ``out``: its sweep.yaml's and those it extends
    (empty for a directory without a sweep)."""
    if not (out / "sweep.yaml").is_file():
        return set()
    first = (out / "sweep.yaml").read_text().split("\n", 1)[0]
    earlier = first[len(_EARLIER):].split() if first.startswith(_EARLIER) else []
    return {sweep_id(read_spec(out)), *earlier}


def check_same_sweep(out: Path, spec: Mapping[str, Any], source: str, extend: bool) -> list[str]:
    """Before a resume: the ids of the sweeps already in ``out``, after checking that
    ``spec`` is the one recorded there (or, with ``extend``, accepting a changed one)."""
    recorded = read_spec(out)
    if not recorded:
        return []
    ids = sweep_ids(out)
    if sweep_id(spec) in ids or extend:
        return sorted(ids)
    changed = ", ".join(_differences(recorded, yaml.safe_load(yaml.safe_dump(dict(spec), sort_keys=False)))[:5])
    raise FrontierDagError(f"--resume: {source} is not the sweep recorded in {out}/sweep.yaml (they differ at "
                           f"{changed}); resume with the same file and --set overrides, pass --extend to add "
                           "the changed sweep to this directory, or choose another --out")


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [prefix.rstrip(".") or "(top level)"]


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` while writing the sweep; another sweep on ``out`` fails at once."""
    path = out / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            _lock(fd)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FrontierDagError(f"{out} is being written by another sweep (process {holder}); wait for it to "
                                   "finish, or stop it, before resuming") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def write_record(out: Path, record: dict[str, Any]) -> None:
    folder = out / "points"
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / f"{record['point_id']}.json", json.dumps(record, default=_json_default).encode())


def read_records(out: Path) -> dict[str, dict[str, Any]]:
    """Every point recorded in ``out``, by point id. A point file that cannot be read, or
    that belongs to another sweep, is a RunDataError naming it."""
    records = {}
    ids = sweep_ids(out)
    for path in sorted((out / "points").glob("*.json")):
        if path.name.startswith(".tmp"):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _unreadable(path, f"{type(exc).__name__}: {exc}", out) from None
        if not isinstance(record, dict) or record.get("point_id") != path.stem:
            raise _unreadable(path, f"not the record of point {path.stem}", out)
        if record.get("status") not in STATUSES:
            raise _unreadable(path, f"status {record.get('status')!r} is none of {', '.join(STATUSES)}", out)
        if ids and record.get("sweep_id") is not None and record["sweep_id"] not in ids:
            raise _unreadable(path, f"a point of sweep {record['sweep_id']}, not of the sweep in {out}/sweep.yaml "
                                    f"({', '.join(sorted(ids))})", out)
        records[record["point_id"]] = record
    return records


def _unreadable(path: Path, why: str, out: Path) -> RunDataError:
    fix = ("delete it and resume the sweep (frontier-dag sweep SWEEP.yaml --out DIR --resume) to run that point "
           "again") if path.parent.name == "points" else "re-run the sweep into a new --out"
    return RunDataError(f"{path} is unreadable ({why}); {fix}")


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
        return _read_results(out)
    records = read_records(out)
    if records:
        return to_frame(records.values())
    if (out / "results.parquet").is_file():
        return _read_results(out / "results.parquet")
    raise FrontierDagError(f"{out}: no sweep results (no points/*.json or results.parquet); "
                           "run frontier-dag sweep SWEEP.yaml --out DIR first")


def _read_results(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # truncated or not parquet: Arrow and OS errors alike
        raise RunDataError(f"{path} is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                           "give a sweep directory or its results.parquet") from None
    if not {"point_id", "status"} <= set(frame.columns):
        raise RunDataError(f"{path} is not a sweep's results table (no point_id and status columns); "
                           "give a sweep directory or its results.parquet")
    return frame


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"ttft_ms": {"p90": 1.0}}`` -> ``{"ttft_ms.p90": 1.0}``."""
    flat = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            flat.update(flatten(item, f"{name}."))
        elif isinstance(item, list | tuple):  # a summary's warnings: one text cell
            flat[name] = "\n".join(map(str, item))
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

