"""Reading silicon rows (cleaning rules), turning them into run configs, and the report's
arithmetic: no simulation, no fitted predictors."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from frontier_dag.sim.policies import build_policy
from frontier_dag.validation.convert import (
    DATASET_PROMPTS,
    MIN_REQUESTS,
    dataset_first_pass,
    row_config,
)
from frontier_dag.validation.engines import GENERATOR_TOKEN_SLACK, token_budget
from frontier_dag.validation.models import Unsupported, is_moe, row_model
from frontier_dag.validation.report import format_table, summarize_records
from frontier_dag.validation.runner import benchmark_means
from frontier_dag.validation.silicon import (
    cheapest_per_partition,
    default_csv,
    parse_row,
    read_rows,
    spread_per_partition,
)

BASE = {
    "id": "x", "backend": "trtllm", "backend_version": "1.0", "model_path": "Qwen/Qwen3-32B", "system": "h100_sxm",
    "mode": "agg", "isl": 1024, "osl": 128, "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8",
    "batch_size": 16, "tp_size": 2, "pp_size": 1, "attention_dp_size": math.nan, "moe_tp_size": 1, "moe_ep_size": 1,
    "silicon_ttft_ms": 300.0, "silicon_tpot_ms": 12.0, "silicon_data_source": "silicon_concurrency=16",
}


def test_concurrency_comes_from_the_source_column_only():
    row = parse_row(0, {**BASE, "silicon_data_source": "x; silicon_concurrency=64", "batch_size": 8,
                        "attention_dp_size": 8, "tp_size": 1}, moe=False)
    assert row.concurrency == 64
    row = parse_row(0, {**BASE, "silicon_data_source": "", "batch_size": 8, "attention_dp_size": 4, "tp_size": 1},
                    moe=False)
    assert row.concurrency is None  # batch sizes are aiconfigurator's estimate, not the client count
    with pytest.raises(Unsupported, match="silicon_concurrency"):
        row_config(row)


def test_export_that_multiplied_tp_by_ep_is_read_from_the_id():
    rec = {**BASE, "id": "dsr1_h200_trtllm_fp8_agg_1024x1024_c16_tp8_ep8_955", "model_path": "deepseek-ai/DeepSeek-R1",
           "tp_size": 64, "attention_dp_size": 1, "moe_tp_size": 8, "moe_ep_size": 8}
    w = parse_row(0, rec, moe=True).agg
    assert (w.tp, w.dp, w.moe_tp, w.moe_ep) == (8, 1, 1, 8)
    rec.update(tp_size=1, attention_dp_size=64)
    w = parse_row(0, rec, moe=True).agg
    assert (w.tp, w.dp, w.moe_tp, w.moe_ep) == (1, 8, 1, 8)


def test_moe_worker_spans_the_experts_gpus_and_dense_ignores_moe_columns():
    w = parse_row(0, {**BASE, "model_path": "Qwen/Qwen3-235B-A22B-FP8", "tp_size": 1, "moe_tp_size": 2}, moe=True).agg
    assert (w.tp, w.gpus, w.moe_tp, w.moe_ep) == (2, 2, 2, 1)
    w = parse_row(0, {**BASE, "tp_size": 2, "moe_tp_size": 1, "moe_ep_size": 0}, moe=False).agg
    assert (w.tp, w.gpus, w.moe_ep) == (2, 2, 1)


def test_disagg_rows_without_worker_counts_assume_one_of_each():
    rec = {**BASE, "mode": "disagg", "model_path": "deepseek-ai/DeepSeek-R1", "batch_size": math.nan, "system": "h200_sxm",
           "prefill_tp_size": 8, "prefill_moe_ep_size": 8, "decode_tp_size": 8, "decode_moe_ep_size": 8,
           "silicon_data_source": "silicon_concurrency=128"}
    row = parse_row(0, rec, moe=True)
    assert row.prefill.workers == row.decode.workers == 1 and any("one prefill" in n for n in row.notes)
    config = row_config(row).config
    assert set(config.cluster.pools) == {"prefill", "decode"}
    assert config.workflow.name == "pd" and config.workload.clients == 128


def test_row_config_uses_the_rows_precision_and_engine():
    row = parse_row(0, BASE, moe=False)
    config = row_config(row, rounds=3).config
    assert config.workload.num_requests == max(3 * 16, MIN_REQUESTS)
    assert config.model["dtype"] == "fp8" and config.predictor.backend == "trtllm"
    assert config.cluster.pools["worker"].tp == 2 and config.scheduler.policy == "trtllm"
    sglang = row_config(parse_row(0, {**BASE, "backend": "sglang"}, moe=False)).config
    assert sglang.scheduler.policy == "sglang"


def test_engine_reservations_and_the_spread_phase_reach_the_config():
    sglang = row_config(parse_row(0, {**BASE, "backend": "sglang"}, moe=False)).config
    assert sglang.scheduler.reserve_output == 0.7 and sglang.scheduler.reserve_output_decay_steps == 600
    assert sglang.scheduler.reserve_output_min == pytest.approx(0.098) and sglang.scheduler.decode_reserve_tokens == 512
    trtllm = row_config(parse_row(0, BASE, moe=False)).config
    assert trtllm.scheduler.policy == "trtllm" and trtllm.scheduler.decode_reserve_tokens == 0
    worker = build_policy(trtllm.scheduler, trtllm.cluster.pools["worker"])
    assert worker.limits.reserve_output == 1.0 and not worker.limits.chunked_prefill  # GUARANTEED_NO_EVICT
    assert trtllm.workload.ramp_s == 0 and trtllm.workload.warmup_requests == 0
    spread = row_config(parse_row(0, BASE, moe=False), rounds=3, ramp_s=2.5).config.workload
    assert spread.ramp_s == 2.5 and spread.warmup_requests == 16 and spread.num_requests == 48


def test_the_dataset_phase_runs_the_benchmarks_warm_up_dataset_and_prefix_cache():
    """aiperf's 100 reused prompts after a warm-up of 2C, the prefix cache on; the measured
    requests cover the dataset's first pass and then the rounds asked for."""
    row = parse_row(0, BASE, moe=False)  # 16 clients
    plain = row_config(row, rounds=3).config
    assert not plain.scheduler.prefix_caching and plain.workload.prompt_pool is None
    cfg = row_config(row, rounds=3, dataset=DATASET_PROMPTS).config
    assert cfg.scheduler.prefix_caching and cfg.workload.prompt_pool.size == 100
    assert cfg.workload.warmup_requests == 32  # --warmup-request-count 2C
    assert dataset_first_pass(16, 100) == 100 - 32 and dataset_first_pass(64, 100) == 64
    assert cfg.workload.num_requests == 32 + 68 + 2 * 16
    assert row_config(row, rounds=6, dataset=100).config.workload.num_requests == 32 + 68 + 5 * 16


