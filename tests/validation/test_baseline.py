"""aiconfigurator's estimate beside the simulation (``validate silicon --baseline
aiconfigurator``): the arguments it gets for a row, its values on a fixture of rows of
aiconfigurator-core's silicon sample, the side-by-side arithmetic and the command.

The fixture's rows are copied from the sample (rows 1260, 2424 and 993 of
aiconfigurator-core 0.12.0's ``systems/silicon_sample.csv``, h100_sxm): Qwen3-32B on
TensorRT-LLM TP8, aggregated, 8 clients of 1024 x 128 tokens; DeepSeek-R1 on SGLang, one
TP16 prefill and one TP16 decode worker, one client of 1024 x 1024 tokens, without batch
sizes; and Qwen3-32B on SGLang, five one-GPU prefill and eleven one-GPU decode workers with
48 sequences each, which aiconfigurator says do not fit in memory (and which gives no
concurrency to simulate).
"""

from __future__ import annotations

import json
import math
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.validation import baseline
from frontier_dag.validation.baseline import AICONFIGURATOR, estimate_args, estimate_row
from frontier_dag.validation.compare import SIMULATION, Estimate, compare, format_comparison
from frontier_dag.validation.models import is_moe
from frontier_dag.validation.silicon import parse_row, read_rows

AGG = {"id": "qwen3_32b_trtllm_agg_tp8_c8", "silicon_data_source": "silicon_concurrency=8", "backend": "trtllm",
       "backend_version": "1.0.0rc3", "model_path": "Qwen/Qwen3-32B", "system": "h100_sxm", "mode": "agg",
       "isl": 1024, "osl": 128, "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8", "batch_size": 8, "tp_size": 8,
       "pp_size": 1, "moe_tp_size": 1, "moe_ep_size": 1, "silicon_ttft_ms": 135.13839175625,
       "silicon_tpot_ms": 7.0295067}
DISAGG = {"id": "deepseek_r1_sglang_disagg_1p1d_tp16_c1", "silicon_data_source": "silicon_concurrency=1",
          "backend": "sglang", "backend_version": "0.5.8", "model_path": "deepseek-ai/DeepSeek-R1",
          "system": "h100_sxm", "mode": "disagg", "isl": 1024, "osl": 1024, "gemm_quant_mode": "fp8",
          "moe_quant_mode": "fp8_block", "prefill_tp_size": 16, "prefill_pp_size": 1, "prefill_attention_dp_size": 1,
          "prefill_moe_tp_size": 16, "prefill_moe_ep_size": 1, "decode_tp_size": 16, "decode_pp_size": 1,
          "decode_attention_dp_size": 1, "decode_moe_tp_size": 16, "decode_moe_ep_size": 1,
          "silicon_ttft_ms": 211.09139260370284, "silicon_tpot_ms": 9.13351670107167}
OOM = {"id": "qwen3_32b_sglang_disagg_5p11d_tp1", "silicon_data_source": "", "backend": "sglang",
       "backend_version": "0.5.6.post2", "model_path": "Qwen/Qwen3-32B", "system": "h100_sxm", "mode": "disagg",
       "isl": 4000, "osl": 1000, "gemm_quant_mode": "fp8_block", "moe_quant_mode": "fp8_block",
       "prefill_batch_size": 1, "prefill_num_workers": 5, "prefill_tp_size": 1, "prefill_pp_size": 1,
       "prefill_attention_dp_size": 1, "prefill_moe_tp_size": 1, "prefill_moe_ep_size": 1, "decode_batch_size": 48,
       "decode_num_workers": 11, "decode_tp_size": 1, "decode_pp_size": 1, "decode_attention_dp_size": 1,
       "decode_moe_tp_size": 1, "decode_moe_ep_size": 1, "silicon_ttft_ms": 566.66623309375,
       "silicon_tpot_ms": 22.31141111796171}
#: aiconfigurator 0.12.0's TTFT and TPOT (ms) of AGG and DISAGG, from its ``current`` data.
EXPECTED = {0: (72.01416592549998, 7.77262135610903), 1: (313.598, 12.263)}


