"""Coverage of the silicon rows, without their errors: which rows become simulations.

The systems the simulator is not developed on (all but h100_sxm and h200_sxm) are kept
as an untouched check of how the method carries to new hardware, so for them only the
coverage is looked at. ``coverage_record`` keeps what a record says about whether and
why a row was simulated, and drops every latency, measured or simulated, and every
error. ``convert_row`` checks a row without simulating it: its run config, its traced
workflow and one representative iteration priced by the row's fitted predictors (the
check ``frontier-dag critical-path`` makes), so that every row of a system can be
checked in minutes where simulating them all takes hours.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

from frontier_dag.errors import FrontierDagError
from frontier_dag.validation.convert import row_config
from frontier_dag.validation.models import Unsupported
from frontier_dag.validation.silicon import SiliconRow

#: the fields of a row's record that say nothing about its accuracy
COVERAGE_FIELDS = ("index", "id", "system", "backend", "backend_version", "model", "mode", "isl", "osl",
                   "concurrency", "gemm_quant", "moe_quant", "parallelism", "status", "reason", "notes", "requests",
                   "iterations", "out_of_range", "wall_s")


def coverage_record(record: dict) -> dict:
    """``record`` without its latencies and errors."""
    return {k: record[k] for k in COVERAGE_FIELDS if k in record}


def _record(row: SiliconRow) -> dict:
    return {"index": row.index, "id": row.id, "system": row.system, "backend": row.backend,
            "backend_version": row.backend_version, "model": row.model_path, "mode": row.mode, "isl": row.isl,
            "osl": row.osl, "concurrency": row.concurrency, "gemm_quant": row.gemm_quant, "moe_quant": row.moe_quant,
            "parallelism": row.describe(), "status": "ok", "reason": "", "notes": "; ".join(row.notes),
            "out_of_range": 0, "wall_s": 0.0}


_COST_MODELS: dict = {}


def convert_row(row: SiliconRow) -> dict:
    """Whether ``row`` becomes a simulation: its config, traced workflow and one iteration
    priced; ``status`` ok, unsupported or failed, with the reason."""
    from frontier_dag.analysis.iteration import analyze_iteration, representative_loads
    from frontier_dag.dsl import trace_config
    from frontier_dag.predictors.registry import cost_model_for

    record = _record(row)
    started = time.perf_counter()
    try:
        converted = row_config(row)
        record["notes"] = "; ".join(converted.notes)
        deployment, graph = trace_config(converted.config)
        key = (row.system, row.backend)
        if key not in _COST_MODELS:
            _COST_MODELS[key] = cost_model_for(converted.config.predictor, deployment.hardware)
        loads = representative_loads(graph, deployment, batch_size=min(row.concurrency, 64))
        analyze_iteration(graph, deployment, _COST_MODELS[key], loads)
    except Unsupported as exc:
        record.update(status="unsupported", reason=str(exc))
    except FrontierDagError as exc:
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug: keep the row and where it happened
        where = traceback.extract_tb(exc.__traceback__)[-1]
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})")
    record["wall_s"] = time.perf_counter() - started
    return record


def convert_rows(rows: Iterable[SiliconRow], progress: Callable[[dict], None] | None = None) -> list[dict]:
    """``convert_row`` for each row, in order (in this process: the work is loading each
    system's predictors once, then milliseconds per row)."""
    records = []
    for row in rows:
        records.append(convert_row(row))
        if progress:
            progress(records[-1])
    return records
