"""Running a simulation: workload in, RunResult out, and the run directory on disk."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from frontier_dag.config.run import Deployment, RunConfig
from frontier_dag.sim.assembly import Assembly
from frontier_dag.sim.columns import Categories, Columns
from frontier_dag.sim.controller import GlobalController
from frontier_dag.sim.events import EventQueue
from frontier_dag.sim.run_dir import RUN_FILES, check_run_dir, write_run  # noqa: F401  (the run directory's API)
from frontier_dag.sim.run_inputs import SUMMARY_KEY, InputFile, read_inputs, recorded
from frontier_dag.sim.state import RequestTable
from frontier_dag.sim.summary import summarize
from frontier_dag.sim.workload import generate_requests
from frontier_dag.streams import stream

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class RunResult:
    """A finished run. Its tables are kept as built (``Columns``, or DataFrames for a run read
    back from disk); ``requests`` and ``iterations`` are them as DataFrames, made on first use
    so that a run that is only written to disk never imports pandas."""

    deployment: Deployment
    request_table: Columns | pd.DataFrame
    iteration_table: Columns | pd.DataFrame
    summary: dict[str, Any]
    inputs: tuple[InputFile, ...] = ()  # the files the run read (a run directory keeps copies)

    @property
    def config(self) -> RunConfig:
        return self.deployment.config

    @cached_property
    def requests(self) -> pd.DataFrame:
        """One row per request (requests.parquet)."""
        return _frame(self.request_table)

    @cached_property
    def iterations(self) -> pd.DataFrame:
        """One row per iteration (iterations.parquet)."""
        return _frame(self.iteration_table)


def _frame(table: Columns | pd.DataFrame) -> pd.DataFrame:
    return table.to_frame() if isinstance(table, Columns) else table


def simulate(assembly: Assembly, *, progress: bool = False, attribute: bool = True) -> RunResult:
    """Simulate an assembled config (``frontier_dag.sim.assembly.assemble``) to the last
    request and summarise it. ``attribute`` records each iteration's time by category for
    the run-level critical path (see docs/simulation.md)."""
    started = time.perf_counter()
    deployment, graph, cost_model = assembly.deployment, assembly.graph, assembly.cost_model
    config = deployment.config
    inputs = read_inputs(config, deployment.origin)
    requests = generate_requests(config.workload, config.seed, deployment.origin.base_dir)
    notes = check_generated(config, deployment, requests)
    table = RequestTable(requests)
    events = EventQueue()
    workload = config.workload
    closed = workload.clients is not None
    sent = 0
    # each request's turnaround after the response that sent it, drawn up front (reproducible)
    turnaround = (stream(config.seed, "turnaround").exponential(workload.turnaround_s, table.n)
                  if closed and workload.turnaround_s else None)

    def send_next(_rid: int | None = None) -> None:
        nonlocal sent
        if sent < table.n:
            rid, sent = sent, sent + 1
            table.follows_request[rid] = -1 if _rid is None else _rid
            if _rid is None:
                events.after(float(starts[rid]) if workload.ramp_s else 0.0, controller.arrive, rid)
            elif turnaround is not None:
                events.after(workload.think_time_s + float(turnaround[rid]), controller.arrive, rid)
            elif workload.think_time_s == 0:
                events.after(0.0, controller.arrive, rid)
            else:
                events.after(workload.think_time_s, controller.arrive, rid)

    controller = GlobalController(deployment, graph, cost_model, table, events,
                                  on_finish=send_next if closed else None, attribute=attribute)
    if closed:
        # the clients' first sends: all at once, or at random times within the ramp
        starts = np.sort(stream(config.seed, "client_ramp").uniform(0.0, workload.ramp_s, workload.clients))
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
    requests_table = table.to_columns()
    summary = summarize(deployment, requests_table, controller, wall)
    # what the run should not be trusted for without reading: requests beyond the model's
    # context, then what the traced strategy does not do as it says. One per line, empty when
    # none (a string, so that sweep tables hold it as they hold every other summary field)
    summary["warnings"] = "\n".join([*deployment.warnings, *notes, *graph.warnings, *controller.idle_warnings()])
    if inputs:
        summary[SUMMARY_KEY] = recorded(inputs)
    return RunResult(deployment, requests_table, _iterations(controller), summary, inputs)


def check_generated(config: RunConfig, deployment: Deployment, requests) -> list[str]:
    """The config's length checks (``check_request_lengths``) on the requests as generated:
    lognormal draws and trace rows have no bound in the config. The warnings, unless
    resolving the config already gave them."""
    from frontier_dag.config.run import check_request_lengths

    if not len(requests):
        return []
    total = requests.prompt_tokens + requests.output_tokens
    if deployment.warnings:  # said once, from the config's own bounds
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_request_lengths(config, deployment.model, int(requests.prompt_tokens.max()), int(total.max()),
                                  "generated", deployment.origin)
        return []
    return check_request_lengths(config, deployment.model, int(requests.prompt_tokens.max()), int(total.max()),
                                 "generated", deployment.origin)


def _iterations(controller: GlobalController) -> Columns:
    """iterations.parquet's columns: the log, its pool codes as the pools' names."""
    log = controller.log.to_columns()
    names = list(controller.workers)
    codes = np.full(max(w.replicas[0].pool_index for w in controller.workers.values()) + 1, -1, dtype=np.int16)
    for position, worker in enumerate(controller.workers.values()):
        codes[worker.replicas[0].pool_index] = position
    return Columns({name: Categories(codes[log["pool"]], tuple(names)) if name == "pool" else log[name]
                    for name in log})


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="req", desc="simulating", dynamic_ncols=True, leave=False)
