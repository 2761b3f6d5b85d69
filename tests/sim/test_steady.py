"""The steady window: figures that do not depend on how long the run was, Little's law on
the window, an open loop's throughput against its arrival rate, configured windows, and
runs with no steady state."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.config.run import load_run_config
from frontier_dag.errors import ConfigError
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.run import simulate
from frontier_dag.sim.steady import linear_percentiles, mser_truncation
from tests.conftest import TINY_DENSE, make_config

#: Chat-like lengths with a long tail: the drain of a short run is long against its steady part.
LENGTHS = {"prompt_tokens": {"kind": "lognormal", "mean": 1500, "cv": 0.8, "high": 8000},
           "output_tokens": {"kind": "lognormal", "mean": 120, "cv": 0.8, "high": 2000}}


def closed_loop(num_requests: int, clients: int = 64, **measure):
    workload = {"clients": clients, "num_requests": num_requests, **LENGTHS}
    if measure:
        workload["measure"] = measure
    return make_config("llama-3.1-8b", {"main": {"role": "colocated", "gpus": 1}}, "colocated", workload=workload)


@pytest.fixture(scope="module")
def runs():
    """One co-located config at three run lengths: 8, 19 and 38 requests per client."""
    return {n: simulate(assemble(closed_loop(n)), attribute=False).summary for n in (512, 1200, 2400)}


def spread(values) -> float:
    return max(values) / min(values) - 1


def test_steady_throughput_does_not_depend_on_the_run_length(runs):
    steady = [s["steady"]["output_tokens_per_s_per_gpu"] for s in runs.values()]
    whole = [s["output_tokens_per_s_per_gpu"] for s in runs.values()]
    assert spread(steady) < 0.05, steady
    # the whole-run figure includes the warm-up and the drain: it grows with the run's length
    assert spread(whole) > 0.08 and whole == sorted(whole), whole
    for s in runs.values():
        start, end = s["steady"]["start_s"], s["steady"]["end_s"]
        assert s["steady"]["chosen"] == "detected"
        assert 0 < start < end <= s["simulated_time_s"]
        assert s["steady"]["warnings"] == ""


def test_littles_law_on_the_steady_window(runs):
    s = runs[2400]["steady"]
    # closed loop without think time: every client has exactly one request in the system
    # until the last arrival, so the window (which ends there) holds exactly 64 on average
    assert s["in_flight"] == pytest.approx(64, rel=1e-9)
    # L = lambda W: completions per second times the mean time in the system
    assert s["requests_per_s"] * s["e2e_ms"]["mean"] / 1e3 == pytest.approx(64, rel=0.02)
    # goodput never exceeds throughput, and the latency tables are ordered
    assert s["goodput_requests_per_s"] <= s["requests_per_s"] + 1e-12
    assert s["ttft_ms"]["p50"] <= s["ttft_ms"]["p90"] <= s["ttft_ms"]["p99"]


def test_an_open_loop_delivers_its_arrival_rate_in_the_steady_window():
    rate, output = 40.0, 100
    cfg = make_config("llama-3.1-8b", {"main": {"role": "colocated", "gpus": 1}}, "colocated",
                      workload={"arrival": {"kind": "poisson", "rate_per_s": rate}, "num_requests": 2000,
                                "prompt_tokens": {"kind": "fixed", "value": 500},
                                "output_tokens": {"kind": "fixed", "value": output}})
    s = simulate(assemble(cfg), attribute=False).summary
    steady = s["steady"]
    # under capacity, output tokens/s = arrival rate x tokens per request (Poisson noise ~2%)
    assert steady["output_tokens_per_s"] == pytest.approx(rate * output, rel=0.04)
    assert steady["requests_per_s"] == pytest.approx(rate, rel=0.04)
    assert steady["in_flight"] == pytest.approx(steady["requests_per_s"] * steady["e2e_ms"]["mean"] / 1e3, rel=0.03)


def test_a_configured_window_is_used_as_given():
    s = simulate(assemble(closed_loop(600, start_s=2.0, end_s=6.0)), attribute=False).summary["steady"]
    assert (s["start_s"], s["end_s"]) == (2.0, 6.0) and s["chosen"] == "configured"
    assert "configured" in s["how"]
    half = simulate(assemble(closed_loop(600, start_s=2.0)), attribute=False).summary["steady"]
    assert half["start_s"] == 2.0 and half["how"].endswith("ends at the last arrival (after it the load drains)")


def test_a_run_without_a_steady_state_says_so():
    # as many requests as clients: all arrive at once, the whole run is warm-up and drain
    cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1}}, "colocated",
                      workload={"clients": 8, "num_requests": 8})
    s = simulate(assemble(cfg)).summary
    assert s["steady"]["chosen"] == "whole run"
    assert "no steady window" in s["steady"]["warnings"]
    assert s["steady"]["output_tokens_per_s"] == pytest.approx(s["output_tokens_per_s"], rel=1e-9)


def test_a_short_closed_loop_warns_that_its_latency_leans_on_the_drain():
    s = simulate(assemble(closed_loop(160, clients=64)), attribute=False).summary["steady"]
    assert s["drain_share"] > 0.25
    advice = next(w for w in s["warnings"].splitlines() if "raise workload.num_requests to about" in w)
    suggested = int(advice.rsplit(" ", 1)[1].replace(",", ""))
    assert 300 <= suggested <= 600
    assert simulate(assemble(closed_loop(suggested, clients=64)), attribute=False).summary["steady"]["warnings"] == ""


def test_mser_drops_the_transient_and_nothing_of_a_stationary_series():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, 100)
    assert mser_truncation(100 + noise) <= 10
    ramp = np.concatenate([np.linspace(0, 100, 30), 100 + noise[:70]])
    assert 20 <= mser_truncation(ramp) <= 40


def test_the_window_must_be_ordered(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: llama-3.1-8b\ncluster: {pools: {main: {role: colocated, gpus: 1}}}\n"
                    "workload: {clients: 4, measure: {start_s: 5, end_s: 3}}\n")
    with pytest.raises(ConfigError, match="measure.*start_s=5 is not before end_s=3"):
        load_run_config(path)


def test_the_summary_keeps_its_whole_run_keys(runs):
    s = runs[512]
    for key in ("throughput_tokens_per_s", "output_tokens_per_s", "output_tokens_per_s_per_gpu", "ttft_ms",
                "goodput_requests_per_s"):
        assert key in s and key in s["steady"]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 10, 11, 100, 101, 1000, 4097])
def test_linear_percentiles_are_numpys_bit_for_bit(size):
    rng = np.random.default_rng(size)
    for values in (rng.random(size) * 1000, rng.lognormal(3, 2, size), rng.integers(0, 9, size).astype(float),
                   np.round(rng.normal(100, 30, size), 3)):
        want = np.percentile(values, [50, 90, 99])
        got = linear_percentiles(values, [50, 90, 99])
        assert want.tobytes() == got.tobytes()
