"""Space-filling designs that fit a time budget.

A dense grid over five shape axes wastes most of a ten-minute budget on
near-duplicates and never reaches its far corners. Instead the points come from
a scrambled Sobol sequence over the axes (log-scaled where shapes span orders of
magnitude). Every prefix of a Sobol sequence is itself spread over the whole
space, so measuring points in order and stopping when the budget is spent
leaves an even coverage at whatever density the budget allowed.

Before each point, ``run_within_budget`` estimates its wall time from the points
measured so far and skips a point that would not fit in what is left.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.stats import qmc


@dataclass(frozen=True)
class Axis:
    """One dimension of a design: a numeric range (``log`` for shapes that span orders of
    magnitude, ``integer`` for counts) or, when ``choices`` is given, a categorical axis
    whose choices get equal shares of the unit interval."""

    name: str
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def value(self, u: float) -> Any:
        """The axis value at position ``u`` in [0, 1)."""
        if self.choices:
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        # Integers take the half-open range [low, high + 1) so that both ends get a full share.
        low, high = self.low, self.high + (1 if self.integer else 0)
        if self.log:
            x = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            x = low + u * (high - low)
        return min(int(x), int(self.high)) if self.integer else x


@dataclass(frozen=True)
class Space:
    axes: tuple[Axis, ...]

    def points(self, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """The first ``n`` points of a scrambled Sobol sequence, as axis name -> value."""
        if n <= 0:
            return []
        # Sobol balance properties hold for powers of two; draw one and keep the prefix.
        draw = 2 ** math.ceil(math.log2(n))
        unit = qmc.Sobol(len(self.axes), scramble=True, seed=seed).random(draw)[:n]
        return [{a.name: a.value(u) for a, u in zip(self.axes, row, strict=True)} for row in unit]


class CostEstimator:
    """Predicts a point's wall time from its work (a FLOP/byte proxy, see ``case.work``).

    The estimate takes the measured point of nearest work (in log scale) and scales
    its wall time linearly with work when the new point has more, not down when it
    has less. Fixed overheads (launches, synchronisation, warm-up) make wall time grow
    slower than linearly in work, so this errs on the side of spending less than the
    budget rather than more. Before any measurement there is no estimate.
    """

    def __init__(self) -> None:
        self._work: list[float] = []
        self._wall: list[float] = []

    def observe(self, work: float, wall_s: float) -> None:
        key = math.log(max(work, 1.0))
        i = bisect_left(self._work, key)
        self._work.insert(i, key)
        self._wall.insert(i, wall_s)

    def predict(self, work: float) -> float | None:
        if not self._work:
            return None
        key = math.log(max(work, 1.0))
        i = bisect_left(self._work, key)
        nearest = min((j for j in (i - 1, i) if 0 <= j < len(self._work)),
                      key=lambda j: abs(self._work[j] - key))
        return self._wall[nearest] * max(1.0, math.exp(key - self._work[nearest]))

    @property
    def cheapest_s(self) -> float:
        return min(self._wall) if self._wall else 0.0


class HasWork(Protocol):
    work: float


@dataclass
class BudgetReport:
    """What a budgeted run did: how many points ran and were skipped, and how long it took."""

    measured: int = 0
    skipped: int = 0
    elapsed_s: float = 0.0
    stopped_by: str = "design exhausted"
    walls_s: list[float] = field(default_factory=list)


def run_within_budget(
    cases: Iterable[HasWork],
    run: Callable[[Any], bool],
    budget_s: float,
    *,
    max_points: int | None = None,
    clock: Callable[[], float] | None = None,
    agree: Callable[[bool], bool] = lambda go: go,
    on_point: Callable[[BudgetReport], None] | None = None,
) -> BudgetReport:
    """Run ``run(case)`` for each case, in order, while the budget lasts.

    A case whose estimated wall time exceeds the remaining budget is skipped (a later,
    cheaper one may still fit); the run stops when the budget is spent, when even the
    cheapest point seen would not fit, or after ``max_points`` measurements. ``run``
    returns False when it could not measure the case (counted as skipped). ``agree``
    lets several processes follow one process's decision (collectives: rank 0 decides).
    """
    clock = clock or time.monotonic  # looked up per call, so a test can stand in a clock
    report = BudgetReport()
    estimator = CostEstimator()
    start = clock()
    for case in cases:
        remaining = budget_s - (clock() - start)
        if max_points is not None and report.measured >= max_points:
            report.stopped_by = "max points"
            break
        if not agree(remaining > estimator.cheapest_s):
            report.stopped_by = "budget"
            break
        guess = estimator.predict(case.work)
        if not agree(guess is None or guess <= remaining):
            report.skipped += 1
            continue
        t0 = clock()
        ok = run(case)
        wall = clock() - t0
        estimator.observe(case.work, wall)
        if ok:
            report.measured += 1
            report.walls_s.append(wall)
        else:
            report.skipped += 1
        report.elapsed_s = clock() - start
        if on_point is not None:
            on_point(report)
    report.elapsed_s = clock() - start
    return report


def coverage(points: Sequence[dict[str, Any]], space: Space, bins: int = 4) -> dict[str, float]:
    """Per numeric axis, the fraction of ``bins`` equal-width bins (in the axis's own,
    possibly log, scale) that hold at least one point; per categorical axis, the fraction
    of its choices that occur. 1.0 everywhere means every region was reached."""
    result = {}
    for axis in space.axes:
        values = [p[axis.name] for p in points]
        if axis.choices:
            result[axis.name] = len(set(values) & set(axis.choices)) / len(axis.choices)
            continue
        scale = np.log if axis.log else np.asarray
        low, high = scale(axis.low), scale(axis.high + (1 if axis.integer else 0))
        u = (scale(np.asarray(values, dtype=float)) - low) / (high - low)
        result[axis.name] = len(set(np.clip((u * bins).astype(int), 0, bins - 1))) / bins
    return result
