"""Run one operator's profiler: check the device, measure the design within the budget,
write the profile directory.

``profile`` is what ``frontier-dag profile OP`` calls; it can equally be called from
Python. The output directory is checked before anything is measured, so a run that
cannot write its rows fails in a second, not after ten minutes.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frontier_dag.errors import ProfilingError

from . import writer
from .case import Case, Context
from .design import BudgetReport, run_within_budget
from .device import DeviceInfo, check_device, device_info, require_torch
from .timing import TimerSettings, make_timer

#: CLI name -> module of frontier_dag.profiling.
OPS = {"attention": "attention", "gemm": "gemm", "grouped-gemm": "grouped_gemm",
       "collective": "collective", "elementwise": "elementwise"}
DEFAULT_BUDGET_S = 120.0
QUICK_BUDGET_S = 10.0
#: --quick measures this many points at most; a full run draws from a pool this large.
QUICK_POINTS = 64
POOL = 1 << 14
#: Per-point failures beyond this many are counted, not each noted.
MAX_FAILURE_NOTES = 3

Progress = Callable[[BudgetReport, float], None]


@dataclass
class ProfileRun:
    """The outcome of one ``profile`` call."""

    op: str
    info: DeviceInfo
    report: BudgetReport
    rows: dict[str, int]                 # family -> rows written by this run
    methods: dict[str, list[str]]        # family -> kernel methods measured
    files: list[Path]
    notes: list[str] = field(default_factory=list)


def profile(op: str, *, device: str, out: str | Path, quick: bool = False, budget_s: float | None = None,
            dtypes: Sequence[str] = (), seed: int = 0, world_size: int | None = None,
            progress: Progress | None = None) -> ProfileRun:
    """Measure ``op`` ("attention", "gemm", "grouped-gemm", "collective", "elementwise") on
    ``device`` and add the rows to the profile directory ``out``."""
    if op not in OPS:
        raise ProfilingError(f"unknown operator {op!r}; use one of {', '.join(OPS)}")
    if device == "cpu" and not quick:
        raise ProfilingError("--device cpu measures only the tiny shapes of --quick: the full designs are "
                             "GPU-sized (one GEMM point could run for minutes on a CPU). Add --quick.")
    torch = require_torch()
    check_device(torch, device)
    module = importlib.import_module(f"{__package__}.{OPS[op]}")
    dtypes = _check_dtypes(op, module, tuple(dtypes) or module.default_dtypes(device))
    out = Path(out)
    writer.check_writable(out, device_info(torch, device), _families(op))
    budget = budget_s if budget_s is not None else (QUICK_BUDGET_S if quick else DEFAULT_BUDGET_S)
    if budget <= 0:
        raise ProfilingError(f"--budget-s {budget}: the time budget must be positive")
    torch.manual_seed(seed)
    notes: list[str] = []
    started = time.monotonic()
    with _single_cpu_thread(torch, device):
        info = device_info(torch, device)
        if op == "collective":
            settings = {"device": device, "quick": quick, "budget_s": budget, "dtypes": dtypes, "seed": seed,
                        "pool": QUICK_POINTS if quick else POOL, "max_points": QUICK_POINTS if quick else None}
            rows, report, _ = module.profile(settings, world_size, notes, progress)
        else:
            settings = TimerSettings.quick() if quick else TimerSettings()
            ctx = Context(torch, device, quick, dtypes, np.random.default_rng(seed),
                          make_timer(torch, device, settings, info.l2_bytes), notes=notes)
            rows, report = _measure(module, ctx, budget, seed, progress)
    run_record = {
        "op": op, "date": writer.now(), "quick": quick, "budget_s": budget, "seed": seed, "dtypes": list(dtypes),
        "points": report.measured, "skipped": report.skipped, "wall_s": round(time.monotonic() - started, 3),
        "stopped_by": report.stopped_by, "notes": list(notes),
    }
    files = writer.write(out, rows, info, run_record)
    counts: dict[str, int] = {}
    methods: dict[str, list[str]] = {}
    for row in rows:
        counts[row["family"]] = counts.get(row["family"], 0) + 1
        if row["method"] not in methods.setdefault(row["family"], []):
            methods[row["family"]].append(row["method"])
    return ProfileRun(op, info, report, counts, methods, files, notes)


@contextmanager
def _single_cpu_thread(torch: Any, device: str) -> Iterator[None]:
    """On the CPU, measure with one thread: timings then do not swing with whatever else
    the machine runs (two threads contending with other work stall for milliseconds)."""
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _measure(module: Any, ctx: Context, budget_s: float, seed: int,
             progress: Progress | None) -> tuple[list[dict[str, Any]], BudgetReport]:
    """Measure the op's design points in order until the budget is spent. Probing the
    kernel methods (and compiling them) counts against the budget."""
    torch = ctx.torch
    start = time.monotonic()
    make = module.prepare(ctx)
    space = module.space(ctx)
    points = space.points(QUICK_POINTS if ctx.quick else POOL, seed)
    cases = (c for c in map(make, points) if c is not None)
    rows: list[dict[str, Any]] = []
    failures = 0

    def run(case: Case) -> bool:
        nonlocal failures
        try:
            call, row = case.build()
            timing = ctx.timer(call)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            # One shape the device cannot run must not cost the rest of a sweep.
            failures += 1
            if failures <= MAX_FAILURE_NOTES:
                ctx.note(f"{case.family} point failed and was skipped ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]})")
            if ctx.device == "cuda":
                torch.cuda.empty_cache()
            return False
        rows.append({"family": case.family, **row, "latency_us": timing.median_us,
                     "latency_std_us": timing.std_us, "repeats": timing.repeats, "method": case.method})
        return True

    remaining = budget_s - (time.monotonic() - start)
    on_point = (lambda report: progress(report, remaining)) if progress is not None else None
    report = run_within_budget(cases, run, remaining, max_points=QUICK_POINTS if ctx.quick else None,
                               on_point=on_point)
    if failures > MAX_FAILURE_NOTES:
        ctx.note(f"{failures} points failed in all")
    report.elapsed_s = time.monotonic() - start
    return rows, report


def _check_dtypes(op: str, module: Any, dtypes: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [d for d in dtypes if d not in module.DTYPES]
    if unknown:
        raise ProfilingError(f"--dtype {unknown[0]}: {op} measures {', '.join(module.DTYPES)}")
    return tuple(dict.fromkeys(dtypes))


def _families(op: str) -> tuple[str, ...]:
    from frontier_dag.cost.queries import ATTENTION_FAMILIES, COLLECTIVE_FAMILIES

    return {"attention": ATTENTION_FAMILIES, "gemm": ("gemm",), "grouped-gemm": ("moe_grouped_gemm",),
            "collective": COLLECTIVE_FAMILIES, "elementwise": ("elementwise",)}[op]
