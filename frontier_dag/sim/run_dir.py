"""A run directory on disk: written whole or not at all, and read back only when its files
belong together.

    RUN/summary.json        the summary, with ``run_id``
    RUN/requests.parquet    one row per request; ``frontier_dag.run_id`` in the schema metadata
    RUN/iterations.parquet  one row per iteration; the same metadata
    RUN/config.yaml         the resolved config; its first line is ``# frontier-dag run RUN_ID``
    RUN/inputs/             copies of the workflow file and the model's config.json the run
                            read, which config.yaml names (see ``run_inputs``)
    RUN/plots/              with ``simulate --plots``

The run id is a hash of the resolved config and the summary (less the wall time; with the
sha256 of each input file), so a re-run of the same config and seed writes the same id,
and the files of two different runs never pass for one. A run is written into a hidden
sibling directory and renamed into place (``--overwrite`` swaps the whole directory), so a
kill never leaves half a run, and nothing of a previous run (its plots) survives a re-run.
Readers check every file, every copy and the ids (computing the id again), and turn a bad
file into an error that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frontier_dag.config.run import Origin, RunConfig, load_run_config
from frontier_dag.errors import ConfigError, RunDataError, SimulationError
from frontier_dag.sim.run_inputs import (
    INPUTS_DIR,
    SUMMARY_KEY,
    InputFile,
    in_run_dir,
    model_file,
    read_inputs,
    recorded,
    sha256_of,
    write_copies,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from frontier_dag.sim.columns import Columns
    from frontier_dag.sim.run import RunResult

#: The files a run directory holds (a directory holding anything else is not a run's).
RUN_FILES = ("summary.json", "requests.parquet", "iterations.parquet", "config.yaml", "inputs", "plots", "trace.json")
#: The files every run has, in the order they are checked.
DATA_FILES = ("config.yaml", "summary.json", "requests.parquet", "iterations.parquet")
#: Columns the analysis reads, by table.
REQUEST_COLUMNS = ("request_id", "arrival_s", "prompt_tokens", "output_tokens", "first_scheduled_s",
                   "first_token_s", "finish_s", "ttft_ms", "tpot_ms", "e2e_ms")
ITERATION_COLUMNS = ("pool", "replica", "start_s", "duration_us", "num_seqs", "prefill_tokens", "decode_seqs",
                     "cause", "cause_request")
#: Where the run id is kept in a parquet file's schema metadata.
PARQUET_KEY = b"frontier_dag.run_id"
_CONFIG_HEADER = "# frontier-dag run "


def run_id(config_yaml: str, summary: dict[str, Any]) -> str:
    """The id of a run: sha256 over its resolved config and its summary less the wall time
    (which records the sha256 of the files the run read; the paths they were given by are
    left out, so simulating a run's own config.yaml again gives its id). Readers compute it
    again."""
    stable = {k: v for k, v in summary.items() if k not in ("wall_time_s", "run_id")}
    if isinstance(stable.get(SUMMARY_KEY), dict):  # the files by content: a re-run of RUN/config.yaml has the same id
        stable[SUMMARY_KEY] = {kind: {k: v for k, v in record.items() if k != "given"} if isinstance(record, dict)
                               else record for kind, record in stable[SUMMARY_KEY].items()}
    # as summary.json reads back (integer keys become strings), so that a reader can check it
    stable = json.loads(json.dumps(stable, default=_json_default))
    digest = hashlib.sha256(config_yaml.encode())
    digest.update(json.dumps(stable, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def check_run_dir(out: Path, overwrite: bool = False) -> None:
    """Refuse, before simulating, to write into a directory that holds anything (a user's
    files are never overwritten without ``overwrite``, and then only a run's own files)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SimulationError(f"--out {out} is a file; give a directory for the run")
    if out.exists() and any(out.iterdir()):
        foreign = [p.name for p in out.iterdir() if p.name not in RUN_FILES]
        if foreign:
            raise SimulationError(f"--out {out} holds files that are not a run's ({', '.join(sorted(foreign)[:3])}); "
                                  "choose an empty or new directory")
        if not overwrite:
            raise SimulationError(f"--out {out} already holds a run; choose another directory or pass --overwrite")


def write_run(result: RunResult, out: Path, overwrite: bool = False,
              extras: Callable[[Path], object] | None = None) -> str:
    """Write the run into ``out`` atomically and return its id. ``extras(directory)`` may
    add files (plots) to the new run before it replaces what ``out`` held."""
    out = Path(out)
    if out.is_symlink():  # replace the run where it is, not the link
        out = out.resolve()
    check_run_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        inputs, summary = _inputs(result)
        config_yaml = in_run_dir(result.config, inputs).to_yaml()
        rid = run_id(config_yaml, summary)
        write_copies(staging, inputs)
        (staging / "config.yaml").write_text(f"{_CONFIG_HEADER}{rid}\n{config_yaml}")
        _write_parquet(result.request_table, staging / "requests.parquet", rid)
        _write_parquet(result.iteration_table, staging / "iterations.parquet", rid)
        summary = {"run_id": rid, **summary}
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
        if extras is not None:
            extras(staging)
        _swap_in(staging, out, overwrite)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return rid


def _inputs(result: RunResult) -> tuple[tuple[InputFile, ...], dict[str, Any]]:
    """The input files to copy and the summary that records them. A run read back from its
    directory (``frontier_dag.api.load_run``) carries no contents: its copies are read again,
    and must still be what the run recorded."""
    inputs = result.inputs or read_inputs(result.config, result.deployment.origin)
    before = result.summary.get(SUMMARY_KEY) or {}
    for f in inputs:
        was = before.get(f.kind)
        if isinstance(was, dict) and was.get("sha256") not in (None, f.sha256):
            raise SimulationError(f"{f.path} ({f.kind}) is not the file this run read: its sha256 is "
                                  f"{f.sha256[:12]}..., the run recorded {str(was['sha256'])[:12]}...; the copy "
                                  "cannot be written: re-run the simulation")
    if not inputs:
        return inputs, result.summary
    records = recorded(inputs, in_run_dir=True)
    for kind, record in records.items():  # a run read back keeps the paths its config first gave
        if isinstance(before.get(kind), dict) and before[kind].get("given"):
            record["given"] = before[kind]["given"]
    return inputs, {**result.summary, SUMMARY_KEY: records}


def _write_parquet(frame: Columns | pd.DataFrame, path: Path, rid: str) -> None:
    import pyarrow as pa

    from frontier_dag.sim.columns import Columns

    table = frame.to_arrow() if isinstance(frame, Columns) else pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_KEY: rid.encode()})
    write_parquet(table, path)


