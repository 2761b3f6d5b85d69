"""Running a sweep: expand the points, record the ones that cannot run, resume from what
the directory already holds, and run the rest on a backend, recording each as it finishes."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frontier_dag.errors import FrontierDagError
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
    #: why points of this run did not finish: {status, reason, points}, the most frequent first
    problems: list[dict[str, Any]] = field(default_factory=list)
    untraced: int = 0  # points whose workflow does not trace

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ran(self) -> int:
        """Points of this run that were simulated to the end or stopped early on purpose."""
        return self.counts.get("ok", 0) + self.counts.get("early_stopped", 0)


def run_sweep(sweep: Sweep, out: str | Path, *, backend: str = "local", workers: int | None = None,
              address: str | None = None, resume: bool = False, retry_failed: bool = False,
              progress: bool = True, dry_run: bool = False, extend: bool = False,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> SweepReport:
    """Run ``sweep`` into the directory ``out``. ``on_record`` sees each record as it is
    written. Ctrl-C stops the running points and returns with ``interrupted`` set; what
    finished is kept, and ``resume`` continues from there. ``resume`` refuses a directory
    that holds another sweep unless ``extend``."""
    started = time.perf_counter()
    out = Path(out)
    store.prepare(out, resume or extend)
    spec = sweep.to_dict()
    earlier = store.check_same_sweep(out, spec, sweep.source, extend) if out.is_dir() else []
    expansion = expand(sweep)
    report = SweepReport(out=str(out), points=len(expansion.points), grid=expansion.grid,
                         excluded=expansion.excluded, duplicates=expansion.duplicates)
    if dry_run:
        records, _, problems = _plan(sweep, out, expansion.points, retry_failed, report, record=None)
        report.problems = _problems(records, problems)
        return report
    out.mkdir(parents=True, exist_ok=True)
    with store.locked(out):
        sid = store.sweep_id(spec)
        store.write_spec(out, spec, [i for i in earlier if i != sid])
        records: dict[str, dict[str, Any]] = {}

        def record(point: Point, result: dict[str, Any]) -> dict[str, Any]:
            entry = records[point.id] = _record(point, result, sid)
            store.write_record(out, entry)
            _count(report, entry)
            if on_record:
                on_record(entry)
            return entry

        records, tasks, problems = _plan(sweep, out, expansion.points, retry_failed, report, record, records)
        _run(sweep, tasks, records, problems, report, out, backend, workers, address, progress, record)
    report.problems = _problems(records, problems)
    report.wall_s = time.perf_counter() - started
    return report


def _plan(sweep: Sweep, out: Path, points: list[Point], retry_failed: bool, report: SweepReport,
          record: Callable | None, records: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Skip the points recorded in ``out``, check the others (``invalid``, ``pruned``, a
    workflow that does not trace) and return the records, the tasks to run and the ids of
    the points that cannot run. ``record`` None: count only (a dry run)."""
    records = records if records is not None else {}
    records.update(store.read_records(out) if out.is_dir() else {})
    problems = []
    todo = []
    for point in points:
        done = records.get(point.id)
        if done is not None and not (retry_failed and done["status"] == "failed"):
            report.resumed += 1
        else:
            todo.append(point)
    checked = []
    for point in todo:
        verdict = check(point.config, sweep.base_dir, _source(sweep, point))
        checked.append((point, verdict))
    untraced = trace_failures(sweep, [p for p, v in checked if v is None])
    tasks = []
    for point, verdict in checked:
        if verdict is None and point.id in untraced:
            verdict = ("invalid", untraced[point.id])
            report.untraced += 1
        if verdict is None:
            tasks.append(_task(sweep, point))
            continue
        result = {"status": verdict[0], "reason": verdict[1], "summary": None, "wall_s": None}
        if record is None:
            entry = records[point.id] = _record(point, result, "")
            _count(report, entry)
        else:
            record(point, result)
        problems.append(point.id)
    report.to_run = len(tasks)
    return records, tasks, problems


