"""Collectives through torch.distributed: all_reduce, all_gather, reduce_scatter, all_to_all.

One process per device, NCCL across the GPUs of this machine; with a single GPU
there is nothing to measure and the run is skipped with a note. On the CPU the
same code runs over gloo between ``world_size`` processes (default 2): the rows are
labelled ``impl=gloo`` and say nothing about GPUs, but they exercise the whole path.

``bytes`` is the largest buffer a rank touches, as in nccl-tests: the reduced tensor
of all_reduce, the gathered output of all_gather, the input of reduce_scatter and
the send buffer of all_to_all. Groups are the first ``group_size`` ranks, for every
power of two up to the world size. Each repeat starts behind a barrier of the group
and the repeat's time is the slowest member's, as a collective finishes only when
its slowest rank does. Rank 0 runs the budget estimator and the other ranks follow
its decisions, so that every rank measures the same points. Buffers hold the first
``--dtype`` (bf16); the tables have no dtype column, a collective's time being set
by its bytes.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from frontier_dag.cost.queries import COLLECTIVE_FAMILIES

from .case import Case, Context, work
from .design import Axis, BudgetReport, Space, run_within_budget
from .device import torch_dtype
from .timing import TimerSettings, summarize

DTYPES = ("bf16", "fp16", "fp32")


def default_dtypes(device: str) -> tuple[str, ...]:
    return ("bf16",)


def group_sizes(world: int) -> tuple[int, ...]:
    sizes = [g for g in (2, 4, 8, 16, 32, 64) if g < world]
    return (*sizes, world)


def space(ctx: Context, world: int) -> Space:
    return Space((
        Axis("op", choices=COLLECTIVE_FAMILIES),
        Axis("bytes", 256 if ctx.quick else 1 << 10, 1 << 16 if ctx.quick else 1 << 30, log=True, integer=True),
        Axis("group_size", choices=group_sizes(world)),
    ))


def _buffers(op: str, nbytes: int, group: int, dtype: Any, device: str) -> tuple[Any, Any, int]:
    """(input, output, bytes actually used) for one rank; sizes rounded to whole elements per rank."""
    elem = dtype.itemsize
    per_rank = max(1, nbytes // (elem * group))
    numel = per_rank * group
    big = torch.ones(numel, dtype=dtype, device=device)
    if op == "all_gather":
        return big.new_ones(per_rank), big, numel * elem
    if op == "reduce_scatter":
        return big, big.new_empty(per_rank), numel * elem
    return big, (big if op == "all_reduce" else torch.empty_like(big)), numel * elem


def _call(op: str, inp: Any, out: Any, group: Any):
    if op == "all_reduce":
        return lambda: dist.all_reduce(out, group=group)
    if op == "all_gather":
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return lambda: gather(out, inp, group=group)
    if op == "reduce_scatter":
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        return lambda: scatter(out, inp, group=group)
    return lambda: dist.all_to_all_single(out, inp, group=group)


def _time(call, group: Any, device: str, settings: TimerSettings, repeats: int) -> Any:
    """Per-repeat times of ``call`` on this rank, then the slowest member's, per repeat."""
    cuda = device == "cuda"
    for _ in range(settings.warmup):
        call()
    samples = []
    events = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        dist.barrier(group=group)
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            call()
            end.record()
            events.append((begin, end))
        else:
            t0 = time.perf_counter_ns()
            call()
            samples.append((time.perf_counter_ns() - t0) / 1e3)
    if cuda:
        torch.cuda.synchronize()
        samples = [b.elapsed_time(e) * 1e3 for b, e in events]
    slowest = torch.tensor(samples, dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX, group=group)
    return summarize(slowest.cpu().tolist())


def _runnable_ops(ctx: Context, impl: str) -> tuple[str, ...]:
    """The collectives the backend supports, found by running each once on the world group."""
    ok = []
    for op in COLLECTIVE_FAMILIES:
        try:
            inp, out, _ = _buffers(op, 1024, dist.get_world_size(), torch.float32, ctx.device)
            _call(op, inp, out, None)()
            ok.append(op)
        except Exception as exc:  # a capability probe: any failure means "not here"
            ctx.note(f"collective {op} skipped: {impl} cannot run it ({type(exc).__name__})")
    return tuple(ok)