def test_token_budget_follows_the_deployment_generator():
    """TensorRT-LLM, and vLLM but the 0.12.0 template, get aiconfigurator's batch + ISL + 1500
    tokens per iteration (ISL + 1500 on prefill workers); vLLM 0.12.0 and SGLang keep 8192."""
    trtllm = row_config(parse_row(0, BASE, moe=False)).config.scheduler
    assert trtllm.max_num_batched_tokens == 16 + 1024 + GENERATOR_TOKEN_SLACK and not trtllm.chunked_prefill
    old_vllm = row_config(parse_row(0, {**BASE, "backend": "vllm", "backend_version": "0.12.0"}, moe=False)).config
    new_vllm = row_config(parse_row(0, {**BASE, "backend": "vllm", "backend_version": "0.18.0"}, moe=False)).config
    assert old_vllm.scheduler.max_num_batched_tokens == 8192 and new_vllm.scheduler.max_num_batched_tokens == 2540
    assert token_budget("trtllm", "1.2.0rc6", "disagg", 8192, 1) == 8192 + GENERATOR_TOKEN_SLACK
    assert token_budget("trtllm", "1.0.0rc3", "agg", 1024, None) == 8192  # no batch size in the row: the default
    assert token_budget("sglang", "0.5.9", "agg", 1024, 16) == 8192
    assert token_budget("vllm", "", "agg", 1024, 16) == 16 + 1024 + GENERATOR_TOKEN_SLACK  # no version: general template


