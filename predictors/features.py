"""Distributional features of a batch of cost queries: their one definition, compiled.

* attention / MLA, from every sequence of the batch: count, decode count and share;
  sum, mean, std, min, max, p50, p90 of the new tokens (q) and of the keys attended
  (kv = context + new); the attended (query, key) pairs (sum of q x kv, causal);
  new prefill tokens and decode keys; query tiles (128 rows) and KV tiles (128 keys)
  and their waves against the SM count; heads, KV heads (or MLA ranks), head size, dtypes;
  prefill and mixed batches add the split-KV count (``_kv_splits``).
* moe_grouped_gemm and the wide-EP expert families, from the tokens of each local expert: local experts, routed
  tokens, max, mean, CV, Gini, entropy (bits), active experts, row tiles of 16 and 64
  and the waves of the first GEMM's tiles; and the shapes (tokens, hidden, inter,
  experts, top-k, EP, TP, dtype).
* gemm: M, N, K, dtype, 128x128 and 64x128 output tiles, waves and the last wave's fill.
* collectives and p2p: bytes, bytes per rank, group size, placement, implementation.
* DeepEP dispatch and combine: tokens per rank, hidden, top-k, experts (and per rank), group
  size, placement, mode, and the message's bytes.
* elementwise: op, tokens, width, elements, dtype.

Every family's features end with the roofline terms (log FLOPs, bytes, compute and
memory time, roofline time). Each row also has its work: the time the FLOPs (counting
padded tiles and whole waves) and the bytes take at the GPU's peaks, and for attention
the waves of thread blocks the kernel launches (a block per 128 new tokens of each
head in a prefill or mixed batch, one per KV head of each sequence in a decode batch,
over the SM count:
each block pays a fixed set-up cost, which dominates short prefills and large decode
batches, most on Blackwell), from which ``fitting`` builds the calibrated roofline
the forests predict against. Sizes enter as
log1p (``transforms``): forests with random split points then interpolate between
measured sizes on a log scale; every feature is rounded to float32, as the forests
compare it.

Each family is one loop compiled by numba (``cache=True``: compiled on a machine's
first use, loaded from ``__pycache__`` after) that writes a row's raw columns in
``names(family)`` order. Fitting reads them through ``feature_matrix`` (hundreds of
thousands of rows at once); prediction runs the same loop and, in the same compiled
call, the range check, the calibrated roofline and the walk of the flattened forest
(``forest.py``'s layout), because the simulator asks for 1 to 256 rows at a time and a
call's fixed cost, not its arithmetic, dominates. The walk lives in this file because
numba's cache notices changes to the file of the function it compiled only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from frontier_dag.aot import Kernels
from frontier_dag.config.hardware import DTYPE_BYTES, HardwareConfig
from frontier_dag.cost.queries import (
    COLLECTIVE_FAMILIES,
    DEEPEP_FAMILIES,
    DEEPEP_WIDTH,
    MOE_FAMILIES,
    check_query,
)
from frontier_dag.cost.roofline import (
    ACTIVATION_BYTES,
    ELEMENTWISE_TRAFFIC,
    INTRA_NODE_COLLECTIVE_LATENCY_US,
    KERNEL_LAUNCH_US,
)

#: dtype -> code; types of one width and tensor-core rate share a code
DTYPE_CODES = {"fp32": 0, "bf16": 1, "fp16": 1, "fp8": 2, "fp8_block": 3, "int8": 4, "int4": 5, "fp4": 6,
               "int8_wo": 7, "fp8_wo": 8, "w4a16_mxfp4": 9, "w4a8_mxfp4_mxfp8": 10}
PLACEMENT_CODES = {"intra_node": 0, "inter_node": 1}
#: categorical columns whose codes come from the training data instead of a fixed table
LEARNED_CATEGORIES = {"all_reduce": ("impl",), "all_gather": ("impl",), "reduce_scatter": ("impl",),
                      "all_to_all": ("impl",), "deepep_dispatch": ("impl",), "deepep_combine": ("impl",), "elementwise": ("op",)}
#: features kept on their own scale (codes, shares, ratios); every other is a size and enters as log1p
LINEAR_FEATURES = frozenset({"dtype", "kv_dtype", "placement", "impl", "op", "decode_share", "gqa", "kv_splits",
                             "last_wave_fill", "load_cv", "load_gini", "load_entropy"})
UNKNOWN = -1.0
TILE = 128
MAX_KV_SPLITS = 128
#: families whose batches hold prefill sequences, planned by the split-KV heuristic (decode
#: kernels run under the framework's own split settings, e.g. fixed for CUDA graphs)
SPLIT_KV_FAMILIES = ("attention_prefill", "attention_mixed")

# -- the columns of each family, in the kernels' order -----------------------------------------

#: kernel kinds: which loop computes a family's columns, with which options
ATTENTION, ATTENTION_SPLIT, MLA_DECODE, MLA_PREFILL, GEMM, MOE, P2P, ALL_REDUCE, COLLECTIVE, ELEMENTWISE, DEEPEP, WIDE_EP = (
    range(12))
#: the wide-EP expert families (SGLang's DeepEP + DeepGEMM experts): the MoE loop plus ``_WIDE_EP``
WIDE_EP_FAMILIES = tuple(f for f in MOE_FAMILIES if f != "moe_grouped_gemm")
KINDS = {"attention_decode": ATTENTION, **dict.fromkeys(SPLIT_KV_FAMILIES, ATTENTION_SPLIT),
         "mla_decode": MLA_DECODE, "mla_prefill": MLA_PREFILL, "gemm": GEMM, "moe_grouped_gemm": MOE,
         **dict.fromkeys(WIDE_EP_FAMILIES, WIDE_EP),
         "p2p": P2P, **dict.fromkeys(COLLECTIVE_FAMILIES, COLLECTIVE), "all_reduce": ALL_REDUCE,
         "elementwise": ELEMENTWISE, **dict.fromkeys(DEEPEP_FAMILIES, DEEPEP)}

_LENGTHS = tuple(f"{side}_{stat}" for side in ("q", "kv") for stat in ("sum", "mean", "std", "min", "max", "p50",
                                                                      "p90"))
_SEQUENCES = ("n_seqs", "n_decode", "decode_share", *_LENGTHS, "pairs", "prefill_q_sum", "decode_kv_sum", "heads")
_HEADS = ("kv_heads", "head_dim", "gqa")
_MLA = ("kv_lora_rank", "rope_dim", "nope_dim", "v_dim")
_TILES = ("q_tiles", "q_waves", "q_full_waves", "kv_tiles", "kv_waves")
_ROOFLINE = ("log_flops", "log_bytes", "log_compute_us", "log_memory_us", "log_roofline_us",
             "log_quantized_compute_us")
_COLLECTIVE = ("log_bytes", "placement", "group_size", "log_bytes_per_rank", "impl", "log_roofline_us")
_MOE = ("num_tokens", "hidden", "num_experts", "topk", "ep", "moe_tp", "inter", "dtype", "n_local", "routed",
        "load_max", "load_mean", "load_cv", "load_gini", "load_entropy", "active", "tiles_16", "tiles_64", "waves")
#: what sets a wide-EP rank's expert time, in closed form from the shapes alone (``_wide_ep_columns``)
_WIDE_EP = ("tokens_per_rank", "expected_active", "expected_weight_us")
_NAMES = {
    ATTENTION: (*_SEQUENCES, *_HEADS, *_TILES, "dtype", "kv_dtype", *_ROOFLINE),
    ATTENTION_SPLIT: (*_SEQUENCES, *_HEADS, *_TILES, "kv_splits", "dtype", "kv_dtype", *_ROOFLINE),
    MLA_DECODE: (*_SEQUENCES, *_MLA, *_TILES, "dtype", "kv_dtype", *_ROOFLINE),
    MLA_PREFILL: (*_SEQUENCES, *_MLA, *_TILES, "dtype", "kv_dtype", *_ROOFLINE),
    GEMM: ("m", "n", "k", "dtype", "tiles", "waves", "last_wave_fill", "tiles_64", "m_mod_64", *_ROOFLINE),
    MOE: (*_MOE, *_ROOFLINE),
    WIDE_EP: (*_MOE, *_WIDE_EP, *_ROOFLINE),
    P2P: ("log_bytes", "placement", "log_roofline_us"),
    ALL_REDUCE: _COLLECTIVE,
    COLLECTIVE: _COLLECTIVE,
    ELEMENTWISE: ("op", "num_tokens", "hidden", "elements", "dtype", *_ROOFLINE),
    DEEPEP: ("num_tokens", "hidden", "topk", "num_experts", "group_size", "local_experts", "placement", "impl",
             "log_bytes", "log_bytes_per_rank", "log_roofline_us"),
}


def kind_of(family: str) -> int:
    if family not in KINDS:
        raise KeyError(f"unknown operator family {family!r}")
    return KINDS[family]


def names(family: str) -> tuple[str, ...]:
    """The feature columns of ``family``, in order."""
    return _NAMES[kind_of(family)]


def transforms(family: str) -> np.ndarray:
    """Per column: 0 kept (``LINEAR_FEATURES``), 1 log1p (a size), 2 log (a kernel's roofline
    time, which the launch latency keeps above zero)."""
    transfer = kind_of(family) in (P2P, ALL_REDUCE, COLLECTIVE, DEEPEP)
    return np.array([2 if name == "log_roofline_us" and not transfer else 0 if name in LINEAR_FEATURES else 1
                     for name in names(family)], dtype=np.int8)


# -- helpers of the row loops ------------------------------------------------------------------

#: The compiled loops; ``predict_rows``, the simulator's call, also ahead of time (frontier_dag.aot)
kernel = Kernels(__name__, error_model="numpy", exports={
    "predict_rows": "f8[:, ::1](i8, i8, f8[:], f8[:], i8[:], f8[:, :], f8[:], i1[:], f8[:, :], i4[:, ::1], f4[:], "
                    "i8[:], i8, f8[:])"})


@kernel
def _sort(values, n):
    """``values[:n]`` sorted in place; short rows by insertion, where numba's sort costs more
    to set up than to run."""
    if n > 16:
        values[:n].sort()
        return
    for i in range(1, n):
        x = values[i]
        j = i - 1
        while j >= 0 and values[j] > x:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = x


@kernel
def _quantile(ordered, n, p):
    """The linear-interpolated ``p`` quantile of ``ordered[:n]`` (numpy's default)."""
    position = p * (n - 1.0)
    low = np.floor(position)
    high = min(low + 1, n - 1)
    a, b = ordered[int(low)], ordered[int(high)]
    return a + (position - low) * (b - a)


@kernel
def _roofline_columns(out, o, work, flops, nbytes, peak, consts, quantization):
    """Raw log_flops, log_bytes, log_compute_us, log_memory_us, log_roofline_us and
    log_quantized_compute_us from ``out[o]``, and the work (quantized compute, memory) µs."""
    bw, launch = consts[1], consts[3]
    compute = flops / peak * 1e6
    memory = nbytes / bw * 1e6
    out[o] = flops
    out[o + 1] = nbytes
    out[o + 2] = compute
    out[o + 3] = memory
    out[o + 4] = launch + max(flops / peak, nbytes / bw) * 1e6
    out[o + 5] = compute * quantization
    work[0] = compute * quantization
    work[1] = memory


#: FlashAttention-3's causal forward tiles on Hopper by head size: (largest head size, query
#: rows, keys for 2-byte KV, keys for 1-byte KV); larger heads take the last
FA_TILES = ((64.0, 192.0, 128.0, 160.0), (96.0, 192.0, 144.0, 128.0), (128.0, 128.0, 128.0, 128.0),
            (192.0, 128.0, 112.0, 160.0), (np.inf, 128.0, 80.0, 128.0))


@kernel
def _fa_tiles(head_dim, kv_width):
    """(query rows, keys) of a FlashAttention-3 tile for ``head_dim`` and a KV of ``kv_width`` bytes."""
    for limit, rows, keys, fp8_keys in FA_TILES:
        if head_dim <= limit:
            return rows, fp8_keys if kv_width <= 1 else keys
    return 128.0, 80.0  # not reached: the last limit is infinite


@kernel
def _kv_splits(m_blocks, n_blocks, sm):
    """How many parts split-KV attention cuts the keys into (FlashAttention's heuristic): none
    (1) when the query tiles (``m_blocks``, of the longest sequence: a varlen batch is planned
    as if it were one) fill 80% of the SMs or there are at most 4 key tiles (``n_blocks``);
    else the fewest splits whose waves of tiles fill the SMs within 85% of the best."""
    if m_blocks >= 0.8 * sm or n_blocks <= 4:
        return 1.0
    limit = min(min(float(MAX_KV_SPLITS), sm), n_blocks)
    best = -1.0
    for split in range(1, MAX_KV_SPLITS + 1):
        if split <= limit:
            waves = m_blocks * split / sm
            best = max(best, waves / np.ceil(waves))
    for split in range(1, MAX_KV_SPLITS + 1):
        if split <= limit:
            waves = m_blocks * split / sm
            if waves / np.ceil(waves) >= 0.85 * best:
                return float(split)
    return 1.0


# -- one row of each family: raw columns into ``out``, work into ``work`` --------------------------

@kernel
def _attention_row(out, work, new, ctx, count, p, consts, kind, buf):
    """A batch of ``count`` sequences with ``new`` and ``ctx`` tokens. ``p``: heads, KV heads (1
    for MLA), head_dim (or MLA's kv_lora_rank, rope, nope, v dims), dtype code, KV dtype
    code, peak FLOP/s, KV width."""
    sm, act = consts[0], consts[2]
    mla = kind >= MLA_DECODE  # the attention kinds: ATTENTION, ATTENTION_SPLIT, MLA_DECODE, MLA_PREFILL
    n = float(count)
    heads, kvh = p[0], p[1]
    group = heads / kvh
    q_sum = kv_sum = q_sq = kv_sq = pairs = n_decode = prefill_q = decode_kv = 0.0
    q_tiles = kv_tiles = padded = real = blocks = 0.0
    q_lo, q_hi, k_lo, k_hi = np.inf, -np.inf, np.inf, -np.inf
    for j in range(count):
        q = new[j]
        k = q + ctx[j]
        attended = k - (q - 1.0) / 2.0  # causal: the average new token sees the context and half the new ones
        tiles = np.ceil(q * group / TILE)  # kernels tile each KV head's rows (new tokens x its heads) by 128
        buf[0, j], buf[1, j] = q, k
        q_sum += q
        kv_sum += k
        q_sq += q * q
        kv_sq += k * k
        pairs += q * attended
        if q == 1.0:
            n_decode += 1.0
            decode_kv += k
        else:
            prefill_q += q
        # a decode kernel packs each KV head's query heads into one block; a prefill (or mixed)
        # kernel runs a block per 128 new tokens of each head, a decode sequence's one included
        blocks += kvh if kind == ATTENTION else heads * np.ceil(q / TILE)
        q_tiles += tiles
        kv_tiles += np.ceil(k / TILE)
        padded += tiles * attended
        real += q * group * attended
        q_lo, q_hi, k_lo, k_hi = min(q_lo, q), max(q_hi, q), min(k_lo, k), max(k_hi, k)
    out[0], out[1], out[2] = n, n_decode, n_decode / n
    for side in range(2):  # q, then kv
        total, square = (q_sum, q_sq) if side == 0 else (kv_sum, kv_sq)
        lo, hi = (q_lo, q_hi) if side == 0 else (k_lo, k_hi)
        mean = total / n
        at = 3 + 7 * side
        out[at], out[at + 1], out[at + 2] = total, mean, math.sqrt(max(square / n - mean * mean, 0.0))
        out[at + 3], out[at + 4] = lo, hi
        if lo == hi:  # every sequence alike (a decode batch's new tokens): no sort
            out[at + 5] = out[at + 6] = lo
        else:
            _sort(buf[side], count)
            out[at + 5], out[at + 6] = _quantile(buf[side], count, 0.5), _quantile(buf[side], count, 0.9)
    out[17], out[18], out[19], out[20] = pairs, prefill_q, decode_kv, heads
    dcode, kvcode, peak, kv_width = p[-4], p[-3], p[-2], p[-1]
    if mla:
        rank, rope, nope, v = p[2], p[3], p[4], p[5]
        out[21], out[22], out[23], out[24] = rank, rope, nope, v
        latent = rank + rope
        if kind == MLA_DECODE:  # absorbed: scores and values in the latent space
            flops = 2 * heads * pairs * (latent + rank)
        else:
            flops = 2 * heads * pairs * (nope + rope + v)
        nbytes = kv_sum * latent * kv_width + 2 * q_sum * heads * latent * act
        o = 25
    else:
        d = p[2]
        out[21], out[22], out[23] = kvh, d, heads / kvh
        flops = 4 * heads * d * pairs
        nbytes = kv_sum * 2 * kvh * d * kv_width + 2 * q_sum * heads * d * act
        o = 24
    q_tiles *= kvh
    q_waves = q_tiles / sm
    out[o], out[o + 1], out[o + 2] = q_tiles, q_waves, np.ceil(q_waves)
    out[o + 3], out[o + 4] = kv_tiles * kvh, kv_tiles * kvh / sm
    o += 5
    if kind == ATTENTION_SPLIT:
        tile_rows, tile_keys = _fa_tiles(p[2], kv_width)
        out[o] = _kv_splits(kvh * np.ceil(q_hi * heads / kvh / tile_rows), np.ceil(k_hi / tile_keys), sm)
        o += 1
    out[o], out[o + 1] = dcode, kvcode
    quantization = padded * TILE / real * (np.ceil(q_waves) / max(q_waves, 1e-9))
    _roofline_columns(out, o + 2, work, flops, nbytes, peak, consts, quantization)
    if not mla:
        work[2] = blocks / sm


@kernel
def _moe_row(out, work, t, count, p, consts, ordered, wide):
    """``count`` local experts with ``t`` tokens each. ``p``: num_tokens, hidden, num_experts,
    topk, ep, moe_tp, inter, dtype code, peak FLOP/s, width. ``wide``: a wide-EP family,
    whose ``_WIDE_EP`` columns come before the roofline's."""
    sm, act = consts[0], consts[2]
    n = float(count)
    routed = square = active = tiles_16 = tiles_64 = 0.0
    peak_load = -np.inf
    for j in range(count):
        routed += t[j]
        square += t[j] * t[j]
        active += 1.0 if t[j] > 0 else 0.0
        tiles_16 += np.ceil(t[j] / 16)
        tiles_64 += np.ceil(t[j] / 64)
        peak_load = max(peak_load, t[j])
    floor_routed = max(routed, 1.0)
    # Gini over the loads sorted ascending: sum((2 rank - n - 1) load) / (n total)
    ordered[:count] = t
    _sort(ordered, count)
    gini = entropy = 0.0
    for j in range(count):
        gini += (2.0 * (j + 1) - n - 1) * ordered[j]
        share = t[j] / floor_routed
        entropy += -share * math.log2(share if share > 0 else 1.0)
    mean = routed / n
    hidden, inter = p[1], p[6]
    waves = tiles_64 * np.ceil(2 * inter / TILE) / sm
    out[:8] = p[:8]
    out[8], out[9], out[10], out[11] = n, routed, peak_load, mean
    out[12] = math.sqrt(max(square / n - mean * mean, 0.0)) / max(mean, 1e-12)
    out[13], out[14], out[15] = gini / (n * floor_routed), entropy, active
    out[16], out[17], out[18] = tiles_16, tiles_64, waves
    padding = tiles_64 * 64 / floor_routed if routed > 0 else 1.0
    quantization = padding * (np.ceil(waves) / max(waves, 1e-9))
    flops = 2 * 3 * hidden * inter * routed
    nbytes = 3 * hidden * inter * p[9] * active + 2 * routed * hidden * act
    o = 19
    if wide:
        _wide_ep_columns(out, o, p, consts)
        o += 3
    _roofline_columns(out, o, work, flops, nbytes, p[8], consts, quantization)


@kernel
def _wide_ep_columns(out, o, p, consts):
    """A wide-EP rank's expert time in closed form from the shapes alone: tokens per rank (the
    batch before dispatch over EP), the expected number of its local experts that random
    top-k routing activates, L (1 - (1 - k / E)^N), and the time their weights take to read
    at peak bandwidth (µs). At a few tokens per rank the experts are weight-bound and their
    time follows the active experts, which a held-out token count's neighbours do not show:
    this column carries it between the measured counts, whatever the replayed loads say."""
    tokens, hidden, experts, topk, ep, inter = p[0], p[1], p[2], p[3], p[4], p[6]
    local = experts / max(ep, 1.0)
    expected = local * (1.0 - (1.0 - min(topk / max(experts, 1.0), 1.0)) ** tokens)
    out[o], out[o + 1] = tokens / max(ep, 1.0), expected
    out[o + 2] = expected * 3 * hidden * inter * p[9] / consts[1] * 1e6


@kernel
def _gemm_row(out, work, p, consts):
    """``p``: m, n, k, dtype code, peak FLOP/s, width."""
    sm, act = consts[0], consts[2]
    m, n, k = p[0], p[1], p[2]
    tiles = np.ceil(m / TILE) * np.ceil(n / TILE)
    waves = tiles / sm
    out[0], out[1], out[2], out[3] = m, n, k, p[3]
    out[4], out[5], out[6] = tiles, waves, tiles / (np.ceil(waves) * sm)
    out[7], out[8] = np.ceil(m / 64) * np.ceil(n / TILE), m % 64
    quantization = tiles * TILE * TILE / (m * n) * (np.ceil(waves) / max(waves, 1e-9))
    _roofline_columns(out, 9, work, 2 * m * n * k, (m * k + k * n) * p[5] + m * n * act, p[4], consts,
                      quantization)


@kernel
def _transfer_row(out, work, p, kind):
    """``p``: bytes, group size, placement code, impl code, link bytes/s, link latency µs;
    the link time of a ring collective or a point-to-point copy."""
    nbytes, group, bandwidth, latency = p[0], p[1], p[4], p[5]
    out[0], out[1] = nbytes, p[2]
    if kind == P2P:
        link = latency + nbytes / bandwidth * 1e6
    else:
        g = max(group, 1.0)
        share = (g - 1) / g
        factor = 2 * share if kind == ALL_REDUCE else share
        link = latency + factor * nbytes / bandwidth * 1e6 if g > 1 else 0.0
        out[2], out[3], out[4] = group, nbytes / g, p[3]
    out[len(out) - 1] = link
    work[0], work[1] = 0.0, link


@kernel
def _deepep_row(out, work, p):
    """``p``: tokens per rank, hidden, top-k, experts, group size, placement code, impl code,
    link bytes/s, link latency µs, bytes per element; DeepEP's message (tokens x top-k x
    hidden) over the link as an all-to-all."""
    tokens, hidden, topk, experts = p[0], p[1], p[2], p[3]
    g = max(p[4], 1.0)
    nbytes = tokens * topk * hidden * p[9]
    out[0], out[1], out[2], out[3], out[4], out[5] = tokens, hidden, topk, experts, g, experts / g
    out[6], out[7], out[8], out[9] = p[5], p[6], nbytes, nbytes / g
    link = p[8] + (g - 1) / g * nbytes / p[7] * 1e6 if g > 1 else 0.0
    out[10] = link
    work[0], work[1] = 0.0, link


@kernel
def _elementwise_row(out, work, p, consts):
    """``p``: op code, tokens, hidden, dtype code, peak FLOP/s, width, elements moved per element."""
    elements = p[1] * p[2]
    out[0], out[1], out[2], out[3], out[4] = p[0], p[1], p[2], elements, p[3]
    _roofline_columns(out, 5, work, elements, elements * p[6] * p[5], p[4], consts, 1.0)


@kernel
def _raw(kind, rows, a, b, lengths, per_row, consts, width):
    """Raw columns (rows x width), work (rows x 3: compute µs and memory µs at the peaks,
    attention's waves of thread blocks, else 0) and the empty rows (no sequences or
    experts: zeros) of a batch. ``a`` and ``b``: the flat ragged values (new tokens and
    contexts, or expert loads) of rows of ``lengths`` values; ``per_row``: the family's
    scalar columns (values x rows, or x 1 for all rows); ``consts``: SM count, HBM bytes/s,
    activation bytes, kernel launch µs (arguments, not globals: numba would freeze a
    global of another file into its cache)."""
    raw = np.zeros((rows, width))
    work = np.zeros((rows, 3))
    empty = np.zeros(rows, dtype=np.bool_)
    ragged = kind <= MLA_PREFILL or kind in (MOE, WIDE_EP)
    longest = 1
    if ragged:
        for r in range(rows):
            longest = max(longest, lengths[r])
    buf = np.empty((2, longest))
    wide = per_row.shape[1] > 1
    start = 0
    for r in range(rows):
        p = per_row[:, r if wide else 0]
        if ragged:
            count = lengths[r]
            if count == 0:
                empty[r] = True
                continue
            if kind in (MOE, WIDE_EP):
                _moe_row(raw[r], work[r], a[start:start + count], count, p, consts, buf[0], kind == WIDE_EP)
            else:
                _attention_row(raw[r], work[r], a[start:start + count], b[start:start + count], count, p, consts,
                               kind, buf)
            start += count
        elif kind == GEMM:
            _gemm_row(raw[r], work[r], p, consts)
        elif kind == ELEMENTWISE:
            _elementwise_row(raw[r], work[r], p, consts)
        elif kind == DEEPEP:
            _deepep_row(raw[r], work[r], p)
        else:
            _transfer_row(raw[r], work[r], p, kind)
    return raw, work, empty


@kernel
def _transformed(raw, transform):
    """``transforms`` applied and float32 rounding, plus a last column of zeros (read at leaves)."""
    rows, width = raw.shape
    X = np.zeros((rows, width + 1), dtype=np.float32)
    for i in range(rows):
        for j in range(width):
            x = raw[i, j]
            if transform[j] == 1:
                x = math.log1p(x)
            elif transform[j] == 2:
                x = math.log(x)
            X[i, j] = np.float32(x)
    return X


@kernel
def _matrix(kind, rows, a, b, lengths, per_row, consts, transform):
    raw, work, _ = _raw(kind, rows, a, b, lengths, per_row, consts, len(transform))
    return _transformed(raw, transform)[:, :-1], work


@kernel
def walk_forest(X, nodes, roots, depth):
    """The leaf (node index) of every (row, tree) pair of the flat forest ``nodes`` (see
    ``forest.FlatForest``): rows x trees. ``X``'s last column is zeros, the feature of a leaf.
    Every pair moves one level per sweep, branch-free (a leaf is its own right child), so the
    cache misses of many pairs overlap: a family's trees do not fit in cache."""
    rows, trees = X.shape[0], len(roots)
    thresholds = nodes.view(np.float32)[:, 0]
    node = np.empty((rows, trees), dtype=np.int64)
    for i in range(rows):
        node[i] = roots
    for level in range(depth):
        for i in range(rows):
            x = X[i]
            at = node[i]
            for t in range(trees):
                n = at[t]
                go = np.int64(x[nodes[n, 1]] > thresholds[n])  # arithmetic, not a branch
                at[t] = n + 1 + go * (nodes[n, 2] - n - 1)
        if level % 4 == 3 and _on_leaves(node, thresholds):  # most paths end above the deepest leaf
            break
    return node


@kernel
def _on_leaves(node, thresholds):
    for i in range(node.shape[0]):
        for t in range(node.shape[1]):
            if thresholds[node[i, t]] != -np.inf:
                return False
    return True


@kernel
def predict_rows(kind, rows, a, b, lengths, per_row, consts, transform, box, nodes, spread, roots, depth, calibration):
    """Every row's (log inefficiency, log CV, calibrated roofline µs, out-of-range flag).

    ``box``: the range-checked columns, their low and high (3 x columns); ``nodes``,
    ``spread``, ``roots``, ``depth``: the flat forest (``forest.FlatForest``);
    ``calibration``: t0, e_c, e_m, serial share, µs per wave of blocks. A row without
    sequences predicts zeros."""
    raw, work, empty = _raw(kind, rows, a, b, lengths, per_row, consts, len(transform))
    X = _transformed(raw, transform)
    out = np.zeros((rows, 4))
    t0, e_c, e_m, serial, per_wave = calibration[0], calibration[1], calibration[2], calibration[3], calibration[4]
    for i in range(rows):
        for c in range(box.shape[1]):
            x = X[i, int(box[0, c])]
            if box[1, c] > x or box[2, c] < x:
                out[i, 3] = 1.0
                break
        compute, memory = work[i, 0] / e_c, work[i, 1] / e_m
        out[i, 2] = t0 + per_wave * work[i, 2] + max(compute, memory) + serial * min(compute, memory)
    node = walk_forest(X, nodes, roots, depth)
    values = nodes.view(np.float32)[:, 3]
    trees = len(roots)
    for i in range(rows):
        if empty[i]:
            out[i] = 0.0
            continue
        ratio = cv = 0.0
        for t in range(trees):
            ratio += np.float64(values[node[i, t]])
            if len(spread):
                cv += np.float64(spread[node[i, t]])
        out[i, 0], out[i, 1] = ratio / trees, cv / trees
    return out


# -- from a query to the kernels' arrays -------------------------------------------------------

class HardwareTables:
    """One GPU's constants, per-dtype peaks and widths and per-placement links, looked up once."""

    def __init__(self, hw: HardwareConfig):
        self.consts = np.array([float(hw.gpu.sm_count), float(hw.gpu.hbm_bandwidth_bytes_per_s), ACTIVATION_BYTES,
                                KERNEL_LAUNCH_US])
        self._hw = hw
        self._dtypes: dict[str, tuple[float, float, float]] = {}
        self._links = {False: (hw.network.bandwidth_bytes_per_s, hw.network.latency_us),
                       True: (hw.node.nvlink_bandwidth_bytes_per_s, INTRA_NODE_COLLECTIVE_LATENCY_US)}

    def dtype(self, value, stored: bool = False) -> tuple[float, float, float]:
        """(code, peak FLOP/s, width in bytes; NaN if unknown) of a dtype. ``stored``: a
        precision the GPU only stores (an FP8 KV cache on an A100, read into BF16 matmuls):
        its peak is NaN where the GPU has no tensor cores for it, instead of an error."""
        key = str(value)
        found = self._dtypes.get(key)
        if found is None:
            if stored and key in DTYPE_BYTES and not self._hw.gpu.supports(key):
                return float(DTYPE_CODES.get(key, UNKNOWN)), math.nan, float(DTYPE_BYTES[key])
            found = self._dtypes[key] = (float(DTYPE_CODES.get(key, UNKNOWN)), float(self._hw.gpu.peak_flops(key)),
                                         float(DTYPE_BYTES.get(key, math.nan)))
        return found

    def dtype_columns(self, values, width: bool = True, stored: bool = False) -> tuple:
        """Code, peak and width of a dtype column, each a scalar where every row has the
        same dtype; an unknown width is a KeyError, as in the roofline, where it is needed.
        ``stored``: as in ``dtype``."""
        if _constant(values):
            found = self.dtype(values[0], stored)
            if width and math.isnan(found[2]):
                raise KeyError(str(values[0]))
            return found
        found = tuple(zip(*(self.dtype(v, stored) for v in values), strict=True))
        if width and any(math.isnan(w) for w in found[2]):
            raise KeyError(next(str(v) for v in values if str(v) not in DTYPE_BYTES))
        return found

    def link_columns(self, placements) -> tuple:
        """Placement code, link bandwidth and latency of a placement column (scalars where
        every row has the same placement)."""
        def link(p) -> tuple[float, float, float]:
            return (float(PLACEMENT_CODES.get(str(p), UNKNOWN)), *self._links[str(p) != "inter_node"])
        if _constant(placements):
            return link(placements[0])
        return tuple(zip(*(link(p) for p in placements), strict=True))


def _constant(values) -> bool:
    """Whether a list column holds one value in every row (the common case, cheap to check)."""
    return isinstance(values, list) and values.count(values[0]) == len(values)


def _column(values):
    """A query column as one scalar when every row has the same value, else as it is."""
    return values[0] if _constant(values) else values


def _per_row(columns: list, rows: int) -> np.ndarray:
    """Columns (scalars or per-row sequences) as the kernels' (columns x rows) matrix, or
    (columns x 1) when every column is a scalar."""
    if all(not isinstance(c, (list, tuple, np.ndarray)) for c in columns):
        return np.array(columns, dtype=np.float64).reshape(len(columns), 1)
    out = np.empty((len(columns), rows))
    for i, column in enumerate(columns):
        out[i] = column
    return out


def _ragged(column: Sequence[Any], rows: int) -> tuple[np.ndarray, list[int]]:
    """Flat float values and row lengths of a ragged column (of 1-D sequences)."""
    if rows == 1:
        flat = np.asarray(column[0], dtype=np.float64).ravel()
        return flat, [len(flat)]
    lengths = [len(v) for v in column]
    try:
        flat = np.concatenate(column)
    except ValueError:  # a row given as a scalar or a nested sequence
        flat = np.concatenate(column, axis=None)
    return flat.astype(np.float64, copy=False), lengths


_NONE = np.zeros(0)
_NO_LENGTHS = np.zeros(0, dtype=np.int64)
_MLA_SHAPE = ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
_MOE_SHAPE = ("num_tokens", "hidden", "num_experts", "topk", "ep", "moe_tp", "inter")


class Featurizer:
    """``family``'s kernel inputs from a query on one GPU, with the codes of the learned
    categories (``vocab``: their known values; an unknown value, like an unknown dtype,
    gets the code -1)."""

    def __init__(self, family: str, tables: HardwareTables, vocab: Mapping[str, Sequence[str]] | None = None):
        self.family, self.tables, self.kind = family, tables, kind_of(family)
        self.names = names(family)
        self.transform = transforms(family)
        self.codes = {c: {v: float(i) for i, v in enumerate(values)} for c, values in (vocab or {}).items()}

    def inputs(self, q: Mapping[str, Any], rows: int) -> tuple:
        """(kind, rows, a, b, lengths, per_row, consts): the arguments of ``_raw``."""
        kind, tables = self.kind, self.tables
        a, b, lengths = _NONE, _NONE, _NO_LENGTHS
        if kind <= MLA_PREFILL:
            a, counts = _ragged(q["q_lens"], rows)
            b, ctx_counts = _ragged(q["ctx_lens"], rows)
            if counts != ctx_counts or len(a) != len(b):
                raise ValueError(f"{self.family} query: q_lens and ctx_lens differ in length in some row")
            lengths = np.array(counts, dtype=np.int64)
            per_row = self.attention_rows(q, rows)
        elif kind in (MOE, WIDE_EP):
            a, counts = _ragged(q["expert_tokens"], rows)
            lengths = np.array(counts, dtype=np.int64)
            per_row = _per_row([*(_column(q[c]) for c in _MOE_SHAPE), *tables.dtype_columns(q["dtype"])], rows)
        elif kind == GEMM:
            per_row = _per_row([_column(q["m"]), _column(q["n"]), _column(q["k"]), *tables.dtype_columns(q["dtype"])],
                               rows)
        elif kind == ELEMENTWISE:
            ops = q["op"]
            traffic = [ELEMENTWISE_TRAFFIC.get(str(op), 2.0) for op in ops]
            per_row = _per_row([self._code("op", ops), _column(q["num_tokens"]), _column(q["hidden"]),
                                *tables.dtype_columns(q["dtype"]), _column(traffic)], rows)
        elif kind == DEEPEP:
            placement, bandwidth, latency = tables.link_columns(q["placement"])
            per_row = _per_row([_column(q["num_tokens"]), _column(q["hidden"]), _column(q["topk"]),
                                _column(q["num_experts"]), _column(q["group_size"]), placement,
                                self._code("impl", q["impl"]), bandwidth, latency, DEEPEP_WIDTH[self.family]], rows)
        else:
            placement, bandwidth, latency = tables.link_columns(q["placement"])
            group, impl = (0.0, 0.0) if kind == P2P else (_column(q["group_size"]), self._code("impl", q["impl"]))
            per_row = _per_row([_column(q["bytes"]), group, placement, impl, bandwidth, latency], rows)
        return kind, rows, a, b, lengths, per_row, tables.consts

    def attention_rows(self, q: Mapping[str, Any], rows: int) -> np.ndarray:
        """The attention loop's ``per_row``: head shape, dtype codes, peak and KV width."""
        code, peak, _ = self.tables.dtype_columns(q["dtype"], width=False)
        kv_code, _, kv_width = self.tables.dtype_columns(q["kv_dtype"], stored=True)
        if self.kind in (MLA_DECODE, MLA_PREFILL):
            shape = [_column(q["num_heads"]), 1.0, *(_column(q[c]) for c in _MLA_SHAPE)]
        else:
            shape = [_column(q["num_heads"]), _column(q["num_kv_heads"]), _column(q["head_dim"])]
        return _per_row([*shape, code, kv_code, peak, kv_width], rows)

    def _code(self, column: str, values):
        codes = self.codes.get(column, {})
        if _constant(values):
            return codes.get(str(values[0]), UNKNOWN)
        return [codes.get(str(v), UNKNOWN) for v in values]

    def raw(self, query: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Raw columns (before ``transforms``) and work of every row of ``query``."""
        raw, work, _ = _raw(*self.inputs(query, check_query(self.family, query)), len(self.names))
        return raw, work

    def matrix(self, query: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The feature matrix (rows x features, float32 values) and the work of ``query``."""
        return _matrix(*self.inputs(query, check_query(self.family, query)), self.transform)


def learn_vocab(family: str, query: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The sorted distinct values of ``family``'s learned categorical columns."""
    return {c: tuple(sorted({str(v) for v in query[c]})) for c in LEARNED_CATEGORIES.get(family, ())}


def features(family: str, query: Mapping[str, Any], hw: HardwareConfig,
             vocab: Mapping[str, Sequence[str]] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Named feature columns of ``query`` in float64, sizes before their log1p (the
    ``log_`` columns logged), and its work: the time (µs) its FLOPs and its bytes take at
    the GPU's peaks and the waves of thread blocks (rows x 3, as ``_raw``; a transfer's bytes
    at the link's bandwidth). The compute
    time counts padded tiles and whole waves of tiles."""
    featurizer = Featurizer(family, HardwareTables(hw), vocab)
    raw, work = featurizer.raw(query)
    logs = {1: np.log1p, 2: np.log}
    return {name: logs[code](column) if name.startswith("log_") else column
            for name, code, column in zip(featurizer.names, featurizer.transform, raw.T, strict=True)}, work


def feature_matrix(family: str, query: Mapping[str, Any], hw: HardwareConfig,
                   vocab: Mapping[str, Sequence[str]] | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The feature matrix of ``query`` (float32 values as float64, sizes as log1p), the
    names of its columns and the work."""
    featurizer = Featurizer(family, HardwareTables(hw), vocab)
    X, work = featurizer.matrix(query)
    return X.astype(float), list(featurizer.names), work
