"""Simulating silicon rows, one process per worker, with the results as one record per row.

A record always says what happened: ``status`` is ``ok`` (simulated), ``unsupported``
(the row cannot be represented; ``reason`` says why) or ``failed`` (the simulation
raised; ``reason`` holds the error). Nothing is dropped.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import numpy as np

from frontier_dag.config.overheads import EngineOverheads, OverheadsFile
from frontier_dag.errors import FrontierDagError
from frontier_dag.predictors.aiconfigurator import BACKENDS
from frontier_dag.validation.convert import (
    BENCHMARK_ROUNDS,
    DATASET_PROMPTS,
    ROUNDS,
    dataset_first_pass,
    row_config,
)
from frontier_dag.validation.models import Unsupported
from frontier_dag.validation.silicon import SiliconRow

#: How the closed loop's clients start. ``burst``: all at once, as the benchmarks start (the
#: default). ``spread``: each client's first request at a random time within one request's
#: simulated duration (the mean end-to-end latency of one ``burst`` round of the row without
#: engine overheads, which is simulated first), the first round left out: the steady state of
#: clients whose phases are independent, which the measured clients are closer to
#: (docs/validation.md, "What the largest errors come from"). ``dataset``: as the benchmark
#: runs (``convert.DATASET_PROMPTS``): the clients start at once after a warm-up of two rounds
#: and send prompts from a dataset of 100 that the run reuses, with the engine's prefix cache
#: on, so a prompt sent again skips the prefill of its cached blocks. None takes anything
#: from the measurements.
PHASES = ("burst", "spread", "dataset")

def _base_record(row: SiliconRow) -> dict:
    return {"index": row.index, "id": row.id, "system": row.system, "backend": row.backend,
            "backend_version": row.backend_version, "model": row.model_path, "mode": row.mode, "isl": row.isl,
            "osl": row.osl, "concurrency": row.concurrency, "gemm_quant": row.gemm_quant, "moe_quant": row.moe_quant,
            "parallelism": row.describe(), "measured_ttft_ms": row.ttft_ms, "measured_tpot_ms": row.tpot_ms,
            "sim_ttft_ms": math.nan, "sim_tpot_ms": math.nan, "ttft_ape": math.nan, "tpot_ape": math.nan,
            "status": "ok", "reason": "", "notes": "; ".join(row.notes), "requests": 0, "iterations": 0,
            "out_of_range": 0, "wall_s": 0.0}


def benchmark_means(requests, concurrency: int, benchmark_rounds: int = BENCHMARK_ROUNDS, head: int = 0
                    ) -> tuple[float | None, float | None]:
    """Mean TTFT and TPOT (ms) of a benchmark of ``benchmark_rounds`` rounds of ``concurrency``
    requests, from the simulated ``requests`` (in the order they were sent). A benchmark's first
    round starts cold and its last one drains the server; the rounds between are the steady
    state. Here the first ``max(head, concurrency)`` requests (the cold round, or whatever
    else happens once: a dataset's first pass) and the last ``concurrency`` weigh one each and
    the ones between stand for all the benchmark's other rounds; with no round between
    simulated, or as many requests as measured, the plain means.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"ttft_ms": [90.0, 20.0, 20.0, 10.0], "tpot_ms": [5.0, 4.0, 4.0, 3.0]})
    >>> benchmark_means(frame, concurrency=1, benchmark_rounds=10)
    (26.0, 4.0)
    >>> frame = pd.DataFrame({"ttft_ms": [90.0, 50.0, 20.0, 10.0], "tpot_ms": [5.0, 4.0, 4.0, 3.0]})
    >>> benchmark_means(frame, concurrency=1, benchmark_rounds=10), benchmark_means(frame, 1, 10, head=2)
    ((38.0, 4.0), (29.0, 4.0))
    """
    n, c = len(requests), concurrency
    if n == 0:
        return None, None
    head = max(head, c)
    weights = np.ones(n)
    measured = benchmark_rounds * c
    if head + 2 * c <= n < measured and measured > head + c:
        weights[head:n - c] = (measured - head - c) / (n - head - c)
    means = []
    for column in ("ttft_ms", "tpot_ms"):
        values = requests[column].to_numpy(dtype=float)
        known = np.isfinite(values)
        means.append(float(np.average(values[known], weights=weights[known])) if known.any() else None)
    return means[0], means[1]


def simulate_row(row: SiliconRow, rounds: int = ROUNDS, phase: str = "burst",
                 benchmark_rounds: int = BENCHMARK_ROUNDS, overheads: EngineOverheads | None = None) -> dict:
    """Simulate one row and compare its mean TTFT and TPOT with the measured ones, as a benchmark
    of ``benchmark_rounds`` rounds would measure them (``benchmark_means``); ``phase``: see
    PHASES; ``overheads``: the engine's time outside the kernels (none: the kernels alone)."""
    from frontier_dag.sim.assembly import assemble
    from frontier_dag.sim.run import simulate

    record = _base_record(row)
    started = time.perf_counter()
    try:
        # spread: one burst round without overheads (the least that gives a request's duration)
        # sets the ramp, so that a calibration's moves do not draw the clients' phases anew
        dataset = DATASET_PROMPTS if phase == "dataset" else None
        converted = row_config(row, rounds=rounds if phase != "spread" else 1,
                               overheads=overheads if phase != "spread" else None, dataset=dataset)
        record["notes"] = "; ".join(converted.notes)
        result = simulate(assemble(converted.deployment), attribute=False)
        if phase == "spread":
            cycle_s = result.summary["e2e_ms"]["mean"] * 1e-3
            converted = row_config(row, rounds=rounds + 1, ramp_s=cycle_s, overheads=overheads)
            result = simulate(assemble(converted.deployment), attribute=False)
    except Unsupported as exc:
        record.update(status="unsupported", reason=str(exc))
        return record
    except FrontierDagError as exc:
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        return record
    except Exception as exc:  # a bug: keep the row and the trace, go on with the others
        where = traceback.extract_tb(exc.__traceback__)[-1]
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})")
        return record
    finally:
        record["wall_s"] = time.perf_counter() - started
    s = result.summary
    measured = result.requests.iloc[result.config.workload.warmup_requests:]
    head = dataset_first_pass(row.concurrency, DATASET_PROMPTS) if phase == "dataset" else 0
    ttft, tpot = benchmark_means(measured, row.concurrency, benchmark_rounds, head)
    record.update(sim_ttft_ms=ttft, sim_tpot_ms=tpot, requests=s["num_requests"], iterations=s["iterations"],
                  out_of_range=s["predictor_out_of_range"])
    if ttft is not None and row.ttft_ms > 0:
        record["ttft_ape"] = abs(ttft - row.ttft_ms) / row.ttft_ms
    if tpot is not None and row.tpot_ms > 0:
        record["tpot_ape"] = abs(tpot - row.tpot_ms) / row.tpot_ms
    return record