def test_benchmark_means_weigh_the_rounds_as_a_long_benchmark_does():
    """First round (cold start) and last (drain) weigh one round each; the simulated rounds
    between stand for the benchmark's other rounds."""
    frame = pd.DataFrame({"ttft_ms": [100.0, 100.0, 20.0, 20.0, 30.0, 30.0, 5.0, 5.0],
                          "tpot_ms": [10.0, 10.0, 8.0, 8.0, 8.0, math.nan, 6.0, 6.0]})
    ttft, tpot = benchmark_means(frame, concurrency=2, benchmark_rounds=50)
    assert ttft == pytest.approx((100 * 2 + (20 * 2 + 30 * 2) * 24 + 5 * 2) / 100)
    assert tpot == pytest.approx((10 * 2 + 8 * 3 * 24 + 6 * 2) / (2 + 3 * 24 + 2))  # a missing TPOT weighs nothing
    assert benchmark_means(frame, concurrency=2, benchmark_rounds=4) == pytest.approx((frame.ttft_ms.mean(),
                                                                                      frame.tpot_ms.mean()))
    assert benchmark_means(frame.iloc[:0], concurrency=2) == (None, None)
    # a dataset's first pass (here the first 4 requests) happens once: it weighs as simulated
    ttft, _ = benchmark_means(frame, concurrency=2, benchmark_rounds=50, head=4)
    assert ttft == pytest.approx((100 * 2 + 20 * 2 + 30 * 2 * 94 / 2 + 5 * 2) / 100)


def test_unsupported_models_and_dtypes_say_why():
    with pytest.raises(Unsupported, match="linear attention"):
        row_model("Qwen/Qwen3.5-397B-A17B", "h200_sxm", "sglang", "fp8", "fp8_block")
    model, notes = row_model("openai/gpt-oss-120b", "h100_sxm", "vllm", "nvfp4", "nvfp4")
    assert model["dtype"] == "bf16" and model["moe_dtype"] == "w4a16_mxfp4" and "only its experts" in notes[0]
    assert model["sliding_window"] == 128
    assert is_moe("deepseek-ai/DeepSeek-R1") and not is_moe("meta-llama/Llama-3.1-8B-Instruct")


