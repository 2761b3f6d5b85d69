"""The space-filling design and the budgeted run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from frontier_dag.profiling.design import Axis, CostEstimator, Space, coverage, run_within_budget

SPACE = Space((
    Axis("kind", choices=("prefill", "decode", "mixed")),
    Axis("num_seqs", 1, 256, log=True, integer=True),
    Axis("ctx_mean", 16, 32768, log=True),
    Axis("cv", 0.1, 1.5),
    Axis("m", 1, 16384, log=True, integer=True),
))


def test_axis_maps_the_unit_interval_onto_its_range():
    log_int = Axis("n", 1, 1000, log=True, integer=True)
    assert log_int.value(0.0) == 1 and log_int.value(0.999999) == 1000
    assert log_int.value(0.5) == pytest.approx(np.sqrt(1001), abs=1)  # geometric midpoint
    assert Axis("x", 2.0, 4.0).value(0.25) == 2.5
    choices = Axis("c", choices=("a", "b", "c"))
    assert [choices.value(u) for u in (0.0, 0.34, 0.67, 0.9999)] == ["a", "b", "c", "c"]


def test_points_are_reproducible_and_within_the_axes():
    points = SPACE.points(100, seed=3)
    assert points == SPACE.points(100, seed=3)
    assert points != SPACE.points(100, seed=4)
    assert len(points) == 100
    for p in points:
        assert p["kind"] in ("prefill", "decode", "mixed")
        assert 1 <= p["num_seqs"] <= 256 and isinstance(p["num_seqs"], int)
        assert 16 <= p["ctx_mean"] <= 32768 and 0.1 <= p["cv"] <= 1.5


def test_a_short_prefix_already_covers_every_region_of_every_axis():
    # 32 points, 8 bins per axis in log scale: a Sobol prefix reaches every bin of every axis.
    cover = coverage(SPACE.points(32, seed=0), SPACE, bins=8)
    assert cover == {name: 1.0 for name in cover}
    # Independent uniform draws of the same size usually leave holes; the design must not.
    rng = np.random.default_rng(0)
    random_points = [{a.name: a.value(u) for a, u in zip(SPACE.axes, rng.random(5), strict=True)}
                     for _ in range(32)]
    assert min(coverage(random_points, SPACE, bins=8).values()) < 1.0


def test_log_axes_spread_points_over_orders_of_magnitude():
    values = np.array([p["m"] for p in SPACE.points(64, seed=0)])
    decades = np.floor(np.log10(values))
    assert set(decades) == {0, 1, 2, 3, 4}  # 1..16384 spans five decades, each is reached
    assert np.mean(values < 100) > 0.35  # a linear scale would put <1% of points below 100


def test_estimator_scales_up_linearly_and_never_down():
    est = CostEstimator()
    assert est.predict(100.0) is None
    est.observe(1e3, 0.01)
    est.observe(1e6, 0.05)
    assert est.predict(2e6) == pytest.approx(0.1)     # nearest is 1e6: 0.05 * 2
    assert est.predict(2e3) == pytest.approx(0.02)    # nearest is 1e3: 0.01 * 2
    assert est.predict(10.0) == pytest.approx(0.01)   # smaller work: no discount below the overhead
    assert est.cheapest_s == 0.01


@dataclass
class FakeCase:
    work: float


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_run_stays_within_its_budget_and_skips_what_would_not_fit():
    clock = FakeClock()
    rng = np.random.default_rng(0)
    cases = [FakeCase(float(w)) for w in 10 ** rng.uniform(2, 8, 500)]

    def run(case: FakeCase) -> bool:
        clock.now += 0.01 + 1e-8 * case.work  # overhead plus a part proportional to work
        return True

    report = run_within_budget(cases, run, 5.0, clock=clock)
    assert report.elapsed_s <= 5.0
    assert report.stopped_by == "budget"
    assert report.measured > 30 and report.skipped > 0
    assert report.measured + report.skipped < len(cases)


def test_the_first_point_runs_and_max_points_stops_the_run():
    clock = FakeClock()

    def run(case: FakeCase) -> bool:
        clock.now += 1.0
        return True

    report = run_within_budget([FakeCase(1.0)] * 10, run, 100.0, clock=clock, max_points=3)
    assert (report.measured, report.stopped_by) == (3, "max points")
    report = run_within_budget([FakeCase(1.0)] * 10, run, 0.5, clock=clock)
    assert report.measured == 1  # nothing known yet: the first point is the measurement


def test_failed_points_count_as_skipped_and_agree_overrides_local_decisions():
    clock = FakeClock()
    outcomes = iter([True, False, True, True])

    def run(case: FakeCase) -> bool:
        clock.now += 0.1
        return next(outcomes)

    report = run_within_budget([FakeCase(1.0)] * 4, run, 10.0, clock=clock)
    assert (report.measured, report.skipped) == (3, 1)
    # A follower whose leader says "stop" stops, whatever its own budget says.
    report = run_within_budget([FakeCase(1.0)] * 4, run, 10.0, clock=clock, agree=lambda go: False)
    assert (report.measured, report.stopped_by) == (0, "budget")