#: ``pyarrow.parquet.write_table``'s defaults, as it hands them to its writer (pyarrow 26)
_WRITER_OPTIONS = {
    "version": "2.6", "compression": "snappy", "use_dictionary": True, "write_statistics": True,
    "use_deprecated_int96_timestamps": False, "compression_level": None, "use_byte_stream_split": False,
    "column_encoding": None, "writer_engine_version": "V2", "data_page_version": "1.0",
    "use_compliant_nested_type": True, "encryption_properties": None, "write_batch_size": None,
    "dictionary_pagesize_limit": None, "store_schema": True, "write_page_index": False, "write_page_checksum": False,
    "sorting_columns": None, "store_decimal_as_integer": False, "write_time_adjusted_to_utc": False,
    "max_rows_per_page": None, "bloom_filter_options": None, "use_content_defined_chunking": False,
}


def write_parquet(table: pa.Table, path: Path) -> None:
    """``pyarrow.parquet.write_table(table, path)``, the same bytes, through the writer that
    function wraps: ``pyarrow.parquet`` imports pyarrow's filesystems and with them OpenSSL
    (~0.03 CPU-s, a tenth of a short simulation). Where this pyarrow's writer takes other
    options, ``write_table`` itself writes the file."""
    import pyarrow as pa
    from pyarrow import _parquet

    try:
        with pa.OSFile(str(path), "wb") as sink:
            writer = _parquet.ParquetWriter(sink, table.schema, **_WRITER_OPTIONS)
            writer.write_table(table, row_group_size=None)
            writer.close()
    except TypeError:  # another pyarrow's options
        import pyarrow.parquet as pq

        pq.write_table(table, path)


