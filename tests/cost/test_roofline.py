"""The roofline cost model: FLOPs and bytes against the GPU's peaks, bandwidth for links."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.config.hardware import load_hardware
from frontier_dag.cost.protocol import CostModel, RooflineCostModel
from frontier_dag.cost.queries import FAMILIES, QUERY_COLUMNS, attention_family, check_query
from frontier_dag.cost.roofline import (
    INTRA_NODE_COLLECTIVE_LATENCY_US,
    KERNEL_LAUNCH_US,
    roofline_us,
)
from frontier_dag.errors import ConfigError

H100 = load_hardware("h100_sxm")


def test_p2p_is_latency_plus_bytes_over_bandwidth():
    q = {"bytes": [0, 1e9, 2e9], "placement": ["intra_node", "intra_node", "inter_node"]}
    t = roofline_us("p2p", q, H100)
    assert t[0] == INTRA_NODE_COLLECTIVE_LATENCY_US
    assert t[1] == pytest.approx(INTRA_NODE_COLLECTIVE_LATENCY_US + 1e9 / H100.node.nvlink_bandwidth_bytes_per_s * 1e6)
    assert t[2] == pytest.approx(H100.network.latency_us + 2e9 / H100.network.bandwidth_bytes_per_s * 1e6)


def test_ring_collectives():
    q = {"bytes": [8e8] * 3, "group_size": [1, 2, 8], "placement": ["intra_node"] * 3, "impl": ["nccl"] * 3}
    bw = H100.node.nvlink_bandwidth_bytes_per_s
    all_reduce = roofline_us("all_reduce", q, H100)
    assert all_reduce[0] == 0.0  # a group of one moves nothing
    assert all_reduce[2] == pytest.approx(INTRA_NODE_COLLECTIVE_LATENCY_US + 2 * 7 / 8 * 8e8 / bw * 1e6)
    all_gather = roofline_us("all_gather", q, H100)
    assert all_gather[1] == pytest.approx(INTRA_NODE_COLLECTIVE_LATENCY_US + 0.5 * 8e8 / bw * 1e6)


def test_gemm_is_compute_bound_when_large_and_memory_bound_when_small():
    q = {"m": [4096, 1], "n": [4096, 4096], "k": [4096, 4096], "dtype": ["bf16", "bf16"]}
    big, small = roofline_us("gemm", q, H100)
    assert big == pytest.approx(KERNEL_LAUNCH_US + 2 * 4096**3 / 989e12 * 1e6)
    weight_bytes = 4096 * 4096 * 2
    assert small == pytest.approx(KERNEL_LAUNCH_US + (weight_bytes + 4096 * 2 + 4096 * 2) / 3.35e12 * 1e6)
    fp8 = roofline_us("gemm", {**q, "dtype": ["fp8", "fp8"]}, H100)
    assert fp8[0] < big and fp8[1] < small


def test_attention_grows_with_context_and_prefill_is_causal():
    base = {"num_heads": [32], "num_kv_heads": [8], "head_dim": [128], "dtype": ["bf16"], "kv_dtype": ["bf16"]}
    short = roofline_us("attention_decode", {**base, "q_lens": [np.ones(64)], "ctx_lens": [np.full(64, 1000)]}, H100)
    long = roofline_us("attention_decode", {**base, "q_lens": [np.ones(64)], "ctx_lens": [np.full(64, 8000)]}, H100)
    assert long[0] > short[0]
    prefill = roofline_us("attention_prefill", {**base, "q_lens": [np.array([8192])], "ctx_lens": [np.array([0])]}, H100)
    pairs = 8192 * 8193 / 2
    assert prefill[0] == pytest.approx(KERNEL_LAUNCH_US + 4 * 32 * 128 * pairs / 989e12 * 1e6)


def test_grouped_gemm_reads_only_active_experts():
    q = {"num_tokens": [64, 64], "hidden": [4096, 4096], "inter": [1024, 1024], "num_experts": [64, 64],
         "topk": [2, 2], "ep": [8, 8], "moe_tp": [1, 1], "dtype": ["bf16", "bf16"],
         "expert_tokens": [np.array([16, 0, 0, 0, 0, 0, 0, 0]), np.array([2] * 8)]}
    one_active, all_active = roofline_us("moe_grouped_gemm", q, H100)
    assert all_active > one_active  # same routed tokens, eight times the weights read


def test_attention_family_and_query_contract():
    assert attention_family([1, 1]) == "attention_decode"
    assert attention_family([5, 9]) == "attention_prefill"
    assert attention_family([1, 9]) == "attention_mixed"
    assert set(QUERY_COLUMNS) == set(FAMILIES)
    with pytest.raises(KeyError, match="gemm query lacks column"):
        check_query("gemm", {"m": [1]})
    with pytest.raises(ValueError, match="different lengths"):
        check_query("gemm", {"m": [1], "n": [1, 2], "k": [1], "dtype": ["bf16"]})


def test_roofline_model_implements_the_protocol():
    model = RooflineCostModel(H100)
    assert isinstance(model, CostModel)
    pred = model.predict("elementwise", {"op": ["rmsnorm"], "num_tokens": [10], "hidden": [4096], "dtype": ["bf16"]})
    assert pred.source == "roofline" and not pred.out_of_range.any() and pred.std_us.tolist() == [0.0]


def test_precisions_use_their_widths_and_tensor_core_peaks():
    """NVFP4 at Blackwell's FP4 rate, MXFP4 x MXFP8 at its FP8 rate, weight-only MXFP4 at the
    BF16 rate with 4-bit weights (and their scales) but bf16 activations."""
    b200 = load_hardware("b200_sxm")
    big = {"m": [8192], "n": [8192], "k": [8192]}
    flops = 2 * 8192**3
    for dtype, peak in (("bf16", 2.25e15), ("fp8", 4.5e15), ("fp4", 9e15), ("w4a8_mxfp4_mxfp8", 4.5e15),
                        ("w4a16_mxfp4", 2.25e15)):
        t = roofline_us("gemm", {**big, "dtype": [dtype]}, b200)[0]
        assert t == pytest.approx(KERNEL_LAUNCH_US + flops / peak * 1e6), dtype
    decode = {"m": [1], "n": [8192], "k": [8192]}
    bf16, fp4, mx = (roofline_us("gemm", {**decode, "dtype": [d]}, b200)[0] - KERNEL_LAUNCH_US
                     for d in ("bf16", "fp4", "w4a16_mxfp4"))
    assert fp4 == pytest.approx((8192 * 9 / 16 + 8192**2 * 9 / 16 + 8192 * 2) / 8e12 * 1e6)
    assert mx == pytest.approx((8192 * 2 + 8192**2 * 17 / 32 + 8192 * 2) / 8e12 * 1e6)
    assert bf16 / fp4 == pytest.approx(2 / (9 / 16), rel=1e-3)


def test_a_precision_the_gpu_cannot_run_is_an_error_naming_both():
    with pytest.raises(ConfigError, match="NVIDIA H100 80GB HBM3 cannot run fp4 .*no fp4 tensor cores"):
        roofline_us("gemm", {"m": [16], "n": [16], "k": [16], "dtype": ["fp4"]}, H100)
    with pytest.raises(ConfigError, match="NVIDIA A100-SXM4-80GB cannot run fp8"):
        roofline_us("moe_grouped_gemm", {"num_tokens": [4], "hidden": [64], "inter": [64], "num_experts": [4],
                                         "topk": [1], "ep": [1], "moe_tp": [1], "dtype": ["fp8"],
                                         "expert_tokens": [np.array([1, 1, 1, 1])]}, load_hardware("a100_sxm"))
    from frontier_dag.errors import CostModelError

    with pytest.raises(CostModelError, match="unknown precision 'fp5'"):
        roofline_us("gemm", {"m": [16], "n": [16], "k": [16], "dtype": ["fp5"]}, H100)
