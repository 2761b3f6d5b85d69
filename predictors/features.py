"""Distributional features of a batch of cost queries, one row per query, vectorized.

* attention / MLA, from every sequence of the batch: count, decode count and share;
  sum, mean, std, min, max, p50, p90 of the new tokens (q) and of the keys attended
  (kv = context + new); the attended (query, key) pairs (sum of q x kv, causal);
  new prefill tokens and decode keys; query tiles (128 rows) and KV tiles (128 keys)
  and their waves against the SM count; heads, KV heads (or MLA ranks), head size, dtypes.
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
memory time, roofline time). ``features`` also returns the work: the time the FLOPs
(counting padded tiles and whole waves) and the bytes take at the GPU's peaks, from
which ``fitting`` builds the calibrated roofline the forests predict against.

Sizes enter as log1p (``feature_matrix``): forests with random split points then
interpolate between measured sizes on a log scale. The ragged statistics of all value
columns are computed together (one reduction per statistic, one sort for all
quantiles), since a query batch is often a single row and numpy calls, not
arithmetic, dominate its cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from frontier_dag.config.hardware import DTYPE_BYTES, HardwareConfig
from frontier_dag.cost.queries import (
    ATTENTION_FAMILIES,
    COLLECTIVE_FAMILIES,
    DEEPEP_FAMILIES,
    MLA_FAMILIES,
    MOE_FAMILIES,
    check_query,
)
from frontier_dag.cost.roofline import (
    attention_flops_and_bytes,
    deepep_bytes,
    flops_and_bytes,
    kernel_roofline_us,
    moe_flops_and_bytes,
    roofline_us,
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


class Segments:
    """The rows of a ragged column: row i owns ``lengths[i]`` consecutive flat values.
    Statistics take a flat matrix (values x columns) and return rows x columns."""

    def __init__(self, column: Sequence[Any]):
        arrays = [np.asarray(a, dtype=float).ravel() for a in column]
        self.lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        self.flat = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        self.starts = np.zeros(len(arrays), dtype=np.int64)
        np.cumsum(self.lengths[:-1], out=self.starts[1:])
        self.rows = np.repeat(np.arange(len(arrays)), self.lengths)

    def sum(self, matrix: np.ndarray) -> np.ndarray:
        return np.add.reduceat(matrix, self.starts, axis=0)

    def max(self, matrix: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(matrix, self.starts, axis=0)

    def min(self, matrix: np.ndarray) -> np.ndarray:
        return np.minimum.reduceat(matrix, self.starts, axis=0)

    def sort(self, matrix: np.ndarray) -> np.ndarray:
        """Each column sorted ascending within each row (non-negative values)."""
        span = matrix.max(initial=0.0) + 1.0
        keyed = np.sort(matrix + (self.rows * span)[:, None], axis=0)
        return keyed - (self.rows * span)[:, None]

    def quantiles(self, ordered: np.ndarray, ps: Sequence[float]) -> list[np.ndarray]:
        """Linear-interpolated quantiles of each row from ``sort``'s output."""
        out = []
        for p in ps:
            position = p * (self.lengths - 1)
            low = np.floor(position).astype(np.int64)
            high = np.minimum(low + 1, self.lengths - 1)
            a, b = ordered[self.starts + low], ordered[self.starts + high]
            out.append(a + (position - low)[:, None] * (b - a))
        return out


def _num(query: Mapping[str, Any], column: str) -> np.ndarray:
    return np.asarray(query[column], dtype=float)


def _codes(values, table: Mapping[str, int] | Sequence[str]) -> np.ndarray:
    lookup = table if isinstance(table, Mapping) else {name: i for i, name in enumerate(table)}
    return np.array([lookup.get(str(v), UNKNOWN) for v in values], dtype=float)


def _wave_quantization(waves: np.ndarray) -> np.ndarray:
    """How much longer ``waves`` waves of equal tiles take than their share of the GPU: a
    partial last wave costs a whole one, and fewer tiles than SMs leave SMs idle."""
    return np.ceil(waves) / np.maximum(waves, 1e-9)


#: FlashAttention-3's causal forward tiles (query rows, keys) on Hopper by head size, for
#: 2-byte and 1-byte (fp8) operands: (largest head size, rows, keys); larger heads: the last
FA_TILES = {2: ((64, 192, 128), (96, 192, 144), (128, 128, 128), (192, 128, 112), (np.inf, 128, 80)),
            1: ((64, 192, 160), (96, 192, 128), (128, 128, 128), (192, 128, 160), (np.inf, 128, 128))}
