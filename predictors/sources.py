"""Where profiles come from: one name per reader, and the files each will read.

A ``Source`` knows its files before reading them, so a fitted model can be found in
the cache by the files' hash without parsing any table.

    aiconfigurator   the installed aiconfigurator-core tables of --system and --backend
    frontier-csv     Frontier-format CSVs under --path (optionally only files matching --files)
    vidur-csv        Vidur-format CSVs under --path
    profile-dir      a profile directory in our schema (docs/profile-schema.md)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from frontier_dag.config.hardware import load_hardware
from frontier_dag.config.suggest import did_you_mean
from frontier_dag.data import expand_data_path
from frontier_dag.errors import ConfigError, FrontierDagError, PredictorError

from .aiconfigurator import (
    BACKENDS,
    has_tables,
    plan_tables,
    read_aiconfigurator,
    systems_with_tables,
)
from .frontier_csv import FRONTIER_FILES, read_frontier_csv
from .schema import META_FILE, ProfileSet, hash_files, profile_hardware, read_profile_dir
from .vidur_csv import VIDUR_FILES, find_files, infer_hardware, read_vidur_csv

SOURCE_NAMES = ("aiconfigurator", "frontier-csv", "vidur-csv", "profile-dir")


@dataclass
class Source:
    """A set of profile files, the GPU system they were measured on, and how to read them."""

    kind: str
    description: str
    hardware: str
    files: list[Path]
    read: Callable[[], ProfileSet]

    def data_hash(self) -> str:
        return hash_files(self.files)


def _hardware_name(name: str, where: str) -> str:
    try:
        return load_hardware(name).name
    except FrontierDagError as exc:
        raise PredictorError(f"{where}: {exc}") from exc


def open_source(kind: str, *, system: str | None = None, backend: str = "vllm", path: str | Path | None = None,
                pattern: str | None = None) -> Source:
    """The ``Source`` for a source name and its options (as the CLI and the run config give them)."""
    if kind == "aiconfigurator":
        if not system:
            raise PredictorError("--source aiconfigurator needs --system (for example h200_sxm)")
        files = [p for p, _, _ in plan_tables(system, backend)]
        return Source(kind, f"aiconfigurator-core {system} {backend}", _hardware_name(system, f"--system {system}"),
                      files, lambda: read_aiconfigurator(system, backend))
    if kind not in SOURCE_NAMES:
        raise PredictorError(f"--source {kind!r}: use one of {', '.join(SOURCE_NAMES)}")
    if path is None:
        raise PredictorError(f"--source {kind} needs --path (a folder or file of profiles)")
    path = Path(path).expanduser()
    if kind == "profile-dir":
        files = sorted([path / META_FILE, *path.glob("*.parquet")]) if (path / META_FILE).is_file() else []
        if not files:
            raise PredictorError(f"--path {path}: not a profile directory (no {META_FILE}); see docs/profile-schema.md")
        if system:  # e.g. a CPU profile (meta.yaml system: null) fitted as if it were a GPU's
            hardware = _hardware_name(system, f"--system {system}")
            return Source(kind, f"profile directory {path} (as {hardware})", hardware, files,
                          lambda: dataclasses.replace(read_profile_dir(path), hardware=hardware))
        try:
            hardware = _hardware_name(profile_hardware(path), str(path / META_FILE))
        except PredictorError as exc:
            raise PredictorError(f"{exc}; or name the system the profiles stand for with --system "
                                 "(predictor.system in a run config), for example h100_sxm") from None
        return Source(kind, f"profile directory {path}", hardware, files, lambda: read_profile_dir(path))
    names, reader = (FRONTIER_FILES, read_frontier_csv) if kind == "frontier-csv" else (VIDUR_FILES, read_vidur_csv)
    files = find_files(path, names, pattern)
    if not files:
        raise PredictorError(f"--path {path}: holds no {kind} files ({', '.join(names)})"
                             + (f" matching {pattern!r}" if pattern else ""))
    return Source(kind, f"{kind} {path}" + (f" ({pattern})" if pattern else ""), infer_hardware(path), files,
                  lambda: reader(path, pattern))


def source_for_config(cfg, hw) -> Source:
    """The ``Source`` a run's ``predictor`` config names (``PredictorConfig``)."""
    if cfg.source == "aiconfigurator":
        system = cfg.system or hw.aiconfigurator_system
        if not system:
            raise ConfigError(f"predictor.source: hardware {hw.name} has no aiconfigurator tables; set "
                              "predictor.system to a measured system (for example h100_sxm) or use roofline")
        if cfg.backend not in BACKENDS:
            raise ConfigError(f"predictor.backend: {cfg.backend!r} has no aiconfigurator tables; use one of "
                              f"{', '.join(BACKENDS)}")
        key = "predictor.system" if cfg.system else f"hardware ({hw.name}, whose tables are {system!r})"
        if not has_tables(system):
            known = systems_with_tables()
            raise ConfigError(f"{key}: aiconfigurator-core has no kernel tables for system {system!r}"
                              f"{did_you_mean(system, known) or '.'} Systems with tables: {', '.join(known)} "
                              "(`frontier-dag systems` lists them); set predictor.system to one of them, or "
                              "predictor.source: roofline")
        try:
            return open_source("aiconfigurator", system=system, backend=cfg.backend)
        except PredictorError as exc:  # in the words of the config, not of the command line's options
            raise ConfigError(f"{key}: {exc}; set predictor.system to one of them, or predictor.source: "
                              "roofline") from None
    if cfg.source in ("frontier-csv", "vidur-csv"):
        path = getattr(cfg, "path", None)
        if not path:
            raise ConfigError(f"predictor.path: source {cfg.source} needs the folder of its CSVs")
        return open_source(cfg.source, path=expand_data_path(path))
    return open_source("profile-dir", path=expand_data_path(cfg.source), system=cfg.system)


__all__ = ["SOURCE_NAMES", "Source", "infer_hardware", "open_source", "source_for_config"]
