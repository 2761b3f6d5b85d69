"""Running one point of a sweep, in whatever process the backend chose: an optional
early-stop probe on the first requests, then the full simulation. Every error becomes a
``failed`` result; nothing a point does stops the others."""

from __future__ import annotations

import copy
import time
import traceback
from pathlib import Path
from typing import Any

from frontier_dag.sweep.spec import EarlyStopConfig


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """``task``: ``config`` (a run config mapping), ``base_dir``, ``source`` and ``early_stop``
    (a mapping or None). Returns ``status`` (``ok``, ``early_stopped`` or ``failed``),
    ``reason``, ``wall_s``, ``cpu_s`` (this process's CPU time) and the run's ``summary``
    (None when it failed)."""
    started, cpu = time.perf_counter(), time.process_time()
    try:
        status, reason, summary = _run(task)
    except Exception as exc:  # a point's failure is recorded, not raised
        tail = "".join(traceback.format_exception(exc)[-3:]).strip()
        status, reason, summary = "failed", f"{type(exc).__name__}: {exc}", None
        return {"status": status, "reason": reason, "traceback": tail, "summary": summary,
                "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}
    return {"status": status, "reason": reason, "summary": summary, "wall_s": time.perf_counter() - started,
            "cpu_s": time.process_time() - cpu}


def _run(task: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    from frontier_dag.sim.assembly import assemble
    from frontier_dag.sim.run import simulate
    from frontier_dag.sweep.prune import point_config

    base_dir = Path(task["base_dir"]) if task.get("base_dir") else None
    cfg, origin = point_config(task["config"], base_dir, task["source"])
    if task.get("early_stop"):
        stop = EarlyStopConfig.model_validate(task["early_stop"])
        total, warmup = cfg.workload.num_requests, cfg.workload.warmup_requests
        n = stop.slice_size(total, warmup)
        if n < total:
            probe = copy.deepcopy(task["config"])
            probe.setdefault("workload", {})["num_requests"] = n
            summary = simulate(assemble(*point_config(probe, base_dir, task["source"])), progress=False,
                               attribute=False).summary
            ttft = summary["ttft_ms"][stop.percentile]
            limit = stop.margin * cfg.slo.ttft_ms
            if ttft is not None and ttft > limit:
                return "early_stopped", (f"{stop.percentile} TTFT of the first {n - warmup} of {total - warmup} "
                                         f"measured requests is {ttft:,.0f} ms > {stop.margin:g} x the "
                                         f"{cfg.slo.ttft_ms:g} ms SLA"), summary
    return "ok", None, simulate(assemble(cfg, origin), progress=False, attribute=False).summary


def init_worker(parent: int) -> None:
    """Worker process initializer: Ctrl-C is the driver's to handle (it stops the workers),
    and the worker dies with the driver ``parent``, however the driver ends (SIGTERM,
    SIGKILL, a crash): at once on Linux (the parent-death signal), within a second
    elsewhere (a thread watching the parent's pid)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def die_with_parent(parent: int, period_s: float = 1.0) -> None:
    import contextlib
    import os
    import sys
    import threading

    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):  # the watchdog below still stops the worker
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        os._exit(1)

    if os.getppid() != parent:  # the driver died before this worker got here
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