MAX_KV_SPLITS = 128
#: families whose batches hold prefill sequences, planned by the split-KV heuristic (decode
#: kernels run under the framework's own split settings, e.g. fixed for CUDA graphs)
SPLIT_KV_FAMILIES = ("attention_prefill", "attention_mixed")


def fa_tiles(head_dim: np.ndarray, kv_width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query rows and keys of a FlashAttention-3 tile per row (fp8 tiles where the KV cache is 1 byte)."""
    rows, keys = np.zeros_like(head_dim), np.zeros_like(head_dim)
    for width, table in FA_TILES.items():
        for limit, m, n in reversed(table):
            at = (head_dim <= limit) & ((kv_width <= 1) == (width == 1))
            rows, keys = np.where(at, m, rows), np.where(at, n, keys)
    return rows, keys


def kv_splits(m_blocks: np.ndarray, n_blocks: np.ndarray, sm: int) -> np.ndarray:
    """How many parts split-KV attention cuts the keys into (FlashAttention's heuristic): none
    (1) when the query tiles (``m_blocks``, of the longest sequence: a varlen batch is planned
    as if it were one) fill 80% of the SMs or there are at most 4 key tiles (``n_blocks``);
    else the fewest splits whose waves of tiles fill the SMs within 85% of the best."""
    splits = np.arange(1, MAX_KV_SPLITS + 1, dtype=float)
    waves = m_blocks[:, None] * splits[None, :] / sm
    efficiency = waves / np.ceil(waves)
    allowed = splits[None, :] <= np.minimum(min(MAX_KV_SPLITS, sm), n_blocks)[:, None]
    efficiency = np.where(allowed, efficiency, -1.0)
    best = efficiency.max(axis=1)
    first = np.argmax(efficiency >= 0.85 * best[:, None], axis=1) + 1.0
    return np.where((m_blocks >= 0.8 * sm) | (n_blocks <= 4), 1.0, first)


def _attention(family: str, q: Mapping[str, Any], hw: HardwareConfig) -> tuple[dict, np.ndarray, np.ndarray]:
    """Features, FLOPs and bytes, and the compute time's tile padding x wave quantization."""
    seq = Segments(q["q_lens"])
    new = seq.flat
    keys = new + Segments(q["ctx_lens"]).flat
    heads = _num(q, "num_heads")
    kv_heads = np.ones_like(heads) if family in MLA_FAMILIES else _num(q, "num_kv_heads")
    group = (heads / kv_heads)[seq.rows]
    decode = new == 1
    attended = keys - (new - 1) / 2  # causal: the average new token sees the context and half the new ones
    # kernels tile each KV head's rows (new tokens x the heads sharing it) by 128
    q_tiles = np.ceil(new * group / TILE)
    values = np.column_stack([new, keys])
    sums = seq.sum(np.column_stack([new, keys, new**2, keys**2, new * attended, decode, np.where(decode, 0, new),
                                    np.where(decode, keys, 0), q_tiles, np.ceil(keys / TILE), q_tiles * attended,
                                    new * group * attended]))
    n = seq.lengths.astype(float)
    (q_sum, kv_sum, q_sq, kv_sq, pairs, n_decode, prefill_q, decode_kv, q_tiles_sum, kv_tiles_sum,
     padded, real) = sums.T
    low, high = seq.min(values).T, seq.max(values).T
    p50, p90 = (x.T for x in seq.quantiles(seq.sort(values), (0.5, 0.9)))
    f = {"n_seqs": n, "n_decode": n_decode, "decode_share": n_decode / n}
    for i, (name, total, square) in enumerate((("q", q_sum, q_sq), ("kv", kv_sum, kv_sq))):
        mean = total / n
        f.update({f"{name}_sum": total, f"{name}_mean": mean, f"{name}_std": np.sqrt(np.maximum(square / n - mean**2, 0)),
                  f"{name}_min": low[i], f"{name}_max": high[i], f"{name}_p50": p50[i], f"{name}_p90": p90[i]})
    f.update(pairs=pairs, prefill_q_sum=prefill_q, decode_kv_sum=decode_kv, heads=heads)
    if family in MLA_FAMILIES:
        f.update(kv_lora_rank=_num(q, "kv_lora_rank"), rope_dim=_num(q, "qk_rope_head_dim"),
                 nope_dim=_num(q, "qk_nope_head_dim"), v_dim=_num(q, "v_head_dim"))
    else:
        f.update(kv_heads=kv_heads, head_dim=_num(q, "head_dim"), gqa=heads / kv_heads)
    sm = hw.gpu.sm_count
    f["q_tiles"] = q_tiles_sum * kv_heads
    f["q_waves"] = f["q_tiles"] / sm
    f["q_full_waves"] = np.ceil(f["q_waves"])
    f["kv_tiles"] = kv_tiles_sum * kv_heads
    f["kv_waves"] = f["kv_tiles"] / sm
    if family in SPLIT_KV_FAMILIES:
        tile_rows, tile_keys = fa_tiles(f["head_dim"], np.array([DTYPE_BYTES[str(d)] for d in q["kv_dtype"]]))
        f["kv_splits"] = kv_splits(kv_heads * np.ceil(high[0] * heads / kv_heads / tile_rows),
                                   np.ceil(high[1] / tile_keys), sm)
    f["dtype"] = _codes(q["dtype"], DTYPE_CODES)
    f["kv_dtype"] = _codes(q["kv_dtype"], DTYPE_CODES)
    flops_bytes = attention_flops_and_bytes(family, q, pairs, kv_sum, q_sum)
    return f, flops_bytes, padded * TILE / real * _wave_quantization(f["q_waves"])


def _gemm(q: Mapping[str, Any], hw: HardwareConfig) -> tuple[dict, np.ndarray]:
    m, n, k = _num(q, "m"), _num(q, "n"), _num(q, "k")
    sm = hw.gpu.sm_count
    tiles = np.ceil(m / TILE) * np.ceil(n / TILE)
    waves = tiles / sm
    named = {"m": m, "n": n, "k": k, "dtype": _codes(q["dtype"], DTYPE_CODES), "tiles": tiles, "waves": waves,
             "last_wave_fill": tiles / (np.ceil(waves) * sm), "tiles_64": np.ceil(m / 64) * np.ceil(n / TILE),
             "m_mod_64": m % 64}
    return named, tiles * TILE * TILE / (m * n) * _wave_quantization(waves)


def _moe(q: Mapping[str, Any], hw: HardwareConfig) -> tuple[dict, np.ndarray, np.ndarray]:
    seg = Segments(q["expert_tokens"])
    t = seg.flat
    sums = seg.sum(np.column_stack([t, t**2, t > 0, np.ceil(t / 16), np.ceil(t / 64)]))
    routed, square, active, tiles_16, tiles_64 = sums.T
    n = seg.lengths.astype(float)
    mean = routed / n
    # Gini over the loads sorted ascending: sum((2 rank - n - 1) load) / (n total)
    ordered = seg.sort(t[:, None])[:, 0]
    rank = np.arange(len(t)) - seg.starts[seg.rows] + 1
    share = t / np.maximum(routed[seg.rows], 1)
    gini_sum, entropy = seg.sum(np.column_stack([(2 * rank - n[seg.rows] - 1) * ordered,
                                                 -share * np.log2(np.where(share > 0, share, 1))])).T
    inter = _num(q, "inter")
    f = {c: _num(q, c) for c in ("num_tokens", "hidden", "num_experts", "topk", "ep", "moe_tp")}
    f.update(inter=inter, dtype=_codes(q["dtype"], DTYPE_CODES), n_local=n, routed=routed,
             load_max=seg.max(t[:, None])[:, 0], load_mean=mean,
             load_cv=np.sqrt(np.maximum(square / n - mean**2, 0)) / np.maximum(mean, 1e-12),
             load_gini=gini_sum / (n * np.maximum(routed, 1)), load_entropy=entropy, active=active,
             tiles_16=tiles_16, tiles_64=tiles_64, waves=tiles_64 * np.ceil(2 * inter / TILE) / hw.gpu.sm_count)
    padding = np.where(routed > 0, tiles_64 * 64 / np.maximum(routed, 1), 1.0)
    return f, moe_flops_and_bytes(q, routed, active), padding * _wave_quantization(f["waves"])


def _transfer(family: str, q: Mapping[str, Any], vocab: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    nbytes = _num(q, "bytes")
    f = {"log_bytes": np.log1p(nbytes), "placement": _codes(q["placement"], PLACEMENT_CODES)}
    if family != "p2p":
        group = _num(q, "group_size")
        f.update(group_size=group, log_bytes_per_rank=np.log1p(nbytes / np.maximum(group, 1)),
                 impl=_codes(q["impl"], vocab.get("impl", ())))
    return f


def _deepep(family: str, q: Mapping[str, Any], vocab: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    tokens, topk, group = _num(q, "num_tokens"), _num(q, "topk"), np.maximum(_num(q, "group_size"), 1)
    nbytes = deepep_bytes(family, q)
    return {"num_tokens": tokens, "hidden": _num(q, "hidden"), "topk": topk, "num_experts": _num(q, "num_experts"),
            "group_size": group, "local_experts": _num(q, "num_experts") / group,
            "placement": _codes(q["placement"], PLACEMENT_CODES), "impl": _codes(q["impl"], vocab.get("impl", ())),
            "log_bytes": np.log1p(nbytes), "log_bytes_per_rank": np.log1p(nbytes / group)}


def _elementwise(q: Mapping[str, Any], vocab: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    tokens, hidden = _num(q, "num_tokens"), _num(q, "hidden")
    return {"op": _codes(q["op"], vocab.get("op", ())), "num_tokens": tokens, "hidden": hidden,
            "elements": tokens * hidden, "dtype": _codes(q["dtype"], DTYPE_CODES)}


def features(family: str, query: Mapping[str, Any], hw: HardwareConfig,
             vocab: Mapping[str, Sequence[str]] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Named feature columns of ``query`` and its work: the time (µs) its FLOPs and its
    bytes take at the GPU's peaks (rows x 2; a transfer's bytes at the link's bandwidth).
    The compute time counts padded tiles and whole waves of tiles (``_wave_quantization``).

    ``vocab`` lists the known values of the learned categorical columns (``impl``, ``op``);
    an unknown value, like an unknown dtype, gets the code -1.
    """
    check_query(family, query)
    vocab = vocab or {}
    if family in COLLECTIVE_FAMILIES or family == "p2p" or family in DEEPEP_FAMILIES:
        named = _deepep(family, query, vocab) if family in DEEPEP_FAMILIES else _transfer(family, query, vocab)
        link_us = roofline_us(family, query, hw)
        named["log_roofline_us"] = np.log1p(link_us)
        return named, np.column_stack([np.zeros_like(link_us), link_us])
    if family in ATTENTION_FAMILIES or family in MLA_FAMILIES:
        named, (flops, nbytes), quantization = _attention(family, query, hw)
    elif family in MOE_FAMILIES:
        named, (flops, nbytes), quantization = _moe(query, hw)
    elif family == "gemm":
        (named, quantization), (flops, nbytes) = _gemm(query, hw), flops_and_bytes(family, query)
    elif family == "elementwise":
        named, quantization, (flops, nbytes) = _elementwise(query, vocab), 1.0, flops_and_bytes(family, query)
    else:
        raise KeyError(f"unknown operator family {family!r}")
    dtypes = query["dtype"]
    compute = flops / np.array([hw.gpu.peak_flops(str(d)) for d in dtypes]) * 1e6
    memory = nbytes / hw.gpu.hbm_bandwidth_bytes_per_s * 1e6
    named.update(log_flops=np.log1p(flops), log_bytes=np.log1p(nbytes), log_compute_us=np.log1p(compute),
                 log_memory_us=np.log1p(memory),
                 log_roofline_us=np.log(kernel_roofline_us(flops, nbytes, dtypes, hw)),
                 log_quantized_compute_us=np.log1p(compute * quantization))
    return named, np.column_stack([compute * quantization, memory])


def learn_vocab(family: str, query: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The sorted distinct values of ``family``'s learned categorical columns."""
    return {c: tuple(sorted({str(v) for v in query[c]})) for c in LEARNED_CATEGORIES.get(family, ())}


def feature_matrix(family: str, query: Mapping[str, Any], hw: HardwareConfig,
                   vocab: Mapping[str, Sequence[str]] | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``features`` as a float32-exact matrix (rows x features, sizes as log1p), the names, the work."""
    named, work = features(family, query, hw, vocab)
    names = list(named)
    matrix = np.column_stack(list(named.values())).astype(float)
    sizes = [j for j, name in enumerate(names) if name not in LINEAR_FEATURES and not name.startswith("log_")]
    matrix[:, sizes] = np.log1p(matrix[:, sizes])
    # forests compare float32 features against thresholds halfway between float32 values
    return matrix.astype(np.float32).astype(float), names, work
