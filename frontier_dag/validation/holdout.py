"""Calibrated estimates of silicon rows that were not fitted on them (docs/validation.md,
"Calibration"): with a calibration fitted elsewhere (another system's rows), and leaving
one model out (each model's rows simulated with overheads fitted on the other models'
rows of its engine, on the same system).

Each gives, per row, the columns of one more ``compare.Estimate`` beside the uncalibrated
simulation's: ``<prefix>_status`` (``ok``, or ``no_entry`` where there is nothing to
calibrate the row with, ``reason`` says why), ``<prefix>_sim_ttft_ms``,
``<prefix>_sim_tpot_ms``, ``<prefix>_ttft_ape`` and ``<prefix>_tpot_ape``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from frontier_dag.config.overheads import EngineOverheads, OverheadsFile
from frontier_dag.errors import ConfigError
from frontier_dag.validation.calibrate import engine_key, fit_overheads
from frontier_dag.validation.compare import Estimate
from frontier_dag.validation.runner import run_jobs
from frontier_dag.validation.silicon import SiliconRow

COLUMNS = ("status", "reason", "sim_ttft_ms", "sim_tpot_ms", "ttft_ape", "tpot_ape")


def _estimate(key: str, short: str, prefix: str) -> Estimate:
    return Estimate(key, short, f"{prefix}_status", f"{prefix}_reason", f"{prefix}_ttft_ape", f"{prefix}_tpot_ape")


#: Calibrated with a file fitted on other rows (``validate silicon --calibration``).
CALIBRATED = _estimate("calibrated", "calib", "calibrated")
#: Calibrated on the system's other models (``validate silicon --hold-out model``).
MODEL_HELD_OUT = _estimate("model_held_out", "lomo", "lomo")


def _columns(prefix: str, record: dict) -> dict:
    return {f"{prefix}_{c}": record[c] for c in COLUMNS}


def _missing(prefix: str, reason: str) -> dict:
    return {f"{prefix}_status": "no_entry", f"{prefix}_reason": reason, f"{prefix}_sim_ttft_ms": math.nan,
            f"{prefix}_sim_tpot_ms": math.nan, f"{prefix}_ttft_ape": math.nan, f"{prefix}_tpot_ape": math.nan}


def _simulate(prefix: str, rows: Sequence[SiliconRow], overheads: Sequence[EngineOverheads], **run) -> dict[int, dict]:
    records = run_jobs(list(zip(rows, overheads, strict=True)), **run)
    return {row.index: _columns(prefix, rec) for row, rec in zip(rows, records, strict=True)}


def with_calibration(rows: Sequence[SiliconRow], calibration: OverheadsFile, name: str = "the calibration",
                     **run) -> dict[int, dict]:
    """Per row index, ``CALIBRATED``'s columns: the row simulated with its engine's entry of
    ``calibration`` (its version's if the file has one); a row whose engine has none is
    ``no_entry``. ``run``: options of ``runner.run_jobs``."""
    out, todo, entries = {}, [], []
    for row in rows:
        entry = calibration.entry(row.backend, row.backend_version)
        if entry is None:
            out[row.index] = _missing("calibrated", f"{name} has no entry for engine {row.backend}")
        else:
            todo.append(row)
            entries.append(entry)
    out.update(_simulate("calibrated", todo, entries, **run))
    return out


def leave_one_model_out(rows: Sequence[SiliconRow], *, by: str = "engine", iterations: int = 6,
                        progress: Callable[[str], None] | None = None, **run) -> dict[int, dict]:
    """Per row index, ``MODEL_HELD_OUT``'s columns: each model's rows simulated with overheads
    fitted (``calibrate.fit_overheads``) on the rows of the same engine (or engine version,
    ``by``) and system of every other model in ``rows``; ``no_entry`` where there is none."""
    groups: dict[tuple, list[SiliconRow]] = {}
    for row in rows:
        groups.setdefault((row.system, engine_key(row, by), row.model_path), []).append(row)
    out: dict[int, dict] = {}
    for (system, key, model), held_out in sorted(groups.items()):
        train = [r for r in rows if r.system == system and engine_key(r, by) == key and r.model_path != model]
        if not train:
            for row in held_out:
                out[row.index] = _missing("lomo", f"no other model of {key} on {system} to fit on")
            continue
        if progress:
            progress(f"{system} {key} without {model}: fitting on {len(train)} row(s)")
        try:
            fit = fit_overheads(train, f"{key} without {model}", iterations=iterations, progress=progress, **run)
        except ConfigError as exc:
            for row in held_out:
                out[row.index] = _missing("lomo", str(exc))
            continue
        out.update(_simulate("lomo", held_out, [fit.overheads] * len(held_out), **run))
    return out
