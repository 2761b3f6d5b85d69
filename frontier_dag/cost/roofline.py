"""The roofline cost model: FLOPs and bytes of each operator against the GPU's peaks.

A kernel takes ``max(flops / peak_flops, bytes / hbm_bandwidth)`` plus a fixed
launch latency; a collective or transfer takes its link latency plus the bytes each
GPU must move over the link bandwidth (ring algorithms). It is a lower bound that
ignores tiling, wave quantisation and kernel efficiency; the fitted predictors
replace it wherever profiles exist, and use it to extrapolate beyond them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from frontier_dag.config.hardware import DTYPE_BYTES, HardwareConfig
from frontier_dag.cost.queries import ATTENTION_FAMILIES, COLLECTIVE_FAMILIES, MLA_FAMILIES, check_query

#: Launch latency of one GPU kernel, a physical floor every kernel pays.
KERNEL_LAUNCH_US = 3.0
#: Software latency of one collective inside a node (NCCL's small-message floor).
INTRA_NODE_COLLECTIVE_LATENCY_US = 8.0
#: Bytes per element of activations that flow between kernels.
ACTIVATION_BYTES = 2.0

#: Elements each elementwise op reads and writes per output element.
ELEMENTWISE_TRAFFIC = {"rmsnorm": 2.0, "add": 3.0, "silu_mul": 1.5, "rope": 2.0, "embedding": 2.0,
                       "sampling": 2.0, "router": 2.0, "quantize": 1.5}


def _arr(values, dtype=float) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


def _widths(values) -> np.ndarray:
    return np.array([DTYPE_BYTES[str(v)] for v in values], dtype=float)


def _attention_terms(family: str, q: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and bytes of attention over each row's ragged batch of sequences."""
    n = check_query(family, q)
    flops = np.empty(n)
    nbytes = np.empty(n)
    heads = _arr(q["num_heads"])
    kv_width = _widths(q["kv_dtype"])
    for i in range(n):
        ql = np.asarray(q["q_lens"][i], dtype=float)
        cl = np.asarray(q["ctx_lens"][i], dtype=float)
        # causal: a new token attends to the context and to the new tokens before it
        pairs = float(np.sum(ql * cl + ql * (ql + 1) / 2))
        keys = float(np.sum(cl + ql))
        tokens = float(np.sum(ql))
        if family in MLA_FAMILIES:
            latent = q["kv_lora_rank"][i] + q["qk_rope_head_dim"][i]
            if family == "mla_decode":  # absorbed: scores and values in the latent space
                flops[i] = 2 * heads[i] * pairs * (latent + q["kv_lora_rank"][i])
            else:
                flops[i] = 2 * heads[i] * pairs * (q["qk_nope_head_dim"][i] + q["qk_rope_head_dim"][i] + q["v_head_dim"][i])
            nbytes[i] = keys * latent * kv_width[i] + 2 * tokens * heads[i] * latent * ACTIVATION_BYTES
        else:
            d = q["head_dim"][i]
            flops[i] = 4 * heads[i] * d * pairs
            nbytes[i] = keys * 2 * q["num_kv_heads"][i] * d * kv_width[i] + 2 * tokens * heads[i] * d * ACTIVATION_BYTES
    return flops, nbytes


def flops_and_bytes(family: str, q: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and HBM bytes of each row of a compute query (zero FLOPs for pure data movement)."""
    if family in ATTENTION_FAMILIES or family in MLA_FAMILIES:
        return _attention_terms(family, q)
    if family == "gemm":
        m, n, k = _arr(q["m"]), _arr(q["n"]), _arr(q["k"])
        w = _widths(q["dtype"])
        return 2 * m * n * k, (m * k + k * n) * w + m * n * ACTIVATION_BYTES
    if family == "moe_grouped_gemm":
        rows = check_query(family, q)
        flops, nbytes = np.empty(rows), np.empty(rows)
        w = _widths(q["dtype"])
        for i in range(rows):
            t = np.asarray(q["expert_tokens"][i], dtype=float)
            h, f = float(q["hidden"][i]), float(q["inter"][i])
            flops[i] = 2 * 3 * h * f * t.sum()
            nbytes[i] = 3 * h * f * w[i] * np.count_nonzero(t) + 2 * t.sum() * h * ACTIVATION_BYTES
        return flops, nbytes
    if family == "elementwise":
        elems = _arr(q["num_tokens"]) * _arr(q["hidden"])
        traffic = np.array([ELEMENTWISE_TRAFFIC.get(str(op), 2.0) for op in q["op"]])
        return elems, elems * traffic * _widths(q["dtype"])
    raise KeyError(f"{family} is not a compute family")


def _link(hw: HardwareConfig, placement) -> tuple[np.ndarray, np.ndarray]:
    intra = np.array([str(p) != "inter_node" for p in placement])
    bandwidth = np.where(intra, hw.node.nvlink_bandwidth_bytes_per_s, hw.network.bandwidth_bytes_per_s)
    latency = np.where(intra, INTRA_NODE_COLLECTIVE_LATENCY_US, hw.network.latency_us)
    return bandwidth, latency


def roofline_us(family: str, q: Mapping[str, Any], hw: HardwareConfig) -> np.ndarray:
    """Roofline time in microseconds of each row of ``q``.

    >>> from frontier_dag.config import load_hardware
    >>> h100 = load_hardware("h100")
    >>> t = roofline_us("gemm", {"m": [4096], "n": [4096], "k": [4096], "dtype": ["bf16"]}, h100)
    >>> round(float(t[0]), 1)  # 137 GFLOP at 989 TFLOP/s, plus the launch
    142.0
    """
    if family in COLLECTIVE_FAMILIES:
        nbytes, group = _arr(q["bytes"]), np.maximum(_arr(q["group_size"]), 1)
        bandwidth, latency = _link(hw, q["placement"])
        share = (group - 1) / group
        factor = 2 * share if family == "all_reduce" else share
        return np.where(group > 1, latency + factor * nbytes / bandwidth * 1e6, 0.0)
    if family == "p2p":
        bandwidth, latency = _link(hw, q["placement"])
        return latency + _arr(q["bytes"]) / bandwidth * 1e6
    flops, nbytes = flops_and_bytes(family, q)
    dtype = q.get("dtype", ["bf16"] * len(flops))
    peak = np.array([hw.gpu.peak_flops(str(d)) for d in dtype])
    compute = flops / peak
    memory = nbytes / hw.gpu.hbm_bandwidth_bytes_per_s
    return KERNEL_LAUNCH_US + np.maximum(compute, memory) * 1e6