def _rank_main(rank: int, world: int, backend: str, settings: dict[str, Any], port: int, result: str, progress) -> None:
    device = settings["device"]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    loopback = _loopback_interface()
    if loopback:  # the ranks share this machine; gloo would otherwise pick the hostname's interface
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback)
    if device == "cuda":
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(1)  # the ranks share the CPU
    timeout = timedelta(seconds=60) if settings["quick"] else timedelta(minutes=5)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout,
                            device_id=torch.device("cuda", rank) if device == "cuda" else None)
    try:
        rows, report, notes = _measure(rank, world, backend, settings, progress)
        if rank == 0:
            Path(result).write_bytes(pickle.dumps((rows, report, notes)))
    finally:
        dist.destroy_process_group()


def _measure(rank: int, world: int, impl: str, settings: dict[str, Any], progress):
    device, quick, budget_s = settings["device"], settings["quick"], settings["budget_s"]
    timer_settings = TimerSettings.quick() if quick else TimerSettings()
    repeats = timer_settings.min_repeats if quick else 20  # fixed: every rank must run the same count
    ctx = Context(torch, device, quick, tuple(settings["dtypes"]), np.random.default_rng(settings["seed"]), timer=None)
    groups = {g: dist.new_group(list(range(g))) for g in group_sizes(world)}
    ops = _runnable_ops(ctx, impl)
    flag = torch.zeros(1, device=device)

    def agree(go: bool) -> bool:
        flag.fill_(float(go))
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    dtype = torch_dtype(torch, ctx.dtypes[0])
    rows: list[dict[str, Any]] = []

    def case(point: dict[str, Any]) -> Case:
        op, g = point["op"], point["group_size"]

        def build():
            row = {"bytes": 0, "group_size": g, "placement": "intra_node", "impl": impl}
            if rank >= g:
                return None, row  # not a member: idle while the group measures
            inp, out, row["bytes"] = _buffers(op, point["bytes"], g, dtype, device)
            return _call(op, inp, out, groups[g]), row

        return Case(op, work(0.0, 2.0 * point["bytes"]), "torch.distributed", build)

    def run(case: Case) -> bool:
        call, row = case.build()
        if call is not None:
            group = groups[row["group_size"]]
            timing = _time(call, group, device, timer_settings, repeats)
            rows.append({"family": case.family, **row, "latency_us": timing.median_us,
                         "latency_std_us": timing.std_us, "repeats": timing.repeats, "method": case.method})
        return True

    points = space(ctx, world).points(settings["pool"], settings["seed"])
    cases = (case(p) for p in points if p["op"] in ops)
    on_point = (lambda r: progress(r, budget_s)) if (progress is not None and rank == 0) else None
    report = run_within_budget(cases, run, budget_s, max_points=settings["max_points"], agree=agree,
                               on_point=on_point)
    return rows, report, ctx.notes


def _loopback_interface() -> str | None:
    try:
        return next((name for _, name in socket.if_nameindex() if name.startswith("lo")), None)
    except OSError:
        return None


def _picklable(value):
    try:
        pickle.dumps(value)
    except Exception:  # a closure over a progress bar: the ranks run without it
        return None
    return value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def profile(settings: dict[str, Any], world_size: int | None, notes: list[str], progress=None):
    """Measure collectives between the devices of this machine.

    Returns (rows, report, backend); no rows, and a note, when there is only one GPU.
    """
    if settings["device"] == "cuda":
        world, backend = world_size or torch.cuda.device_count(), "nccl"
        if world < 2:
            notes.append(f"collective skipped: {torch.cuda.device_count()} GPU visible; collectives need two "
                         "or more (torch.distributed over NCCL between this machine's GPUs)")
            return [], BudgetReport(stopped_by="skipped: one GPU"), backend
    else:
        world, backend = world_size or 2, "gloo"
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rank0.pkl"
        # spawned, not forked: CUDA cannot run in a forked child, and a child forked from a
        # process whose OpenMP threads have run can hang in its first parallel region
        torch.multiprocessing.start_processes(
            _rank_main, nprocs=world, join=True, start_method="spawn",
            args=(world, backend, settings, _free_port(), str(result), _picklable(progress)))
        rows, report, rank_notes = pickle.loads(result.read_bytes())
    notes.extend(n for n in rank_notes if n not in notes)
    return rows, report, backend
