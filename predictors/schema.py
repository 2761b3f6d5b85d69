"""The canonical profile schema and its on-disk form, the profile directory.

A profile is one table per operator family. Its input columns are exactly the
family's query columns (``frontier_dag.cost.queries.QUERY_COLUMNS``), so a profile
row is a cost query with a measured latency; the measurement columns follow:

    latency_us       median kernel time in microseconds
    latency_std_us   spread of the repeats (0 when the source gives none)
    repeats          number of timed repeats (0 when unknown)
    source           optional: where the row came from (file, kernel, version)

In memory a profile is a pandas DataFrame whose ragged columns (``q_lens``,
``ctx_lens``, ``expert_tokens``) hold 1-D int64 numpy arrays. On disk a profile
directory holds ``meta.yaml`` and one ``<family>.parquet`` per family, with the
ragged columns as ``list<int64>`` (docs/profile-schema.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from frontier_dag.cost.queries import CATEGORICAL_COLUMNS, FAMILIES, QUERY_COLUMNS, RAGGED_COLUMNS
from frontier_dag.errors import PredictorError
from frontier_dag.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
else:  # imported on first use: loading fitted predictors from the cache needs neither
    pd = lazy_module("pandas")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

MEASUREMENT_COLUMNS = ("latency_us", "latency_std_us", "repeats")
OPTIONAL_COLUMNS = ("source", "method")
META_FILE = "meta.yaml"
META_KEYS = ("gpu", "system", "sm_count", "torch", "cuda", "date", "dtype", "tool")


@dataclass
class ProfileSet:
    """The profiles of one GPU system: family -> table, plus where they came from.

    ``hardware`` names the system (a ``load_hardware`` name); ``files`` are every file
    the tables were read from, whose contents key the fitted-model cache.
    """

    hardware: str
    tables: dict[str, pd.DataFrame]
    files: list[Path] = field(default_factory=list)
    description: str = ""

    def data_hash(self) -> str:
        """sha256 over the contents of every file read, in a stable order."""
        return hash_files(self.files)


def hash_files(files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted({Path(f).resolve() for f in files}):
        digest.update(str(path.name).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def empty_profile(family: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in (*QUERY_COLUMNS[family], *MEASUREMENT_COLUMNS)})


def normalize_profile(family: str, frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check ``frame`` against the schema of ``family`` and return it with canonical types.

    Raises PredictorError naming ``where`` and the offending column.
    """
    if family not in QUERY_COLUMNS:
        raise PredictorError(f"{where}: unknown operator family {family!r}; use one of {', '.join(FAMILIES)}")
    columns = (*QUERY_COLUMNS[family], *MEASUREMENT_COLUMNS)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PredictorError(
            f"{where}: {family} profile lacks column(s) {', '.join(missing)}; a profile needs "
            f"{', '.join(columns)} (see docs/profile-schema.md)"
        )
    out = pd.DataFrame(index=range(len(frame)))
    for column in columns:
        values = frame[column].to_numpy()
        if column in RAGGED_COLUMNS:
            out[column] = _ragged(values, f"{where}: column {column}")
        elif column in CATEGORICAL_COLUMNS:
            out[column] = pd.Series(values).astype(str).to_numpy(dtype=object)
        else:
            numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
            if np.isnan(numeric).any():
                bad = int(np.flatnonzero(np.isnan(numeric))[0])
                raise PredictorError(f"{where}: column {column} row {bad} is not a number ({values[bad]!r})")
            out[column] = numeric
    for column in OPTIONAL_COLUMNS:
        if column in frame.columns:
            out[column] = frame[column].astype(str).to_numpy(dtype=object)
    bad = ~(out["latency_us"].to_numpy() > 0)
    if bad.any():
        raise PredictorError(f"{where}: latency_us must be positive (row {int(np.flatnonzero(bad)[0])})")
    return out


def _ragged(values, where: str) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value if isinstance(value, np.ndarray) and value.dtype == np.int64 and value.ndim == 1 \
            else np.asarray(value, dtype=np.int64).ravel()
    lengths = np.fromiter((len(v) for v in out), dtype=np.int64, count=len(out))
    bad = lengths == 0
    if len(out) and not bad.any():
        negative = np.concatenate(list(out)) < 0
        bad = np.bincount(np.repeat(np.arange(len(out)), lengths), weights=negative, minlength=len(out)) > 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise PredictorError(f"{where} row {row}: needs a non-empty list of non-negative integers")
    return out


def profile_hardware(root: Path) -> str:
    """The GPU system ``meta.yaml`` names: its ``system``, else its ``gpu``."""
    meta_path = Path(root) / META_FILE
    if not meta_path.is_file():
        raise PredictorError(f"{root}: not a profile directory (no {META_FILE}); see docs/profile-schema.md")
    meta = yaml.safe_load(meta_path.read_text()) or {}
    hardware = str(meta.get("system") or meta.get("gpu") or "")
    if not hardware:
        raise PredictorError(f"{meta_path}: needs a `system` (for example h100_sxm) or `gpu` key")
    return hardware


def read_profile_dir(path: str | Path) -> ProfileSet:
    """Read a profile directory: ``meta.yaml`` and one ``<family>.parquet`` per family.

    The hardware is ``meta.yaml``'s ``system`` (a ``load_hardware`` name), else its ``gpu``.
    """
    root = Path(path)
    hardware = profile_hardware(root)
    tables, files = {}, [root / META_FILE]
    for file in sorted(root.glob("*.parquet")):
        family = file.stem
        if family not in QUERY_COLUMNS:
            raise PredictorError(f"{file}: {family!r} is not an operator family; name files <family>.parquet "
                                 f"with one of {', '.join(FAMILIES)}")
        frame = pq.read_table(file).to_pandas()
        tables[family] = normalize_profile(family, frame, str(file))
        files.append(file)
    if not tables:
        raise PredictorError(f"{root}: holds no <family>.parquet file")
    return ProfileSet(hardware, tables, files, f"profile directory {root}")


def write_profile(path: str | Path, family: str, frame: pd.DataFrame) -> Path:
    """Write one family's table as ``<path>/<family>.parquet`` (ragged columns as list<int64>)."""
    frame = normalize_profile(family, frame, f"{path}/{family}.parquet")
    arrays, names = [], []
    for column in frame.columns:
        values = frame[column].to_numpy()
        if column in RAGGED_COLUMNS:
            arrays.append(pa.array([v.tolist() for v in values], type=pa.list_(pa.int64())))
        elif column in CATEGORICAL_COLUMNS or column in OPTIONAL_COLUMNS:
            arrays.append(pa.array([str(v) for v in values], type=pa.string()))
        elif column == "repeats":
            arrays.append(pa.array(values.astype(np.int64)))
        elif column in MEASUREMENT_COLUMNS:
            arrays.append(pa.array(values.astype(float)))
        else:
            integral = np.all(values == np.round(values))
            arrays.append(pa.array(values.astype(np.int64) if integral else values.astype(float)))
        names.append(column)
    target = Path(path) / f"{family}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, names=names), target)
    return target


def write_meta(path: str | Path, meta: dict) -> Path:
    """Write ``meta.yaml``; ``system`` (or ``gpu``) is required, the other keys are recorded as given."""
    if not (meta.get("system") or meta.get("gpu")):
        raise PredictorError(f"{path}/{META_FILE}: needs a `system` or `gpu` key")
    target = Path(path) / META_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(dict(meta), sort_keys=False))
    return target