#: One simulation to run: a row, and the overheads to simulate it with (None: the kernels alone).
Job = tuple[SiliconRow, EngineOverheads | None]


def _simulate_many(jobs: list[tuple[int, Job]], rounds: int, phase: str, benchmark_rounds: int) -> list[tuple[int, dict]]:
    return [(k, simulate_row(row, rounds, phase, benchmark_rounds, overheads)) for k, (row, overheads) in jobs]


def _warm_cache(system: str, backend: str) -> None:
    """Fit (or load) the predictors of one system and engine, so that the row processes
    find them in the disk cache instead of fitting the same set side by side. A set that
    cannot be fitted is reported by each of its rows."""
    from frontier_dag.config.hardware import load_hardware
    from frontier_dag.config.run import PredictorConfig
    from frontier_dag.sim.assembly import cached_cost_model

    with contextlib.suppress(FrontierDagError):
        cached_cost_model(PredictorConfig(backend=backend), load_hardware(system))


#: Records of the simulations this process has run, by (row, overheads, rounds, phase,
#: benchmark rounds): a simulation is deterministic (the row's seed), so a calibration that
#: asks for one again (the rows without overheads that ``validate silicon`` has simulated; the
#: first Jacobian of every leave-one-model-out fit of an engine, all taken at zero) gets the
#: record instead of a second run.
_DONE: dict[tuple, dict] = {}


