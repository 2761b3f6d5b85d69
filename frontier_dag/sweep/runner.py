"""Running a sweep: expand the points, record the ones that cannot run, resume from what
the directory already holds, and run the rest on a backend, recording each as it finishes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frontier_dag.sweep import store
from frontier_dag.sweep.backends import run_tasks
from frontier_dag.sweep.points import Point, expand
from frontier_dag.sweep.prune import check, point_config
from frontier_dag.sweep.spec import Sweep

#: Rewrite results.parquet at most this often while points finish (and always at the end).
MERGE_EVERY_S = 2.0


@dataclass
class SweepReport:
    out: str
    points: int = 0  # distinct points after constraints
    grid: int = 0
    excluded: int = 0
    duplicates: int = 0
    resumed: int = 0  # already recorded in the directory
    to_run: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # status -> points, this run
    wall_s: float = 0.0
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_sweep(sweep: Sweep, out: str | Path, *, backend: str = "local", workers: int | None = None,
              address: str | None = None, resume: bool = False, retry_failed: bool = False,
              progress: bool = True, dry_run: bool = False,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> SweepReport:
    """Run ``sweep`` into the directory ``out``. ``on_record`` sees each record as it is
    written. Ctrl-C stops the running points and returns with ``interrupted`` set; what
    finished is kept, and ``resume`` continues from there."""
    started = time.perf_counter()
    out = Path(out)
    store.prepare(out, resume)
    expansion = expand(sweep)
    report = SweepReport(out=str(out), points=len(expansion.points), grid=expansion.grid,
                         excluded=expansion.excluded, duplicates=expansion.duplicates)
    records = store.read_records(out) if out.is_dir() else {}
    todo = []
    for point in expansion.points:
        done = records.get(point.id)
        if done is not None and not (retry_failed and done["status"] == "failed"):
            report.resumed += 1
        else:
            todo.append(point)
    if dry_run:
        for point in todo:
            verdict = check(point.config, sweep.base_dir, _source(sweep, point))
            _count(report, verdict[0] if verdict else "to_run")
        report.to_run = report.counts.pop("to_run", 0)
        return report

    out.mkdir(parents=True, exist_ok=True)
    store.write_spec(out, sweep.to_dict())
    tasks = []
    for point in todo:
        verdict = check(point.config, sweep.base_dir, _source(sweep, point))
        if verdict is None:
            tasks.append(_task(sweep, point))
            continue
        record = _record(point, {"status": verdict[0], "reason": verdict[1], "summary": None, "wall_s": None})
        store.write_record(out, record)
        records[point.id] = record
        _count(report, verdict[0])
        if on_record:
            on_record(record)
    report.to_run = len(tasks)
    if tasks:
        warm_predictors(sweep, tasks, progress)
    by_id = {p.id: p for p in todo}
    bar = _bar(len(tasks)) if progress and tasks else None
    results = run_tasks(tasks, backend, workers, address) if tasks else iter(())
    last_merge = 0.0
    try:
        for task, result in results:
            record = _record(by_id[task["point_id"]], result)
            store.write_record(out, record)
            records[record["point_id"]] = record
            _count(report, record["status"])
            if bar is not None:
                bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())), refresh=False)
                bar.update(1)
            if time.perf_counter() - last_merge > MERGE_EVERY_S:
                store.write_results(out, records.values())
                last_merge = time.perf_counter()
            if on_record:
                on_record(record)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if hasattr(results, "close"):
            results.close()
        if bar is not None:
            bar.close()
        store.write_results(out, records.values())
    report.wall_s = time.perf_counter() - started
    return report


def _source(sweep: Sweep, point: Point) -> str:
    return f"{sweep.source}: point {point.id}"


def _task(sweep: Sweep, point: Point) -> dict[str, Any]:
    return {"point_id": point.id, "config": point.config, "source": _source(sweep, point),
            "base_dir": str(sweep.base_dir) if sweep.base_dir else None,
            "early_stop": sweep.early_stop.model_dump() if sweep.early_stop else None}


def _record(point: Point, result: dict[str, Any]) -> dict[str, Any]:
    """One row of results.parquet: the point (status, axes, config) and its flattened summary."""
    record: dict[str, Any] = {
        "point_id": point.id, "status": result["status"], "reason": result.get("reason"),
        "strategy": point.strategy or (point.config.get("workflow") or {}).get("name", "colocated"),
        "workflow": (point.config.get("workflow") or {}).get("name", "colocated"),
        "gpus": _gpus(point.config), "wall_s": result.get("wall_s"), "cpu_s": result.get("cpu_s"),
    }
    record.update({f"axis.{name}": store.cell(value) for name, value in point.axes.items()})
    if result.get("traceback"):
        record["traceback"] = result["traceback"]
    if result.get("summary"):
        record.update(store.flatten(result["summary"]))
    record["config"] = json.dumps(point.config, sort_keys=True, default=str)
    return record


def _gpus(config: dict[str, Any]) -> int | None:
    try:
        return sum(int(p["gpus"]) for p in config["cluster"]["pools"].values())
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _count(report: SweepReport, status: str) -> None:
    report.counts[status] = report.counts.get(status, 0) + 1


def warm_predictors(sweep: Sweep, tasks: list[dict[str, Any]], progress: bool) -> None:
    """Fit (or load) each distinct fitted predictor once here, so the workers find it in the
    on-disk cache instead of all fitting it at once. Errors are left to the points."""
    from frontier_dag.config.run import resolve
    from frontier_dag.predictors.registry import needs_fitting
    from frontier_dag.sim.assembly import cached_cost_model

    seen = set()
    for task in tasks:
        try:
            cfg, origin = point_config(task["config"], sweep.base_dir, task["source"])
            if not needs_fitting(cfg.predictor):
                continue
            deployment = resolve(cfg, origin)
            for hw in {h.name: h for h in deployment.pool_hardware.values()}.values():
                key = (cfg.predictor.model_dump_json(), hw.name)
                if key in seen:
                    continue
                seen.add(key)
                if progress:
                    print(f"loading predictors ({cfg.predictor.source}, {hw.name}; fitted on first use)",
                          file=sys.stderr)
                cached_cost_model(cfg.predictor, hw)
        except Exception:  # the point will fail with the same error, recorded
            continue


def _bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="point", desc="sweeping", dynamic_ncols=True)
