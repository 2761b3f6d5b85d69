"""aiconfigurator-core's wide-EP tables (SGLang): what their token counts mean, how their
routing is replayed, which DeepEP rows are read, their held-out accuracy as families of
their own, and the plain tables that serve where a system has none."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.config.hardware import load_hardware
from frontier_dag.predictors import aiconfigurator as aic
from frontier_dag.predictors.fitted_set import FittedSet
from frontier_dag.predictors.fitting import DEFAULT_SETTINGS, fit_family
from frontier_dag.predictors.model import FittedCostModel

pytest.importorskip("aiconfigurator_core")


def _rows(system: str, kind: str, filename: str):
    return aic.find_table(aic.package_data_root() / system, kind, "sglang", filename)


def test_decode_num_tokens_is_the_whole_batch_before_dispatch():
    """4,096 tokens at EP 64 is 64 per rank: 4 local experts of 128 tokens each under
    uniform routing, measured at 0.092 ms on H100 (the figure of issue 14)."""
    t = aic.wideep_moe_rows(_rows("h100_sxm", "moe", "wideep_generation_moe_perf.parquet"), prefill=False)
    row = t[(t["num_tokens"] == 4096) & (t["ep"] == 64) & t["source"].str.endswith(":uniform")].iloc[0]
    assert row["expert_tokens"].tolist() == [128, 128, 128, 128]
    assert row["latency_us"] == pytest.approx(92.4, abs=0.1)
    skewed = t[(t["num_tokens"] == 4096) & (t["ep"] == 64) & t["source"].str.endswith(":power_law_1.2")].iloc[0]
    assert skewed["expert_tokens"].sum() > 512 and skewed["expert_tokens"].max() > 2 * 128  # the hottest rank
    assert skewed["latency_us"] > 2 * row["latency_us"]


def test_uniform_routing_as_the_collector_draws_it():
    # 4 tokens per rank at EP 4: 16 x 8 / 256 rounds to 0, so 32 of 64 local experts get one token
    assert aic.wideep_uniform_tokens(16, 256, 8, 4, prefill=False).tolist() == [1] * 32 + [0] * 32
    assert aic.wideep_uniform_tokens(2048, 256, 8, 32, prefill=True).tolist() == [64] * 8


def test_deepep_rows_back_fill_node_counts_and_keep_the_default_sms():
    profiles = aic.read_aiconfigurator("h200_sxm", "sglang")
    assert {"moe_wideep_prefill", "moe_wideep_decode", "deepep_dispatch", "deepep_combine"} <= set(profiles.tables)
    dispatch = profiles.tables["deepep_dispatch"]
    assert set(dispatch["group_size"]) == {8, 16, 32, 64}
    assert set(dispatch.loc[dispatch["group_size"] > 8, "placement"]) == {"inter_node"}
    normal = dispatch[dispatch["impl"] == "deepep_normal"]
    shapes = ["num_tokens", "hidden", "topk", "num_experts", "group_size"]
    assert not normal.duplicated(shapes).any()  # one SM budget (20) per shape
    assert "deepep" not in " ".join(profiles.tables["all_to_all"]["source"])  # NCCL's only
    # vLLM has no wide-EP tables: its DeepEP measurements stay all-to-all rows
    vllm = aic.plan_tables("h200_sxm", "vllm")
    assert not any("wideep" in path.name for path, _, _ in vllm)


def test_wide_ep_families_are_evaluated_on_their_own_grouped_by_token_count():
    """Issue 14's goal, >= 90% of held-out rows within 10%, where it is reached (docs/predictors.md,
    "Wide expert parallelism": not at every seed)."""
    families = ("moe_wideep_decode", "moe_wideep_prefill", "deepep_dispatch", "deepep_combine")
    result = CliRunner().invoke(cli, ["predictors", "evaluate", "--source", "aiconfigurator", "--system", "h100_sxm",
                                      "--backend", "sglang", "--split", "grouped", "--json",
                                      *(a for f in families for a in ("--family", f))])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == set(families)
    # seed 0 holds out 3 of 14 decode token counts (512-2,048), 3 of 15 prefill counts and 20%
    # of DeepEP's per-rank counts
    for family in families:
        assert report[family]["within_10pct"] >= 0.9, family


def test_without_wide_ep_tables_the_plain_models_price_the_layer():
    """vLLM on H100: the experts are priced by moe_grouped_gemm, DeepEP's messages by
    all_to_all (its moe_a2a rows, impl by mode and phase)."""
    hw = load_hardware("h100_sxm")
    profiles = aic.read_aiconfigurator("h100_sxm", "vllm")
    moe = profiles.tables["moe_grouped_gemm"]
    moe = moe[(moe["hidden"] == 7168) & (moe["num_experts"] == 256)].reset_index(drop=True)
    a2a = profiles.tables["all_to_all"]
    models = {"moe_grouped_gemm": fit_family("moe_grouped_gemm", moe, hw),
              "all_to_all": fit_family("all_to_all", a2a, hw)}
    model = FittedCostModel(FittedSet(hw.name, "plain tables", "-", DEFAULT_SETTINGS, models))
    experts = {"num_tokens": [4096], "hidden": [7168], "inter": [2048], "num_experts": [256], "topk": [8], "ep": [64],
               "moe_tp": [1], "dtype": ["fp8_block"], "expert_tokens": [np.array([128, 128, 128, 128])]}
    wide = model.predict("moe_wideep_decode", experts)
    plain = model.predict("moe_grouped_gemm", experts)
    assert wide.latency_us[0] == plain.latency_us[0] and wide.source == "rf"
    message = {"num_tokens": [64], "hidden": [7168], "topk": [8], "num_experts": [256], "group_size": [8],
               "placement": ["intra_node"], "impl": ["deepep_ll"]}
    dispatch = model.predict("deepep_dispatch", message)
    same = model.predict("all_to_all", {"bytes": [64 * 8 * 7168 * 1.0], "group_size": [8],
                                        "placement": ["intra_node"], "impl": ["deepep_ll_dispatch"]})
    assert dispatch.latency_us[0] == same.latency_us[0]
    assert "deepep_ll_dispatch" in set(a2a["impl"])


def test_experts_the_wide_ep_tables_never_measured_are_priced_by_the_plain_model():
    """The wide-EP tables measured DeepSeek-V3's FP8 experts only: Qwen3-235B's experts (4,096
    wide, 128 of them) behind DeepEP are priced by moe_grouped_gemm, DeepSeek-V3's are not."""
    hw = load_hardware("h100_sxm")
    plain = aic.read_aiconfigurator("h100_sxm", "sglang").tables
    moe = plain["moe_grouped_gemm"]
    moe = moe[moe["num_experts"].isin([128, 256])].reset_index(drop=True)
    models = {"moe_grouped_gemm": fit_family("moe_grouped_gemm", moe, hw),
              "moe_wideep_decode": fit_family("moe_wideep_decode", plain["moe_wideep_decode"], hw)}
    model = FittedCostModel(FittedSet(hw.name, "sglang", "-", DEFAULT_SETTINGS, models))
    deepseek = {"num_tokens": [4096], "hidden": [7168], "inter": [2048], "num_experts": [256], "topk": [8],
                "ep": [64], "moe_tp": [1], "dtype": ["fp8_block"], "expert_tokens": [np.array([128, 128, 128, 128])]}
    qwen = {**deepseek, "hidden": [4096], "inter": [1536], "num_experts": [128], "expert_tokens": [np.array([256, 256])]}
    assert model.predict("moe_wideep_decode", deepseek).latency_us[0] == pytest.approx(92.4, rel=0.1)
    assert model.predict("moe_wideep_decode", deepseek).latency_us[0] != model.predict("moe_grouped_gemm",
                                                                                       deepseek).latency_us[0]
    assert model.predict("moe_wideep_decode", qwen).latency_us[0] == model.predict("moe_grouped_gemm",
                                                                                   qwen).latency_us[0]
    both = model.predict("moe_wideep_decode", {c: deepseek[c] + qwen[c] for c in deepseek})
    assert both.latency_us.tolist() == [model.predict("moe_wideep_decode", deepseek).latency_us[0],
                                        model.predict("moe_grouped_gemm", qwen).latency_us[0]]
