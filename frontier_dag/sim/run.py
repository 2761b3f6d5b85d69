"""Running a simulation: workload in, RunResult out, and the run directory on disk."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from frontier_dag.config.run import Deployment, RunConfig
from frontier_dag.cost.protocol import CostModel
from frontier_dag.errors import SimulationError
from frontier_dag.sim.controller import GlobalController
from frontier_dag.sim.events import EventQueue
from frontier_dag.sim.state import RequestTable
from frontier_dag.sim.summary import summarize
from frontier_dag.sim.workload import generate_requests


@dataclass
class RunResult:
    deployment: Deployment
    requests: pd.DataFrame
    iterations: pd.DataFrame
    summary: dict[str, Any]

    @property
    def config(self) -> RunConfig:
        return self.deployment.config


def simulate(config: RunConfig, *, cost_model: CostModel | None = None, progress: bool = False,
             attribute: bool = True) -> RunResult:
    """Simulate ``config`` to the last request and summarise it. ``attribute`` records each
    iteration's time by category for the run-level critical path (see docs/simulation.md)."""
    from frontier_dag.dsl import trace_config
    from frontier_dag.predictors.registry import cost_model_for

    started = time.perf_counter()
    deployment, graph = trace_config(config)
    cost_model = cost_model or cost_model_for(config.predictor, deployment.hardware)
    requests = generate_requests(config.workload, config.seed, config._base_dir)
    table = RequestTable(requests)
    events = EventQueue()
    workload = config.workload
    closed = workload.clients is not None
    sent = 0

    def send_next(_rid: int | None = None) -> None:
        nonlocal sent
        if sent < table.n:
            rid, sent = sent, sent + 1
            table.follows_request[rid] = -1 if _rid is None else _rid
            if _rid is None:
                events.after(float(starts[rid]) if workload.ramp_s else 0.0, controller.arrive, rid)
            elif workload.think_time_s == 0:
                events.after(0.0, controller.arrive, rid)
            else:
                events.after(workload.think_time_s, controller.arrive, rid)

    controller = GlobalController(deployment, graph, cost_model, table, events,
                                  on_finish=send_next if closed else None, attribute=attribute)
    if closed:
        # the clients' first sends: all at once, or at random times within the ramp
        starts = np.sort(np.random.default_rng([config.seed, 7919]).uniform(0.0, workload.ramp_s, workload.clients))
        for _ in range(min(workload.clients, table.n)):
            send_next()
    else:
        arrivals = table.arrival.copy()

        def arrive(rid: int) -> None:
            controller.arrive(rid)
            if rid + 1 < table.n:
                events.at(arrivals[rid + 1], arrive, rid + 1)

        if table.n:
            events.at(arrivals[0], arrive, 0)

    bar = _progress(table.n) if progress else None
    steps = 0
    while events.step():
        steps += 1
        if bar is not None and steps % 4096 == 0:
            bar.update(controller.completed - bar.n)
            bar.set_postfix_str(f"sim {events.now:,.1f}s", refresh=False)
    if bar is not None:
        bar.update(controller.completed - bar.n)
        bar.close()
    if controller.completed < table.n:
        raise controller.diagnose()
    controller.check_released()
    wall = time.perf_counter() - started
    summary = summarize(deployment, table, controller, wall)
    return RunResult(deployment, table.to_frame(), _iterations(controller, deployment), summary)


def _iterations(controller: GlobalController, deployment: Deployment) -> pd.DataFrame:
    frame = controller.log.to_frame()
    names = list(controller.workers)
    codes = np.full(max(w.replicas[0].pool_index for w in controller.workers.values()) + 1, -1, dtype=np.int16)
    for position, worker in enumerate(controller.workers.values()):
        codes[worker.replicas[0].pool_index] = position
    frame["pool"] = pd.Categorical.from_codes(codes[frame["pool"].to_numpy()], categories=names)
    return frame


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="req", desc="simulating", dynamic_ncols=True, leave=False)


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


#: The files a run directory holds.
RUN_FILES = ("summary.json", "requests.parquet", "iterations.parquet", "config.yaml", "plots", "trace.json")


def write_run(result: RunResult, out: Path, overwrite: bool = False) -> None:
    """Write summary.json, requests.parquet, iterations.parquet and the resolved config.yaml."""
    out = Path(out)
    check_run_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2, default=_json_default) + "\n")
    result.requests.to_parquet(out / "requests.parquet", index=False)
    result.iterations.to_parquet(out / "iterations.parquet", index=False)
    (out / "config.yaml").write_text(result.config.to_yaml())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