def _swap_in(staging: Path, out: Path, overwrite: bool) -> None:
    """Put the directory ``staging`` where ``out`` is: a rename, and with an existing ``out``
    two (the old run is moved aside, the new one in, the old one deleted)."""
    if not out.exists():
        os.rename(staging, out)
        return
    check_run_dir(out, overwrite)  # another process may have written it meanwhile
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class RunFiles:
    """The data files of a run directory, read and checked."""

    config: RunConfig
    summary: dict[str, Any]
    requests: pd.DataFrame
    iterations: pd.DataFrame
    run_id: str | None  # None for a run written before runs had ids
    inputs: dict[str, dict[str, Any]]  # the files the run read: kind -> {given, sha256, copy}


def read_run(run_dir: str | Path) -> RunFiles:
    """Read a run directory's data files; a missing, unreadable or foreign file is a
    RunDataError naming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDataError(f"{run_dir}: not a run directory (no such directory); write one with "
                           "`frontier-dag simulate CONFIG --out RUN_DIR`")
    missing = [n for n in DATA_FILES if not (run_dir / n).is_file()]
    if missing:
        raise RunDataError(f"{run_dir}: not a run directory (missing {', '.join(missing)}); "
                           "write one with `frontier-dag simulate CONFIG --out RUN_DIR`")
    ids: dict[str, str | None] = {}
    config_text = _read(run_dir, "config.yaml", lambda p: p.read_text())
    first = config_text.split("\n", 1)[0]
    ids["config.yaml"] = first[len(_CONFIG_HEADER):].strip() if first.startswith(_CONFIG_HEADER) else None
    try:
        config = load_run_config(run_dir / "config.yaml")
    except ConfigError as exc:
        raise unreadable(run_dir, "config.yaml", str(exc).splitlines()[0]) from None
    summary = _read(run_dir, "summary.json", lambda p: json.loads(p.read_text()))
    if not isinstance(summary, dict):
        raise unreadable(run_dir, "summary.json", f"a JSON {type(summary).__name__}, not an object")
    ids["summary.json"] = summary.get("run_id")
    inputs = check_inputs(run_dir, config, summary)
    tables = {}
    for name, columns in (("requests.parquet", REQUEST_COLUMNS), ("iterations.parquet", ITERATION_COLUMNS)):
        frame, ids[name] = _read(run_dir, name, _read_parquet)
        lacking = [c for c in columns if c not in frame.columns]
        if lacking:
            raise unreadable(run_dir, name, f"not a run's table: no column {', '.join(lacking[:4])}")
        tables[name] = frame
    rid = _one_id(run_dir, ids)
    requests, iterations = tables["requests.parquet"], tables["iterations.parquet"]
    for key, rows, name in (("num_requests", len(requests), "requests.parquet"),
                            ("iterations", len(iterations), "iterations.parquet")):
        expected = summary.get(key)
        if isinstance(expected, int) and expected != rows:
            raise unreadable(run_dir, name, f"{rows:,} rows where summary.json says {key} = {expected:,}")
    if rid is not None and first.startswith(_CONFIG_HEADER) and run_id(config_text.split("\n", 1)[-1], summary) != rid:
        raise RunDataError(f"{run_dir}: config.yaml or summary.json was edited after the run (they no longer hash to "
                           f"its id {rid}), so its analysis would not describe the run simulated; re-run "
                           "`frontier-dag simulate CONFIG --out RUN_DIR --overwrite` to write the run again")
    return RunFiles(config, summary, requests, iterations, rid, inputs)


def check_inputs(run_dir: Path, config: RunConfig, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The input files summary.json records, after checking that each copy is in the run
    directory, unchanged (its sha256), and the file config.yaml names."""
    records = summary.get(SUMMARY_KEY) or {}
    if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
        raise unreadable(run_dir, "summary.json", f"{SUMMARY_KEY} is not a mapping of input files")
    named = {"workflow": (config.workflow.path, "workflow.path"),
             "model": (config.model if isinstance(config.model, str) else None, "model")}
    for kind, record in records.items():
        copy = record.get("copy")
        if copy is None:
            continue
        parts = Path(str(copy)).parts
        if Path(str(copy)).is_absolute() or ".." in parts or parts[:1] != (INPUTS_DIR,):
            raise unreadable(run_dir, "summary.json", f"{SUMMARY_KEY}.{kind}.copy {copy!r} is not a file under "
                                                      f"{INPUTS_DIR}/")
        path = run_dir / copy
        if not path.is_file():
            raise RunDataError(f"{path} is missing: the run's copy of its {kind} file ({record.get('given')}); a run "
                               "directory is moved or copied whole. Re-run `frontier-dag simulate CONFIG --out RUN_DIR "
                               "--overwrite` to write the run again")
        found = sha256_of(path)
        if found != record.get("sha256"):
            raise RunDataError(f"{path} was changed after the run: its sha256 is {found[:12]}..., the run read "
                               f"{str(record.get('sha256'))[:12]}...; the analysis would not describe this run. "
                               "Restore the file, or re-run the simulation with the changed one")
        value, key = named.get(kind, (copy, kind))
        if value != copy:
            raise unreadable(run_dir, "config.yaml", f"{key} is {value!r}, not the run's copy {copy!r}")
    for kind, (value, key) in named.items():
        if value is not None and kind not in records and _names_file(config, kind, run_dir):
            raise RunDataError(f"{run_dir}: config.yaml names {key}: {value}, and the run directory holds no copy of it "
                               "(it was written before runs kept their workflow and model files); re-run "
                               "`frontier-dag simulate CONFIG --out RUN_DIR --overwrite`, or copy the file to "
                               f"{run_dir / value}")
    return records