def trace_failures(sweep: Sweep, points: list[Point]) -> dict[str, str]:
    """Trace one config of each distinct workflow (its name, path and parameters, on the
    same pools) and return, for every point whose workflow does not trace, why."""
    from frontier_dag.dsl import trace_config

    groups: dict[str, list[Point]] = {}
    for point in points:
        pools = (point.config.get("cluster") or {}).get("pools") or {}
        key = json.dumps([point.config.get("workflow"), sorted((str(n), str((p or {}).get("role")))
                                                              for n, p in pools.items())], sort_keys=True, default=str)
        groups.setdefault(key, []).append(point)
    failed = {}
    for members in groups.values():
        first = members[0]
        try:
            trace_config(*point_config(first.config, sweep.base_dir, _source(sweep, first)))
        except FrontierDagError as exc:
            reason = f"workflow: {exc}"
        except Exception as exc:  # an error inside a user's workflow file
            reason = f"workflow: {type(exc).__name__}: {exc}"
        else:
            continue
        failed.update(dict.fromkeys((p.id for p in members), reason))
    return failed


def _run(sweep: Sweep, tasks: list[dict[str, Any]], records: dict[str, dict[str, Any]], problems: list[str],
         report: SweepReport, out: Path, backend: str, workers: int | None, address: str | None, progress: bool,
         record: Callable) -> None:
    """Run the tasks, recording each point as it finishes; results.parquet at the end."""
    if tasks:
        warm_predictors(sweep, tasks, progress)
    by_id = {t["point_id"]: t["point"] for t in tasks}
    bar = _bar(len(tasks)) if progress and tasks else None
    results = run_tasks([{k: v for k, v in t.items() if k != "point"} for t in tasks], backend, workers,
                        address) if tasks else iter(())
    last_merge = 0.0
    try:
        for task, result in results:
            entry = record(by_id[task["point_id"]], result)
            if entry["status"] not in ("ok", "early_stopped"):
                problems.append(entry["point_id"])
            if bar is not None:
                bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())), refresh=False)
                bar.update(1)
            if time.perf_counter() - last_merge > MERGE_EVERY_S:
                store.write_results(out, records.values())
                last_merge = time.perf_counter()
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if hasattr(results, "close"):
            results.close()
        if bar is not None:
            bar.close()
        store.write_results(out, records.values())


def _problems(records: dict[str, dict[str, Any]], ids: list[str], limit: int = 8) -> list[dict[str, Any]]:
    """The reasons points of this run did not run, grouped: reasons that differ only in
    numbers (GiB, tokens, point ids) count as one, shown by their first example."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for pid in ids:
        entry = records[pid]
        reason = _reason(str(entry.get("reason") or "no reason recorded"))
        key = (entry["status"], re.sub(r"[0-9a-f]{12}|\d+(\.\d+)?", "#", reason))
        group = groups.setdefault(key, {"status": entry["status"], "reason": reason, "points": 0})
        group["points"] += 1
    return sorted(groups.values(), key=lambda g: -g["points"])[:limit]


def _reason(reason: str) -> str:
    """A point's reason without the ``SWEEP: point ID:`` that every config error starts with."""
    return re.sub(r"^(workflow: )?\S.*?: point [0-9a-f]{12}: ", r"\1", reason)


def _source(sweep: Sweep, point: Point) -> str:
    return f"{sweep.source}: point {point.id}"


def _task(sweep: Sweep, point: Point) -> dict[str, Any]:
    return {"point_id": point.id, "point": point, "config": point.config, "source": _source(sweep, point),
            "base_dir": str(sweep.base_dir) if sweep.base_dir else None,
            "early_stop": sweep.early_stop.model_dump() if sweep.early_stop else None}


def _record(point: Point, result: dict[str, Any], sid: str) -> dict[str, Any]:
    """One row of results.parquet: the point (status, axes, config) and its flattened summary."""
    record: dict[str, Any] = {
        "point_id": point.id, "sweep_id": sid, "status": result["status"], "reason": result.get("reason"),
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


def _count(report: SweepReport, entry: dict[str, Any]) -> None:
    report.counts[entry["status"]] = report.counts.get(entry["status"], 0) + 1


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
