"""What-if re-evaluation of the recorded dependency graph."""

from __future__ import annotations

import pytest

from frontier_dag.analysis.run_report import RunAnalysis
from frontier_dag.analysis.what_if import what_if
from tests.analysis.handbuilt import colocated_run, pd_backpressure_run


def scenario(result, name):
    return next(row for row in result["scenarios"] if row["category"] == name)


def test_a_category_off_the_critical_path_predicts_no_gain(tmp_path):
    analysis = RunAnalysis(colocated_run(tmp_path))
    result = analysis.what_if(2.0, analysis.path())
    off = scenario(result, "transfers")  # only in replica 1's iteration for r2
    assert "note" not in off  # the category is in the run
    assert off["critical_path_share"] == 0.0
    for key in ("throughput_gain", "p99_e2e_reduction", "p99_ttft_reduction", "p99_tpot_reduction"):
        assert off[key] == 0.0
    on = scenario(result, "dense_gemm")
    assert on["critical_path_share"] > 0 and on["throughput_gain"] > 0 and on["p99_e2e_reduction"] > 0
    assert result["scenarios"][0]["rank"] == 1
    assert [r["rank"] for r in result["scenarios"]] == list(range(1, len(result["scenarios"]) + 1))


def test_a_faster_decode_frees_blocks_sooner_and_the_backpressured_request_gains(tmp_path):
    analysis = RunAnalysis(pd_backpressure_run(tmp_path))
    result = what_if(analysis.graph, 2.0)
    row = scenario(result, "attention")  # D1: 500 -> 250 µs; r0 ends at 1950 and frees r1's blocks then
    # r1: transfer 1950-2250, decode 2250-2850; makespan 3100 -> 2850; e2e (2200, 2900) -> (1950, 2650)
    assert row["throughput_gain"] == pytest.approx(3100 / 2850 - 1)
    p99 = lambda lo, hi: lo + 0.99 * (hi - lo)  # noqa: E731
    assert row["p99_e2e_ms"] == pytest.approx(p99(1950, 2650) / 1e3)
    assert row["p99_e2e_reduction"] == pytest.approx(1 - p99(1950, 2650) / p99(2200, 2900))
    kv = scenario(result, "kv_transfer")  # transfers 200 and 300 -> 100 and 150 µs
    # r0 decodes from 1100 to 2100 and frees r1's blocks then: r1 transfers 2100-2250, decodes to 2850
    assert kv["p99_e2e_ms"] == pytest.approx(p99(2100, 2650) / 1e3)
    absent = scenario(result, "moe_experts")
    assert absent["note"] == "not in this run" and absent["throughput_gain"] == 0.0


def test_factor_one_changes_nothing(tmp_path):
    analysis = RunAnalysis(pd_backpressure_run(tmp_path))
    result = what_if(analysis.graph, 1.0)
    for row in result["scenarios"]:
        assert row["throughput_gain"] == pytest.approx(0.0, abs=1e-12)
        assert row["p99_e2e_reduction"] == pytest.approx(0.0, abs=1e-12)
        assert row["batch_change"] == 0.0 and not row["resimulate"]


def test_factor_must_be_positive(tmp_path):
    analysis = RunAnalysis(pd_backpressure_run(tmp_path))
    with pytest.raises(ValueError):
        what_if(analysis.graph, 0.0)
