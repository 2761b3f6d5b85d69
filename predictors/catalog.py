"""What aiconfigurator-core measured on each GPU system: engines, their versions, the
operator families this package reads for each, and the wide-EP tables.

Only directory listings and the collectives' ``op_name`` column are read, so the whole
catalog takes well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from frontier_dag.config.hardware import aiconfigurator_system_names
from frontier_dag.errors import FrontierDagError

from .aiconfigurator import (
    BACKENDS,
    NCCL_OPS,
    custom_allreduce_rows,
    moe_a2a_rows,
    package_data_root,
    plan_tables,
    systems_with_tables,
    version_key,
    versions,
    wideep_deepep_rows,
)


@dataclass
class EngineTables:
    """One engine's tables on one system."""

    engine: str
    versions: list[str]
    #: operator family -> the table it is read from (``<kind>/<owner>/<version>/<file>``)
    families: dict[str, str]
    #: the wide-EP tables (large expert-parallel deployments), read or not
    wide_ep: list[str] = field(default_factory=list)


@dataclass
class SystemTables:
    name: str
    engines: list[EngineTables]
    #: the collective library's tables (``nccl 2.29.2`` or ``oneccl 2021.17.2``)
    collectives: list[str]

    @property
    def has_tables(self) -> bool:
        return bool(self.engines)


def _relative(path: Path, base: Path) -> str:
    return str(path.relative_to(base).with_suffix("")).removesuffix("_perf")


def _families(path: Path, reader, family: str | None) -> list[str]:
    if family:
        return [family]
    if getattr(reader, "func", reader) is wideep_deepep_rows or reader is moe_a2a_rows:
        return ["all_to_all"]
    if reader is custom_allreduce_rows:
        return ["all_reduce"]
    ops = pd.read_parquet(path, columns=["op_name"])["op_name"].astype(str).unique()
    return [NCCL_OPS[op] for op in ops if op in NCCL_OPS]


def engine_tables(system: str, engine: str, root: Path | None = None) -> EngineTables | None:
    """What ``system`` holds for ``engine``; None when it has no tables for it."""
    base = (root or package_data_root()) / system
    found = sorted({v for kind in base.iterdir() if kind.is_dir() for v in versions(kind / engine)})
    if not found:
        return None
    try:
        plan = plan_tables(system, engine, root)
    except FrontierDagError:
        plan = []
    families: dict[str, str] = {}
    for path, reader, family in plan:
        for name in _families(path, reader, family):
            label = _relative(path, base)
            families[name] = f"{families[name]} + {label}" if name in families else label
    wide = sorted(_relative(p, base) for p in base.glob(f"*/{engine}/*/wideep_*.parquet"))
    return EngineTables(engine, sorted(found, key=version_key), families, wide)


def system_tables(system: str, root: Path | None = None) -> SystemTables:
    root = root or package_data_root()
    base = root / system
    engines = [e for e in (engine_tables(system, b, root) for b in BACKENDS) if e is not None] \
        if system in systems_with_tables(root) else []
    collectives = [f"{lib} {v}" for lib in ("nccl", "oneccl") for v in versions(base / "comm" / lib)]
    return SystemTables(system, engines, collectives)


def catalog(root: Path | None = None) -> list[SystemTables]:
    """Every system aiconfigurator-core describes, with its tables (none for some)."""
    root = root or package_data_root()
    names = sorted(set(aiconfigurator_system_names()) | {p.name for p in root.iterdir() if p.is_dir()})
    return [system_tables(name, root) for name in names]