def _names_file(config: RunConfig, kind: str, run_dir: Path) -> bool:
    """Whether config.yaml names a ``kind`` file that is not where it says (from the run directory)."""
    origin = Origin.of_file(run_dir / "config.yaml")
    path = origin.path(config.workflow.path) if kind == "workflow" else model_file(config, origin)
    return path is not None and not path.is_file()


def _read(run_dir: Path, name: str, reader: Callable[[Path], Any]) -> Any:
    try:
        return reader(run_dir / name)
    except RunDataError:
        raise
    except Exception as exc:  # a truncated or foreign file: JSON, Arrow, Unicode errors alike
        raise unreadable(run_dir, name, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") \
            from None


def _read_parquet(path: Path) -> tuple[pd.DataFrame, str | None]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    rid = (table.schema.metadata or {}).get(PARQUET_KEY)
    return table.to_pandas(), rid.decode() if rid else None


def _one_id(run_dir: Path, ids: dict[str, str | None]) -> str | None:
    """The run id its files agree on; None when none has one (a run written before ids)."""
    if not any(ids.values()):
        return None
    counts: dict[str | None, int] = {}
    for value in ids.values():
        counts[value] = counts.get(value, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    majority = max(counts, key=lambda v: (counts[v], v is not None))
    odd = [f"{name} ({'run ' + value if value else 'no run id'})" for name, value in ids.items() if value != majority]
    raise RunDataError(f"{run_dir}: its files come from different runs: {', '.join(odd)} against "
                       f"{'run ' + majority if majority else 'no run id'} in the others (a copy or an interrupted "
                       "write?); re-run `frontier-dag simulate CONFIG --out RUN_DIR --overwrite`")


def unreadable(run_dir: Path, name: str, why: str) -> RunDataError:
    return RunDataError(f"{run_dir / name} is unreadable ({why}); re-run `frontier-dag simulate CONFIG "
                        "--out RUN_DIR --overwrite` to write the run again")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