def _memo_key(job: Job, rounds: int, phase: str, benchmark_rounds: int) -> tuple:
    row, overheads = job
    return (row, None if overheads is None else tuple(overheads.model_dump().items()), rounds, phase,
            benchmark_rounds)


def run_jobs(jobs: Iterable[Job], *, workers: int = 2, rounds: int = ROUNDS, phase: str = "burst",
             benchmark_rounds: int = BENCHMARK_ROUNDS, progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Simulate each (row, overheads) of ``jobs`` over ``workers`` processes (1: in this
    process); ``progress`` is called with each finished record. Records come back in the
    jobs' order; a job this process has simulated before is not simulated again (``_DONE``)."""
    jobs = list(jobs)
    keys = [_memo_key(job, rounds, phase, benchmark_rounds) for job in jobs]
    todo = [k for k, key in enumerate(keys) if key not in _DONE]
    fresh = _run_jobs([jobs[k] for k in todo], workers=workers, rounds=rounds, phase=phase,
                      benchmark_rounds=benchmark_rounds, progress=progress)
    for k, record in zip(todo, fresh, strict=True):
        if record["status"] != "failed":  # a failure may be the machine's (memory): let a later call retry
            _DONE[keys[k]] = dict(record)
    known = {k: record for k, record in zip(todo, fresh, strict=True)}
    out = []
    for k, key in enumerate(keys):
        if k in known:
            out.append(known[k])
        else:
            out.append(dict(_DONE[key]))
            if progress:
                progress(out[-1])
    return out


def _run_jobs(jobs: list[Job], *, workers: int, rounds: int, phase: str, benchmark_rounds: int,
              progress: Callable[[dict], None] | None) -> list[dict]:
    records: dict[int, dict] = {}
    if workers <= 1 or len(jobs) <= 1:
        for k, (row, overheads) in enumerate(jobs):
            records[k] = simulate_row(row, rounds, phase, benchmark_rounds, overheads)
            if progress:
                progress(records[k])
        return [records[k] for k in range(len(jobs))]
    # rows of one (system, backend) together, so each process loads few predictor sets;
    # small batches keep both processes busy to the end
    order = sorted(enumerate(jobs), key=lambda kj: (kj[1][0].system, kj[1][0].backend, kj[1][0].model_path,
                                                     kj[1][0].index, kj[0]))
    batches = [order[i:i + 4] for i in range(0, len(order), 4)]
    with ProcessPoolExecutor(max_workers=min(workers, os.cpu_count() or workers, len(batches))) as pool:
        sets = sorted({(row.system, row.backend) for row, _ in jobs if row.backend in BACKENDS})
        for future in [pool.submit(_warm_cache, *key) for key in sets]:
            future.result()
        futures = [pool.submit(_simulate_many, batch, rounds, phase, benchmark_rounds) for batch in batches]
        for future in as_completed(futures):
            for k, record in future.result():
                records[k] = record
                if progress:
                    progress(record)
    return [records[k] for k in range(len(jobs))]


def run_rows(rows: Iterable[SiliconRow], *, workers: int = 2, rounds: int = ROUNDS, phase: str = "burst",
             benchmark_rounds: int = BENCHMARK_ROUNDS, progress: Callable[[dict], None] | None = None,
             overheads: OverheadsFile | None = None) -> list[dict]:
    """Simulate ``rows`` (``run_jobs``), each with its engine's entry of ``overheads`` if
    given (``OverheadsFile.entry``: its version's, else its engine's; none: the kernels
    alone). Records come back in the rows' order."""
    jobs = [(row, overheads.entry(row.backend, row.backend_version) if overheads is not None else None)
            for row in rows]
    return run_jobs(jobs, workers=workers, rounds=rounds, phase=phase, benchmark_rounds=benchmark_rounds,
                    progress=progress)


def row_dicts(rows: Iterable[SiliconRow]) -> list[dict]:
    return [asdict(r) for r in rows]