@pytest.fixture
def fixture_csv(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame([AGG, DISAGG, OOM]).to_csv(path, index=False)
    return path


def test_arguments_are_the_simulated_configuration():
    args, notes = estimate_args(parse_row(0, AGG, moe=False), moe=False)
    assert args["backend_version"] == "current" and args["batch_size"] == 8 and args["tp_size"] == 8
    assert "moe_tp_size" not in args and not notes  # a dense model's MoE columns are not passed
    args, notes = estimate_args(parse_row(1, DISAGG, moe=True), moe=True)
    assert (args["prefill_batch_size"], args["decode_batch_size"]) == (1, 1)  # from the concurrency
    assert (args["prefill_num_workers"], args["decode_num_workers"]) == (1, 1)
    assert args["decode_moe_tp_size"] == 16 and "batch sizes from the concurrency" in notes[0]
    row = parse_row(2, {**DISAGG, "silicon_data_source": "", "decode_attention_dp_size": 8, "decode_tp_size": 2},
                    moe=True)
    with pytest.raises(baseline.NotEstimable, match="neither its batch sizes nor its concurrency"):
        estimate_args(row, moe=True)
    args, notes = estimate_args(parse_row(3, {**AGG, "model_path": "meta-llama/Llama-3.1-70B"}, moe=False), moe=False)
    assert args["model_path"] == "meta-llama/Meta-Llama-3.1-70B" and "bundled" in notes[0]


def test_estimates_and_coverage_of_the_fixture(fixture_csv):
    rows = read_rows(fixture_csv, is_moe=is_moe)
    estimates = baseline.estimate_rows(rows, is_moe)
    for index, (ttft, tpot) in EXPECTED.items():
        got = estimates[index]
        assert got["aic_status"] == "ok", got["aic_reason"]
        assert (got["aic_ttft_ms"], got["aic_tpot_ms"]) == pytest.approx((ttft, tpot), rel=1e-6)
        row = rows[index]
        assert got["aic_ttft_ape"] == pytest.approx(abs(ttft - row.ttft_ms) / row.ttft_ms, rel=1e-6)
        assert got["aic_tpot_ape"] == pytest.approx(abs(tpot - row.tpot_ms) / row.tpot_ms, rel=1e-6)
    refused = estimates[2]
    assert refused["aic_status"] == "unsupported" and "OOM" in refused["aic_reason"]
    assert math.isnan(refused["aic_ttft_ms"])
    records = [{"index": r.index, "id": r.id, "model": r.model_path, "mode": r.mode, "status": "ok", "reason": "",
                "ttft_ape": 0.1, "tpot_ape": 0.1, **estimates[r.index]} for r in rows]
    report = compare(records, [SIMULATION, AICONFIGURATOR], partitions=("mode",))
    assert report["all"]["aiconfigurator"]["rows_covered"] == 2
    assert report["all"]["aiconfigurator"]["coverage"] == pytest.approx(2 / 3)
    assert report["partitions"]["mode"]["disagg"]["aiconfigurator"]["coverage"] == 0.5
    assert [r["index"] for r in report["not_covered"]["aiconfigurator"]] == [2]


def test_a_row_without_data_is_kept_with_the_reason():
    row = parse_row(0, {**AGG, "model_path": "openai/gpt-oss-120b", "backend": "vllm", "gemm_quant_mode": "nvfp4",
                        "moe_quant_mode": "nvfp4", "batch_size": 4, "moe_tp_size": 8}, moe=True)
    got = estimate_row(row, moe=True)
    assert got["aic_status"] == "unsupported"
    assert "GEMM perf data missing for quant 'nvfp4_wo' at aiconfigurator_core/systems" in got["aic_reason"]


def _record(index, model, status, ttft, tpot, aic_status, aic_ttft, aic_tpot):
    return {"index": index, "id": f"r{index}", "model": model, "status": status, "reason": "" if status == "ok" else "x",
            "ttft_ape": ttft, "tpot_ape": tpot, "aic_status": aic_status,
            "aic_reason": "" if aic_status == "ok" else "no data", "aic_ttft_ape": aic_ttft, "aic_tpot_ape": aic_tpot}


def test_side_by_side_arithmetic():
    nan = math.nan
    records = [_record(0, "a", "ok", 0.1, 0.2, "ok", 0.3, 0.1),
               _record(1, "a", "ok", 0.5, 0.2, "ok", 0.1, 0.2),       # a TPOT tie
               _record(2, "b", "ok", 0.3, 0.05, "unsupported", nan, nan),
               _record(3, "b", "unsupported", nan, nan, "ok", 0.2, 0.4)]
    report = compare(records, [SIMULATION, AICONFIGURATOR], partitions=("model",))
    everything = report["all"]
    assert everything["rows_total"] == 4
    assert everything["frontier_dag"]["coverage"] == everything["aiconfigurator"]["coverage"] == 0.75
    assert everything["frontier_dag"]["ttft_mape"] == pytest.approx(0.3)   # on its own rows
    shared = everything["shared"]
    assert shared["rows"] == 2
    assert shared["frontier_dag"]["ttft_mape"] == pytest.approx(0.3)       # on the rows both estimate
    assert shared["aiconfigurator"]["ttft_mape"] == pytest.approx(0.2)
    assert shared["aiconfigurator"]["tpot_median_ape"] == pytest.approx(0.15)
    assert shared["closest"]["ttft"] == {"frontier_dag": 1, "aiconfigurator": 1, "tie": 0}
    assert shared["closest"]["tpot"] == {"frontier_dag": 0, "aiconfigurator": 1, "tie": 1}
    assert report["partitions"]["model"]["b"]["shared"]["rows"] == 0
    assert report["reasons"]["aiconfigurator"] == {"no data": 1}
    table = format_comparison(report, [SIMULATION, AICONFIGURATOR])
    assert "model=b" in table and "fdag" in table and "aic" in table

    # one more estimate (a calibrated simulation, say) is one more column
    third = Estimate("calibrated", "cal", "status", "reason", "cal_ttft_ape", "cal_tpot_ape")
    for record in records:
        record.update(cal_ttft_ape=0.05, cal_tpot_ape=0.05)
    report = compare(records, [SIMULATION, AICONFIGURATOR, third])
    assert report["all"]["shared"]["closest"]["ttft"] == {"frontier_dag": 0, "aiconfigurator": 0, "calibrated": 2,
                                                          "tie": 0}


def test_without_the_package_the_flag_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "aiconfigurator.cli.api", None)  # import fails as if not installed
    with pytest.raises(baseline.BaselineUnavailable, match=r"pip install 'frontier-dag\[baseline\]'"):
        baseline.require("aiconfigurator")
    result = CliRunner().invoke(cli, ["validate", "silicon", "--system", "h100_sxm", "--baseline", "aiconfigurator"])
    assert result.exit_code == 2
    assert result.output.startswith("error: --baseline aiconfigurator needs the aiconfigurator package")
    assert "Traceback" not in result.output


