"""Readers: the installed aiconfigurator tables, the public Vidur and Frontier CSVs when
../shared/data is there, and the committed fixtures in every case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from frontier_dag.cost.queries import QUERY_COLUMNS
from frontier_dag.errors import PredictorError
from frontier_dag.predictors import aiconfigurator as aic
from frontier_dag.predictors.frontier_csv import read_frontier_csv
from frontier_dag.predictors.schema import MEASUREMENT_COLUMNS
from frontier_dag.predictors.sources import open_source
from frontier_dag.predictors.vidur_csv import infer_hardware, read_vidur_csv


def assert_schema(family, table):
    assert list(table.columns[: len(QUERY_COLUMNS[family]) + 3]) == [*QUERY_COLUMNS[family], *MEASUREMENT_COLUMNS]
    assert (table["latency_us"] > 0).all()


def test_aiconfigurator_plan_uses_canonical_versions():
    plan = {path.name: path for path, _, _ in aic.plan_tables("h200_sxm", "vllm")}
    assert plan["context_attention_perf.parquet"].parent.name == "0.24.0"
    assert plan["nccl_perf.parquet"].parent.name == "2.29.2"
    # vllm measured only whole MLA modules: the kernels come from trtllm
    assert plan["context_mla_perf.parquet"].parts[-3] == "trtllm"


def test_aiconfigurator_attention_and_gemm_units():
    root = aic.package_data_root() / "h100_sxm"
    decode = aic.attention_rows(aic.find_table(root, "attention", "vllm", "generation_attention_perf.parquet"),
                                prefill=False)
    assert (decode["q_lens"].map(lambda q: set(q.tolist())) == {1}).all()
    assert decode["latency_us"].min() > 3  # ms in the table, µs here
    gemm = aic.gemm_rows(aic.find_table(root, "gemm", "vllm", "gemm_perf.parquet"))
    assert set(gemm["dtype"]) <= {"bf16", "fp8", "fp8_block"}


def test_aiconfigurator_microsecond_tables():
    root = aic.package_data_root() / "h200_sxm"
    a2a = aic.moe_a2a_rows(aic.find_table(root, "comm", "vllm", "moe_a2a_perf.parquet"))
    assert set(a2a["impl"]) == {"deepep_ll_dispatch", "deepep_ll_combine", "deepep_normal_dispatch",
                                "deepep_normal_combine"}
    assert 1 < a2a["latency_us"].median() < 10_000  # already µs, not scaled again
    nccl = aic.nccl_rows(aic.find_table(root, "comm", "nccl", "nccl_perf.parquet"))
    assert set(nccl["family"]) == {"all_reduce", "all_gather", "reduce_scatter", "all_to_all"}


def test_aiconfigurator_unknown_system_is_explained():
    with pytest.raises(PredictorError, match="has no kernel tables for it"):
        aic.plan_tables("not_a_gpu")
    with pytest.raises(PredictorError, match="lists it but ships no tables"):
        aic.plan_tables("a30")
    with pytest.raises(PredictorError, match="did you mean b200_sxm"):
        aic.plan_tables("b200_sx")


def test_frontier_fixture(fixtures):
    profiles = read_frontier_csv(fixtures / "frontier" / "h800")
    assert profiles.hardware == "h800_sxm"
    mixed = profiles.tables["attention_mixed"].iloc[0]
    assert mixed["q_lens"].tolist() == [32, 1, 1] and mixed["ctx_lens"].tolist() == [0, 8, 16]
    assert mixed["latency_us"] == pytest.approx(20 + 10)  # prefill and decode kernels of one batch
    moe = profiles.tables["moe_grouped_gemm"]
    assert [int(t.sum()) for t in moe["expert_tokens"]] == [17, 63]  # the files' routed totals
    assert (moe["expert_tokens"].iloc[0] == 0).sum() == 1  # 7 of 8 experts active


def test_vidur_fixture(fixtures):
    profiles = read_vidur_csv(fixtures / "vidur")
    assert profiles.hardware == "h100_sxm"
    assert set(profiles.tables) == {"attention_prefill", "attention_decode", "all_reduce"}
    prefill = profiles.tables["attention_prefill"]
    assert prefill["q_lens"].map(len).tolist() == [1, 1, 1] and prefill["latency_us"].tolist() == [20.0] * 3
    reduce = profiles.tables["all_reduce"]
    assert (reduce["bytes"] == 2 * 2 ** np.arange(11, 21)).all() and set(reduce["placement"]) == {"intra_node"}


def test_public_frontier_moe_and_mixed_attention(shared):
    profiles = read_frontier_csv(shared / "frontier/data/profiling/compute/h800/Qwen3-30B-A3B-tiny")
    for family, table in profiles.tables.items():
        assert_schema(family, table)
    moe = profiles.tables["moe_grouped_gemm"]
    assert (moe["expert_tokens"].map(len) * moe["ep"] == 16).all()  # local experts x EP = all experts
    assert "attention_mixed" in profiles.tables


def test_public_vidur_network_and_mlp(shared):
    network = read_vidur_csv(shared / "vidur/data/profiling/network/a100_pairwise_nvlink")
    assert network.hardware == "a100_sxm" and {"all_reduce", "p2p"} <= set(network.tables)
    mlp = read_vidur_csv(shared / "vidur/data/profiling/compute/h100/microsoft/phi-2/mlp.csv")
    assert {"gemm", "elementwise"} == set(mlp.tables)
    assert set(mlp.tables["elementwise"]["op"]) >= {"rmsnorm", "rope", "add"}


def test_hardware_from_path_and_sources(tmp_path, fixtures):
    assert infer_hardware(tmp_path / "a800" / "x") == "a800_sxm"
    with pytest.raises(PredictorError, match="cannot tell the GPU"):
        infer_hardware(tmp_path / "nowhere")
    source = open_source("frontier-csv", path=fixtures / "frontier" / "h800", pattern="*moe.csv")
    assert [f.name for f in source.files] == ["moe.csv"]
    with pytest.raises(PredictorError, match="needs --path"):
        open_source("vidur-csv")


def test_frontier_moe_keeps_the_hot_context_where_a_shape_has_both():
    import pandas as pd

    from frontier_dag.predictors.frontier_csv import hot_context

    shape = {"num_tokens": 8, "hidden_dim": 2048, "expert_hidden_dim": 768, "num_experts": 16,
             "num_experts_per_device": 16, "router_topk": 2, "num_tensor_parallel_workers": 1,
             "profiling_precision": "BF16"}
    frame = pd.DataFrame([{**shape, "expert_parallel_size": 1, "gating_runtime_context": "prefill_hot"},
                          {**shape, "expert_parallel_size": 1, "gating_runtime_context": "standalone_legacy"},
                          {**shape, "expert_parallel_size": 2, "gating_runtime_context": "standalone_legacy"}])
    kept = hot_context(frame)
    # the standalone timing of the shape also timed hot goes; the shape timed only standalone stays
    assert kept["gating_runtime_context"].tolist() == ["prefill_hot", "standalone_legacy"]
    assert kept["expert_parallel_size"].tolist() == [1, 2]
    no_context = frame.drop(columns="gating_runtime_context")
    assert len(hot_context(no_context)) == 3


def _fake_root(tmp_path, edit):
    """A data root holding one b200_sxm GEMM table (200 real rows), edited by ``edit``."""
    import pandas as pd

    real = aic.find_table(aic.package_data_root() / "b200_sxm", "gemm", "vllm", "gemm_perf.parquet")
    table = edit(pd.read_parquet(real).iloc[::700].reset_index(drop=True))
    folder = tmp_path / "data" / "b200_sxm" / "gemm" / "vllm" / "0.24.0"
    folder.mkdir(parents=True)
    table.to_parquet(folder / "gemm_perf.parquet")
    return tmp_path / "data"


def _source(root):
    from frontier_dag.predictors.sources import Source

    files = [p for p, _, _ in aic.plan_tables("b200_sxm", "vllm", root)]
    return Source("aiconfigurator", "fake b200", "b200_sxm", files, lambda: aic.read_aiconfigurator("b200_sxm", "vllm", root))


def test_unknown_columns_and_values_stop_before_any_fitting(tmp_path, monkeypatch, cache_dir):
    from frontier_dag.predictors import fitted_set as fs

    def no_fitting(*args, **kwargs):
        raise AssertionError("fitting started")

    monkeypatch.setattr(fs, "fit_family", no_fitting)
    column = _fake_root(tmp_path / "a", lambda t: t.assign(tile_config="128x128"))
    with pytest.raises(PredictorError, match=r"b200_sxm/gemm/vllm/0.24.0/gemm_perf.parquet: unknown column 'tile_config'"):
        fs.fitted_set(_source(column))
    value = _fake_root(tmp_path / "b", lambda t: t.assign(gemm_dtype="w2a16_nf2"))
    with pytest.raises(PredictorError, match=r"gemm_perf.parquet: column 'gemm_dtype' has unknown value 'w2a16_nf2'"):
        fs.fitted_set(_source(value))


def test_blackwell_precisions_are_read_by_their_names():
    profiles = aic.read_aiconfigurator("b200_sxm", "trtllm")
    assert set(profiles.tables["gemm"]["dtype"]) == {"bf16", "fp8", "fp8_block", "fp4"}
    assert {"fp4", "w4a16_mxfp4", "w4a8_mxfp4_mxfp8"} <= set(profiles.tables["moe_grouped_gemm"]["dtype"])
    a2a = profiles.tables["all_to_all"]
    assert {"deepep_ll_dispatch", "deepep_normal_combine"} <= set(a2a["impl"])


def test_intel_b60_reads_oneccl_and_fp8_as_weight_only():
    """The B60 has no FP8 tensor cores: its FP8 GEMM and MoE rows are FP8 weights on the BF16
    pipe (fp8_wo); its collectives are oneCCL's, read as the system's library collectives."""
    profiles = aic.read_aiconfigurator("b60", "vllm")
    assert set(profiles.tables["gemm"]["dtype"]) == {"bf16", "fp8_wo"}
    assert set(profiles.tables["all_reduce"]["impl"]) == {"nccl"}  # its custom all-reduce rows are eager only
    assert "all_to_all" not in profiles.tables and "mla_decode" not in profiles.tables
    with pytest.raises(PredictorError, match="no trtllm kernel tables for b60; it has vllm"):
        aic.plan_tables("b60", "trtllm")


def test_a_shape_timed_by_several_kernels_keeps_one():
    """SGLang's Blackwell attention tables time shapes with FlashInfer, Triton and TRT-LLM's
    kernels: each shape keeps the engine's default (Triton on sm100), else the kernel that
    timed the most shapes; TensorRT-LLM's min-latency MoE twin is left out."""
    root = aic.package_data_root() / "b200_sxm"
    path = aic.find_table(root, "attention", "sglang", "context_attention_perf.parquet")
    assert aic.default_attention_kernels(path) == ("triton",)
    rows = aic.attention_rows(path, prefill=True)
    shape = rows["q_lens"].map(lambda q: (len(q), int(q[0]))).astype(str) + rows[
        ["num_heads", "num_kv_heads", "head_dim", "dtype", "kv_dtype"]].astype(str).agg(" ".join, axis=1)
    assert not shape.duplicated().any()
    kernels = rows["source"].str.rsplit(":", n=1).str[-1]
    assert {"triton", "trtllm_mha"} <= set(kernels)
    moe = aic.moe_rows(aic.find_table(root, "moe", "trtllm", "moe_perf.parquet"))
    assert not moe["source"].str.contains(aic.MIN_LATENCY_MOE).any()
    table = pd.DataFrame({"m": [1, 1, 2], "kernel_source": ["a", "b", "b"], "latency": [1.0, 2.0, 3.0]})
    assert aic.one_kernel_per_shape(table, ["m"])["latency"].tolist() == [2.0, 3.0]  # b timed more shapes
    assert aic.one_kernel_per_shape(table, ["m"], ("a",))["latency"].tolist() == [1.0, 3.0]