def test_read_rows_filters(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame([BASE, {**BASE, "id": "y", "backend": "vllm"}, {**BASE, "id": "z", "system": "h200_sxm"}]).to_csv(
        path, index=False)
    assert [r.id for r in read_rows(path, system="h100_sxm")] == ["x", "y"]
    assert [r.id for r in read_rows(path, system="h100_sxm", backend="vllm")] == ["y"]
    assert [r.id for r in read_rows(path, model="qwen3", limit=1)] == ["x"]


def test_cheapest_rows_of_each_partition_keep_their_order():
    rows = [parse_row(i, {**BASE, "id": str(i), "backend": backend, "osl": osl,
                          "silicon_data_source": f"silicon_concurrency={c}"}, moe=False)
            for i, (backend, osl, c) in enumerate([("vllm", 128, 64), ("vllm", 128, 8), ("trtllm", 1024, 4),
                                                   ("vllm", 512, 8), ("trtllm", 128, 4)])]
    assert [r.index for r in cheapest_per_partition(rows, 1)] == [1, 4]
    assert [r.index for r in cheapest_per_partition(rows, 2)] == [1, 2, 3, 4]
    unknown = parse_row(5, {**BASE, "id": "5", "backend": "vllm", "silicon_data_source": ""}, moe=False)
    assert [r.index for r in cheapest_per_partition([unknown, *rows], 1)] == [1, 4]  # no concurrency: last


def test_rows_spread_over_each_partitions_concurrencies():
    spec = [("vllm", 512, 4), ("vllm", 128, 4), ("vllm", 128, 8), ("vllm", 128, 16), ("vllm", 1024, 32),
            ("vllm", 128, 64), ("vllm", 128, 32), ("trtllm", 128, 4)]
    rows = [parse_row(i, {**BASE, "id": str(i), "backend": backend, "osl": osl,
                          "silicon_data_source": f"silicon_concurrency={c}"}, moe=False)
            for i, (backend, osl, c) in enumerate(spec)]
    # vllm at 4 (its cheaper row), 16 and 64; trtllm's only row; the original order kept
    assert [r.index for r in spread_per_partition(rows, 3)] == [1, 3, 5, 7]
    assert [r.index for r in spread_per_partition(rows, 2)] == [1, 5, 7]
    assert [r.index for r in spread_per_partition(rows, 9)] == [1, 2, 3, 5, 6, 7]  # one per concurrency
    unknown = parse_row(8, {**BASE, "id": "8", "backend": "vllm", "silicon_data_source": ""}, moe=False)
    assert [r.index for r in spread_per_partition([unknown, *rows], 1)] == [1, 7]


def test_report_mape_median_coverage_and_partitions():
    records = [
        {"index": i, "id": str(i), "system": "s", "backend": b, "mode": "agg", "model": "m", "status": st,
         "reason": reason, "ttft_ape": t, "tpot_ape": p}
        for i, (b, st, reason, t, p) in enumerate([
            ("vllm", "ok", "", 0.1, 0.02), ("vllm", "ok", "", 0.3, 0.04), ("sglang", "ok", "", 0.2, 0.06),
            ("sglang", "unsupported", "no kernels", math.nan, math.nan)])
    ]
    report = summarize_records(records)
    assert report["rows_total"] == 4 and report["rows_simulated"] == 3 and report["coverage"] == 0.75
    assert report["ttft_mape"] == pytest.approx(0.2) and report["tpot_median_ape"] == pytest.approx(0.04)
    assert report["partitions"]["backend"]["sglang"]["rows_simulated"] == 1
    assert report["not_simulated"] == [{"index": 3, "id": "3", "status": "unsupported", "reason": "no kernels"}]
    assert "backend=vllm" in format_table(report)


def test_pipeline_parallel_rows_become_pipelined_pools():
    # aiconfigurator-core 0.12's samples have no row with pp_size > 1 (below); one that has
    # replays as a pool of pp stages
    row = parse_row(0, {**BASE, "model_path": "meta-llama/Llama-3.1-70B", "tp_size": 2, "pp_size": 2}, moe=False)
    assert (row.agg.tp, row.agg.pp, row.agg.gpus) == (2, 2, 4) and "pp2" in row.describe()
    pool = row_config(row).config.cluster.pools["worker"]
    assert (pool.tp, pool.pp, pool.gpus) == (2, 2, 4)
    disagg = parse_row(0, {**BASE, "mode": "disagg", "model_path": "meta-llama/Llama-3.1-70B", "prefill_tp_size": 4,
                           "prefill_pp_size": 2, "decode_tp_size": 8, "decode_pp_size": 1}, moe=False)
    pools = row_config(disagg).config.cluster.pools
    assert (pools["prefill"].pp, pools["prefill"].gpus, pools["decode"].pp) == (2, 8, 1)


def test_no_h100_or_h200_sample_runs_pipeline_parallel():
    frame = pd.read_csv(default_csv())
    hopper = frame[frame["system"].isin(["h100_sxm", "h200_sxm"])]
    for column in ("pp_size", "prefill_pp_size", "decode_pp_size"):
        assert (hopper[column].fillna(1) == 1).all(), column
