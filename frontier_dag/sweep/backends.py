"""Where points run: local processes (default) or a Ray cluster. A backend takes the tasks
and yields ``(task, result)`` as each finishes, keeping at most ``workers`` in flight;
closing the generator (an interrupt) stops what is still running."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from frontier_dag.errors import FrontierDagError
from frontier_dag.sweep.worker import init_worker, run_point

Task = dict[str, Any]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def crashed(message: str) -> dict[str, Any]:
    return {"status": "failed", "reason": message, "summary": None, "wall_s": None}


def run_local(tasks: Iterable[Task], workers: int | None = None) -> Iterator[tuple[Task, dict[str, Any]]]:
    """Run tasks on a pool of ``workers`` local processes (spawned, so nothing of the driver's
    state leaks into them; they die with the driver, see ``init_worker``). A worker that dies (killed, out of memory) fails the points it
    was running, and a fresh pool takes the rest."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    workers = workers or default_workers()
    context = multiprocessing.get_context("spawn")
    pending = deque(tasks)
    running: dict[Any, Task] = {}

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker,
                                   initargs=(os.getpid(),))

    pool, broken = new_pool(), False
    try:
        while pending or running:
            if broken and not running:
                pool.shutdown(wait=True)
                pool, broken = new_pool(), False
            while pending and not broken and len(running) < workers:
                task = pending.popleft()
                running[pool.submit(run_point, task)] = task
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken = True
                    result = crashed("the worker process died while running this point (killed, or out of "
                                     "memory?); rerun with --resume --retry-failed")
                yield task, result
    finally:
        _stop(pool)


def _stop(pool) -> None:
    """Stop a process pool now: cancel what waits and terminate the workers we started."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


def run_ray(tasks: Iterable[Task], workers: int | None = None,
            address: str | None = None) -> Iterator[tuple[Task, dict[str, Any]]]:
    """Run tasks as Ray tasks (one CPU each). Without ``address`` a local Ray instance is
    started (with ``workers`` CPUs) and stopped at the end; with one (``auto``,
    ``ray://head:10001``) the sweep joins that cluster, whose nodes need frontier-dag installed."""
    try:
        import ray
    except ImportError:
        raise FrontierDagError("--backend ray needs Ray: pip install 'frontier-dag[ray]' "
                               "(or pip install 'ray>=2.9')") from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning"}
        if address is None:
            kwargs["num_cpus"] = workers or default_workers()
        ray.init(address=address, **kwargs)
    remote = ray.remote(num_cpus=1, max_retries=0)(run_point)
    capacity = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending = deque(tasks)
    running: dict[Any, Task] = {}
    try:
        while pending or running:
            while pending and len(running) < capacity:
                task = pending.popleft()
                running[remote.remote(task)] = task
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                task = running.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # a lost worker or node fails this point only
                    result = crashed(f"Ray could not run this point: {type(exc).__name__}: {exc}")
                yield task, result
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


def run_tasks(tasks: Iterable[Task], backend: str, workers: int | None = None,
              address: str | None = None) -> Iterator[tuple[Task, dict[str, Any]]]:
    if backend == "local":
        if address:
            raise FrontierDagError("--address is for --backend ray")
        return run_local(tasks, workers)
    if backend == "ray":
        return run_ray(tasks, workers, address)
    raise FrontierDagError(f"--backend {backend!r}: use local or ray")
