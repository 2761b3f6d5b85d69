"""The roofline cost model: FLOPs and bytes of each operator against the GPU's peaks.

A kernel takes ``max(flops / peak_flops, bytes / hbm_bandwidth)`` plus a fixed
launch latency, with the peak of the tensor-core pipe its precision multiplies on and
the widths of its weights and activations, scales included
(``frontier_dag.config.precision``: NVFP4 runs at the FP4 rate, MXFP4 weights with
MXFP8 activations at the FP8 rate, weight-only formats at the BF16 rate); a collective or transfer takes its link latency plus the bytes each
GPU must move over the link bandwidth (ring algorithms). It is a lower bound that
ignores tiling, wave quantisation and kernel efficiency; the fitted predictors
replace it wherever profiles exist, and use it to extrapolate beyond them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.precision import PRECISIONS, Precision, canonical_precision
from frontier_dag.config.suggest import did_you_mean
from frontier_dag.cost.queries import (
    ATTENTION_FAMILIES,
    COLLECTIVE_FAMILIES,
    DEEPEP_FAMILIES,
    DEEPEP_WIDTH,
    MLA_FAMILIES,
    MOE_FAMILIES,
    check_query,
)
from frontier_dag.errors import CostModelError

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


def _precisions(values) -> list[Precision]:
    found = {}
    for value in {str(v) for v in values}:
        p = PRECISIONS.get(str(canonical_precision(value)))
        if p is None:
            raise CostModelError(f"unknown precision {value!r}{did_you_mean(value, PRECISIONS) or '.'} "
                                 f"Known: {', '.join(PRECISIONS)}")
        found[value] = p
    return [found[str(v)] for v in values]


def _widths(values) -> np.ndarray:
    """Bytes per weight (or KV-cache) element of each row's precision, scales included."""
    return np.array([p.weight_bytes for p in _precisions(values)], dtype=float)


def _activation_widths(values) -> np.ndarray:
    return np.array([p.activation_bytes for p in _precisions(values)], dtype=float)


def _segments(ragged) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate a column of 1-D arrays: the flat values and each value's row index."""
    arrays = [np.asarray(r, dtype=float).ravel() for r in ragged]
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.empty(0)
    return flat, np.repeat(np.arange(len(arrays)), lengths)


def _row_sums(values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(rows, weights=values, minlength=n)


def _attention_terms(family: str, q: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and bytes of attention over each row's ragged batch of sequences."""
    n = check_query(family, q)
    ql, rows = _segments(q["q_lens"])
    cl, _ = _segments(q["ctx_lens"])
    # causal: a new token attends to the context and to the new tokens before it
    pairs = _row_sums(ql * cl + ql * (ql + 1) / 2, rows, n)
    return attention_flops_and_bytes(family, q, pairs, _row_sums(cl + ql, rows, n), _row_sums(ql, rows, n))


def attention_flops_and_bytes(family: str, q: Mapping[str, Any], pairs: np.ndarray, keys: np.ndarray,
                              tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and bytes of attention from each row's attended (query, key) pairs, keys read
    (context + new) and new tokens."""
    heads = _arr(q["num_heads"])
    kv_width = _widths(q["kv_dtype"])
    if family in MLA_FAMILIES:
        rank, rope = _arr(q["kv_lora_rank"]), _arr(q["qk_rope_head_dim"])
        latent = rank + rope
        if family == "mla_decode":  # absorbed: scores and values in the latent space
            flops = 2 * heads * pairs * (latent + rank)
        else:
            flops = 2 * heads * pairs * (_arr(q["qk_nope_head_dim"]) + rope + _arr(q["v_head_dim"]))
        nbytes = keys * latent * kv_width + 2 * tokens * heads * latent * ACTIVATION_BYTES
    else:
        d = _arr(q["head_dim"])
        flops = 4 * heads * d * pairs
        nbytes = keys * 2 * _arr(q["num_kv_heads"]) * d * kv_width + 2 * tokens * heads * d * ACTIVATION_BYTES
    return flops, nbytes


def moe_flops_and_bytes(q: Mapping[str, Any], routed: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and bytes of one rank's gated expert MLPs from its routed tokens and active experts."""
    w = _widths(q["dtype"])
    h, f = _arr(q["hidden"]), _arr(q["inter"])
    return 2 * 3 * h * f * routed, 3 * h * f * w * active + 2 * routed * h * ACTIVATION_BYTES


def flops_and_bytes(family: str, q: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and HBM bytes of each row of a compute query (zero FLOPs for pure data movement)."""
    if family in ATTENTION_FAMILIES or family in MLA_FAMILIES:
        return _attention_terms(family, q)
    if family == "gemm":
        m, n, k = _arr(q["m"]), _arr(q["n"]), _arr(q["k"])
        weights, inputs = _widths(q["dtype"]), _activation_widths(q["dtype"])
        return 2 * m * n * k, m * k * inputs + k * n * weights + m * n * ACTIVATION_BYTES
    if family in MOE_FAMILIES:
        rows = check_query(family, q)
        t, row = _segments(q["expert_tokens"])
        return moe_flops_and_bytes(q, _row_sums(t, row, rows), _row_sums((t > 0).astype(float), row, rows))
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


def deepep_bytes(family: str, q: Mapping[str, Any]) -> np.ndarray:
    """One rank's DeepEP message: tokens x top-k copies x hidden x the phase's width."""
    return _arr(q["num_tokens"]) * _arr(q["topk"]) * _arr(q["hidden"]) * DEEPEP_WIDTH[family]


def roofline_us(family: str, q: Mapping[str, Any], hw: HardwareConfig) -> np.ndarray:
    """Roofline time in microseconds of each row of ``q``.

    >>> from frontier_dag.config import load_hardware
    >>> h100 = load_hardware("h100")
    >>> t = roofline_us("gemm", {"m": [4096], "n": [4096], "k": [4096], "dtype": ["bf16"]}, h100)
    >>> round(float(t[0]), 1)  # 137 GFLOP at 989 TFLOP/s, plus the launch
    142.0
    """
    if family in DEEPEP_FAMILIES:
        return roofline_us("all_to_all", {**q, "bytes": deepep_bytes(family, q)}, hw)
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
    return kernel_roofline_us(flops, nbytes, q.get("dtype", ["bf16"] * len(flops)), hw)


def kernel_roofline_us(flops: np.ndarray, nbytes: np.ndarray, dtypes, hw: HardwareConfig) -> np.ndarray:
    """Launch latency plus the slower of compute (at the dtype's peak) and HBM traffic."""
    peaks = {d: hw.gpu.peak_flops(d) for d in {str(d) for d in dtypes}}
    peak = np.array([peaks[str(d)] for d in dtypes])
    compute = flops / peak
    memory = nbytes / hw.gpu.hbm_bandwidth_bytes_per_s
    return KERNEL_LAUNCH_US + np.maximum(compute, memory) * 1e6
