"""What an operator profiler hands the runner: one measurable case per design point.

Each op module (attention, gemm, grouped_gemm, elementwise) exposes

    space(ctx) -> design.Space                      the axes of its design
    prepare(ctx) -> Callable[[point], Case | None]  picks the kernel method once per run
                                                    and maps design points to cases
    DTYPES                                          the dtypes it can measure

A case is cheap to create (no device memory); ``build`` allocates the inputs and
returns the call to time together with the profile row it measures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .timing import Timing

#: FLOPs per byte at which a kernel turns from memory- to compute-bound on a current GPU
#: (H100: 989 TFLOP/s bf16 over 3.35 TB/s is about 300).
FLOPS_PER_BYTE = 300.0


def work(flops: float, bytes_moved: float) -> float:
    """A roofline proxy for a kernel's time, in bytes: what the budget estimator scales by."""
    return max(flops / FLOPS_PER_BYTE, bytes_moved, 1.0)


@dataclass
class Case:
    """One measurement: ``build()`` -> (call to time, profile row of ``family``)."""

    family: str
    work: float
    method: str
    build: Callable[[], tuple[Callable[[], Any], dict[str, Any]]]


@dataclass
class Context:
    """Everything an op module needs to know about the run."""

    torch: Any
    device: str
    quick: bool
    dtypes: tuple[str, ...]
    rng: np.random.Generator
    timer: Callable[[Callable[[], Any]], Timing] | None  # None where an op times itself (collectives)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Record something the run should report (a method chosen, a dtype skipped)."""
        if text not in self.notes:
            self.notes.append(text)


def max_abs_error(got: Any, want: Any) -> float:
    """Largest absolute difference, in float32; used to accept a kernel method."""
    return float((got.float() - want.float()).abs().max()) if got.numel() else 0.0
