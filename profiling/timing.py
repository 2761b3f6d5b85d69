"""Kernel timers: CUDA events on a GPU, the wall clock on the CPU.

Both warm up first (compilation, autotuning, allocator growth and lazy module
loading all happen in the first calls), then time each repeat separately and
report the median, which a stray slow repeat does not move, with the standard
deviation as the spread. The number of repeats adapts to the kernel: enough to
spend about ``target_s`` per point, within [min_repeats, max_repeats].

On the GPU a kernel timed right after the previous repeat finds its operands in
L2 (50 MB on an H100), which a real model with gigabytes of weights never does.
Between repeats the CUDA timer therefore writes a buffer twice the L2 size,
outside the timed region, so every repeat starts cold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Timing:
    median_us: float
    std_us: float
    repeats: int


@dataclass(frozen=True)
class TimerSettings:
    warmup: int = 3
    min_repeats: int = 5
    max_repeats: int = 100
    target_s: float = 0.03
    flush_l2: bool = True

    @classmethod
    def quick(cls) -> TimerSettings:
        """For tiny smoke-test shapes: a handful of repeats."""
        return cls(warmup=1, min_repeats=3, max_repeats=5, target_s=0.002, flush_l2=False)

    def repeats_for(self, per_call_s: float) -> int:
        if per_call_s <= 0:
            return self.max_repeats
        return max(self.min_repeats, min(self.max_repeats, math.ceil(self.target_s / per_call_s)))


def summarize(samples_us: Sequence[float]) -> Timing:
    samples = np.asarray(samples_us, dtype=float)
    return Timing(float(np.median(samples)), float(samples.std()), len(samples))


class CpuTimer:
    """Wall-clock timing of a CPU call (torch CPU ops are synchronous)."""

    def __init__(self, settings: TimerSettings) -> None:
        self.settings = settings

    def __call__(self, fn: Callable[[], Any]) -> Timing:
        start = time.perf_counter()
        for _ in range(self.settings.warmup):
            fn()
        per_call = (time.perf_counter() - start) / max(self.settings.warmup, 1)
        samples = []
        for _ in range(self.settings.repeats_for(per_call)):
            t0 = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - t0) / 1e3)
        return summarize(samples)


class CudaTimer:
    """CUDA-event timing of a call on the current GPU, with an L2 flush before each repeat.

    Each repeat is bracketed by its own pair of events; the host records them all and
    synchronises once at the end, so host-side Python does not stall the GPU between
    repeats. The flush write also keeps the GPU busy while the host enqueues the next
    repeat, which hides launch latency from the timed region.
    """

    def __init__(self, torch: Any, settings: TimerSettings, l2_bytes: int) -> None:
        self.torch = torch
        self.settings = settings
        # Twice the L2 size, so no line of the previous repeat's operands survives the write.
        self._flush = (torch.empty(max(2 * l2_bytes, 1 << 20) // 4, dtype=torch.int32, device="cuda")
                       if settings.flush_l2 else None)

    def __call__(self, fn: Callable[[], Any]) -> Timing:
        cuda = self.torch.cuda
        cuda.synchronize()
        start = time.perf_counter()
        for _ in range(self.settings.warmup):
            fn()
        cuda.synchronize()
        per_call = (time.perf_counter() - start) / max(self.settings.warmup, 1)
        events = [(cuda.Event(enable_timing=True), cuda.Event(enable_timing=True))
                  for _ in range(self.settings.repeats_for(per_call))]
        for begin, end in events:
            if self._flush is not None:
                self._flush.zero_()
            begin.record()
            fn()
            end.record()
        cuda.synchronize()
        return summarize([begin.elapsed_time(end) * 1e3 for begin, end in events])  # ms -> us


def make_timer(torch: Any, device: str, settings: TimerSettings, l2_bytes: int = 0) -> Callable[[Callable[[], Any]], Timing]:
    """The timer for ``device`` ("cuda" or "cpu")."""
    if device == "cuda":
        return CudaTimer(torch, settings, l2_bytes)
    return CpuTimer(settings)
