"""Coverage without errors (``validate silicon --coverage-only`` / ``--convert-only``): the
systems kept as an untouched check report rows simulated out of rows, never a latency."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.validation.coverage import COVERAGE_FIELDS, coverage_record
from frontier_dag.validation.report import format_coverage, summarize_records


def test_coverage_records_and_report_hold_no_latency():
    records = [
        {"index": 0, "id": "a", "system": "b200_sxm", "backend": "vllm", "mode": "agg", "model": "m", "status": "ok",
         "reason": "", "measured_ttft_ms": 10.0, "sim_ttft_ms": 12.0, "ttft_ape": 0.2, "tpot_ape": 0.1},
        {"index": 1, "id": "b", "system": "b200_sxm", "backend": "sglang", "mode": "agg", "model": "m",
         "status": "unsupported", "reason": "no such experts", "ttft_ape": float("nan"), "tpot_ape": float("nan")},
    ]
    kept = [coverage_record(r) for r in records]
    assert all(set(r) <= set(COVERAGE_FIELDS) for r in kept)
    report = summarize_records(kept, errors=False)
    assert (report["rows_total"], report["rows_simulated"], report["coverage"]) == (2, 1, 0.5)
    assert report["partitions"]["backend"]["sglang"]["coverage"] == 0.0
    assert not any("ape" in key for key in json.dumps(report).split('"'))
    text = format_coverage(report)
    assert "backend=vllm" in text and "MAPE" not in text and "100.0%" in text


def test_convert_only_explains_rows_it_cannot_simulate(tmp_path):
    """Qwen3.5 (linear attention) rows: unsupported before any predictor is fitted."""
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(cli, ["validate", "silicon", "--system", "b300_sxm", "--model", "Qwen3.5",
                                      "--convert-only", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "rows" in result.output and "MAPE" not in result.output
    assert "linear attention" in result.output
    frame = pd.read_csv(out)
    assert (frame["status"] == "unsupported").all() and set(frame.columns) <= set(COVERAGE_FIELDS)


def test_reasons_are_counted_without_the_row_that_gave_them():
    from frontier_dag.validation.report import _reason_key

    reasons = [f"silicon row {i} (dsr1_gb200_c{i}): cluster.pools.prefill: deepseek-v3 needs 168.1 GiB of weights "
               "per GPU with tp=1, ep=1 but a gb200 GPU has 162.8 GiB usable; raise tp/ep or use more GPUs per replica"
               for i in (769, 770)]
    keys = {_reason_key(r) for r in reasons}
    assert keys == {"cluster.pools.prefill: deepseek-v3 needs 168.1 GiB of weights per GPU with tp=1, ep=1 but a "
                    "gb200 GPU has 162.8 GiB usable"}