def test_cli_reports_both_columns(fixture_csv, tmp_path, monkeypatch):
    """The fixture end to end: the simulation of the two rows with a concurrency (two requests
    each) and aiconfigurator's estimates, in the JSON report and the per-row CSV."""
    from frontier_dag.validation import convert

    monkeypatch.setattr(convert, "MIN_REQUESTS", 2)
    out = tmp_path / "per_row.csv"
    args = ["validate", "silicon", "--csv", str(fixture_csv), "--system", "h100_sxm", "--baseline", "aiconfigurator",
            "--workers", "1", "--rounds", "1", "--no-progress"]
    result = CliRunner().invoke(cli, [*args, "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["baseline"] == {"name": "aiconfigurator", "version": "0.12.0", "data_version": "current",
                                  "models": {}}
    side = report["comparison"]["all"]
    assert side["frontier_dag"]["rows_covered"] == side["aiconfigurator"]["rows_covered"] == 2
    assert side["shared"]["rows"] == 2
    assert sum(side["shared"]["closest"]["ttft"].values()) == 2
    assert report["comparison"]["partitions"]["mode"]["agg"]["shared"]["rows"] == 1
    rows = pd.read_csv(out)
    assert list(rows["aic_status"]) == ["ok", "ok", "unsupported"]
    assert list(rows["status"]) == ["ok", "ok", "unsupported"]
    assert rows["aic_ttft_ms"].iloc[:2].tolist() == pytest.approx([EXPECTED[0][0], EXPECTED[1][0]], rel=1e-6)
    assert rows["sim_ttft_ms"].iloc[:2].notna().all()

    result = CliRunner().invoke(cli, [*args, "--model", "Qwen3-32B", "--mode", "agg"])
    assert result.exit_code == 0, result.output
    assert "aiconfigurator 0.12.0 (its current data) beside frontier-dag" in result.output
    assert "aiconfigurator: every row estimated" in result.output
