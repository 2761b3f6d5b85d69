"""The prediction-time path: a family's features and the forest walk compiled with numba.

``features.py`` defines the features with numpy (it serves fitting, a few hundred
thousand rows at once); at prediction time the simulator asks for 1 to 256 rows at a
time, where numpy's per-call overhead (1-2 µs a call, about 200 calls for the features
and a level-synchronous walk) costs 0.5-1 ms however few the rows. Here each family's
raw feature columns (before log1p), its work, the range check and the walk of every
(row, tree) pair are loops compiled once by numba (``cache=True``: compiled on a
machine's first use, loaded from ``__pycache__`` after), so a call costs a few numpy
calls plus the arithmetic.

One call of a family's kernel does all of it: raw columns, log1p / log, float32
rounding, the range check, and a walk that moves every (row, tree) pair one level per
sweep, so the cache misses of many pairs overlap (a forest of 24 trees of up to 10^5
nodes each does not fit in cache; one pair at a time waits for each node in turn).

The results are bit for bit those of ``features.feature_matrix``, ``FlatForest`` and
``FamilyModel.predict``: every float operation is done in the reference's order (sums
of a row's sequences in numpy's ``add.reduceat`` order, the first value plus numpy's
pairwise sum of the rest; the mean over trees in sequence), log1p and log are libm's,
as numpy's are where it has no AVX-512 (elsewhere a last-bit difference could move a
feature's float32 rounding, about once in 10^9 values), and the final exp is numpy's.
``tests/predictors/test_fastpath.py`` compares both on random heterogeneous batches of
every family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numba import njit

from frontier_dag.config.hardware import DTYPE_BYTES, HardwareConfig
from frontier_dag.cost.queries import (
    ATTENTION_FAMILIES,
    COLLECTIVE_FAMILIES,
    MLA_FAMILIES,
    MOE_FAMILIES,
)
from frontier_dag.cost.roofline import (
    ACTIVATION_BYTES,
    INTRA_NODE_COLLECTIVE_LATENCY_US,
    KERNEL_LAUNCH_US,
)

from .features import (
    DTYPE_CODES,
    LINEAR_FEATURES,
    MAX_KV_SPLITS,
    PLACEMENT_CODES,
    SPLIT_KV_FAMILIES,
    TILE,
    UNKNOWN,
)

#: families with a compiled feature kernel; the others (elementwise) use ``features.py``
FAST_FAMILIES = frozenset({*ATTENTION_FAMILIES, *MLA_FAMILIES, "gemm", *MOE_FAMILIES, *COLLECTIVE_FAMILIES,
                           "p2p"})
_MLA_KIND = {"mla_decode": 1, "mla_prefill": 2}


# -- sums in numpy's order ---------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _block(a, lo, n):
    """numpy's pairwise summation of ``a[lo:lo + n]`` for n <= 128 (8 accumulators)."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    end = n - n % 8
    while i < end:
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, error_model="numpy")
def _pairwise(a, lo, n):
    """numpy's pairwise summation of ``a[lo:lo + n]``: blocks of at most 128 values, longer
    spans split in two (at a multiple of 8) and summed left + right. The recursion runs on
    an explicit stack (numba's cache mishandles recursive functions)."""
    if n <= 128:
        return _block(a, lo, n)
    todo_lo = np.empty(128, dtype=np.int64)
    todo_n = np.empty(128, dtype=np.int64)  # -1 marks "add the two sums on top"
    sums = np.empty(64)
    todo_lo[0], todo_n[0] = lo, n
    top, held = 1, 0
    while top > 0:
        top -= 1
        start, count = todo_lo[top], todo_n[top]
        if count < 0:
            held -= 1
            sums[held - 1] = sums[held - 1] + sums[held]
        elif count <= 128:
            sums[held] = _block(a, start, count)
            held += 1
        else:
            half = count // 2
            half -= half % 8
            todo_lo[top], todo_n[top] = 0, -1
            todo_lo[top + 1], todo_n[top + 1] = start + half, count - half
            todo_lo[top + 2], todo_n[top + 2] = start, half
            top += 3
    return sums[0]


@njit(cache=True, error_model="numpy")
def _segment_sum(a, n):
    """``np.add.reduceat`` of one segment ``a[:n]``: its first value plus the pairwise rest."""
    if n == 1:
        return a[0]
    return a[0] + _pairwise(a, 1, n - 1)


@njit(cache=True, error_model="numpy")
def _quantile(ordered, n, p):
    position = p * (n - 1.0)
    low = np.floor(position)
    high = min(low + 1, n - 1)
    a, b = ordered[int(low)], ordered[int(high)]
    return a + (position - low) * (b - a)


# -- shared tail: transforms, range check, walk ------------------------------------------------

@njit(cache=True, error_model="numpy")
def _insertion_sort(values, n):
    for i in range(1, n):
        x = values[i]
        j = i - 1
        while j >= 0 and values[j] > x:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = x


@njit(cache=True, error_model="numpy")
def _sorted_into(out, values, n):
    """``values[:n]`` sorted ascending into ``out[:n]`` (no allocation)."""
    for j in range(n):
        out[j] = values[j]
    if n <= 16:
        _insertion_sort(out, n)
    else:
        out[:n].sort()


@njit(cache=True, error_model="numpy")
def _finish(raw, work, empty, transform, checked, low, high, nodes, as_float, spread, roots, depth, calibration):
    """From raw columns to the prediction of every row: (rows x 4) log inefficiency, log
    CV, calibrated roofline (µs) and out-of-range flag. ``transform`` per column: 0 none,
    1 log1p, 2 log; ``empty`` rows (no sequences) get zeros."""
    rows, width = raw.shape
    X = np.zeros((rows, width + 1), dtype=np.float32)  # the last column: 0, read by leaves
    out = np.zeros((rows, 4))
    t0, e_c, e_m, serial = calibration[0], calibration[1], calibration[2], calibration[3]
    for i in range(rows):
        for j in range(width):
            x = raw[i, j]
            kind = transform[j]
            if kind == 1:
                x = math.log1p(x)
            elif kind == 2:
                x = math.log(x)
            X[i, j] = np.float32(x)
        for c in checked:
            x = X[i, c]
            if low[c] > x or high[c] < x:
                out[i, 3] = 1.0
                break
        compute, memory = work[i, 0] / e_c, work[i, 1] / e_m
        out[i, 2] = t0 + max(compute, memory) + serial * min(compute, memory)
    trees = len(roots)
    node = np.empty((rows, trees), dtype=np.int64)
    for i in range(rows):
        for t in range(trees):
            node[i, t] = roots[t]
    # every (row, tree) pair one level per sweep, without branches: the sweeps' loads are
    # independent, so their cache misses overlap; a leaf's right child is itself
    for level in range(depth):
        for i in range(rows):
            x = X[i]
            at = node[i]
            for t in range(trees):
                n = at[t]
                right = nodes[n, 2]
                go = np.int64(x[nodes[n, 1]] > as_float[n, 0])  # arithmetic, not a branch
                at[t] = n + 1 + go * (right - n - 1)
        if level % 4 == 3:
            done = True
            for i in range(rows):
                for t in range(trees):
                    if as_float[node[i, t], 0] != -np.inf:
                        done = False
                        break
                if not done:
                    break
            if done:
                break
    for i in range(rows):
        if empty[i]:
            out[i, 0] = out[i, 1] = out[i, 2] = out[i, 3] = 0.0
            continue
        ratio = 0.0
        cv = 0.0
        for t in range(trees):
            n = node[i, t]
            ratio += np.float64(as_float[n, 3])
            if len(spread):
                cv += np.float64(spread[n])
        out[i, 0] = ratio / trees
        out[i, 1] = cv / trees
    return out


# -- feature kernels: raw columns in features.py's order, and the work -------------------------

@njit(cache=True, error_model="numpy")
def _roofline_columns(out, o, work, flops, nbytes, peak, bw, quantization, launch):
    """Raw values of log_flops, log_bytes, log_compute_us, log_memory_us, log_roofline_us,
    log_quantized_compute_us, and the work (quantized compute, memory) in µs."""
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


@njit(cache=True, error_model="numpy")
def _fa_tiles(head_dim, kv_width):
    """``features.fa_tiles`` of one row: (query rows, keys) of a FlashAttention-3 tile."""
    if kv_width <= 1:
        if head_dim <= 64:
            return 192.0, 160.0
        if head_dim <= 96:
            return 192.0, 128.0
        if head_dim <= 128:
            return 128.0, 128.0
        if head_dim <= 192:
            return 128.0, 160.0
        return 128.0, 128.0
    if head_dim <= 64:
        return 192.0, 128.0
    if head_dim <= 96:
        return 192.0, 144.0
    if head_dim <= 128:
        return 128.0, 128.0
    if head_dim <= 192:
        return 128.0, 112.0
    return 128.0, 80.0


@njit(cache=True, error_model="numpy")
def _kv_splits(m_blocks, n_blocks, sm):
    """``features.kv_splits`` of one row."""
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


@njit(cache=True, error_model="numpy")
def _attention(new, ctx, lengths, per_row, consts, mla, split_kv, transform, checked, low, high, nodes, as_float, spread, roots,
               depth, calibration):
    """``per_row`` (values x rows, or x 1 for all rows): heads, KV heads (1 for MLA), head_dim (or MLA's
    kv_lora_rank, rope, nope, v dims), dtype code, KV dtype code, peak FLOP/s, KV width.
    ``consts``: SM count, HBM bytes/s, activation bytes, launch µs. ``mla``: 0, 1 decode,
    2 prefill. ``split_kv``: whether the family has the ``kv_splits`` column."""
    rows = len(lengths)
    sm, bw, act, launch = consts[0], consts[1], consts[2], consts[3]
    extra = 1 if split_kv else 0
    raw = np.empty((rows, 38 if mla else 37 + extra))
    work = np.zeros((rows, 2))
    empty = np.zeros(rows, dtype=np.bool_)
    longest = 1
    for r in range(rows):
        longest = max(longest, lengths[r])
    buf = np.empty((12, longest))
    ordered = np.empty(longest)
    sums = np.empty(12)
    shape_at = 6 if mla else 3  # first per_row index after the shape columns
    s = 0
    wide = per_row.shape[1] > 1  # a single column serves every row
    for r in range(rows):
        pr = r if wide else 0
        count = lengths[r]
        if count == 0:
            raw[r] = 0.0
            empty[r] = True
            continue
        n = float(count)
        heads, kvh = per_row[0, pr], per_row[1, pr]
        group = heads / kvh
        q_lo, q_hi, k_lo, k_hi = np.inf, -np.inf, np.inf, -np.inf
        # integer lengths and head groups make every term a multiple of 1/2: their sums
        # are exact in any order (below 2^51), so they are accumulated as they come
        exact = group == np.floor(group)
        sums[:] = 0.0
        for j in range(count):
            q = new[s + j]
            k = q + ctx[s + j]
            exact = exact and q == np.floor(q) and k == np.floor(k)
            decode = q == 1.0
            attended = k - (q - 1.0) / 2.0
            q_tiles = np.ceil(q * group / TILE)
            buf[0, j] = q
            buf[1, j] = k
            sums[0] += q
            sums[1] += k
            sums[2] += q * q
            sums[3] += k * k
            sums[4] += q * attended
            if decode:
                sums[5] += 1.0
                sums[7] += k
            else:
                sums[6] += q
            sums[8] += q_tiles
            sums[9] += np.ceil(k / TILE)
            sums[10] += q_tiles * attended
            sums[11] += q * group * attended
            q_lo, q_hi = min(q_lo, q), max(q_hi, q)
            k_lo, k_hi = min(k_lo, k), max(k_hi, k)
        if not exact or max(sums[3], sums[4], sums[10], sums[11]) >= 2.0**51:
            # numpy's order: reduceat's first value plus the pairwise sum of the rest
            for j in range(count):
                q, k = buf[0, j], buf[1, j]
                decode = q == 1.0
                attended = k - (q - 1.0) / 2.0
                q_tiles = np.ceil(q * group / TILE)
                buf[2, j] = q * q
                buf[3, j] = k * k
                buf[4, j] = q * attended
                buf[5, j] = 1.0 if decode else 0.0
                buf[6, j] = 0.0 if decode else q
                buf[7, j] = k if decode else 0.0
                buf[8, j] = q_tiles
                buf[9, j] = np.ceil(k / TILE)
                buf[10, j] = q_tiles * attended
                buf[11, j] = q * group * attended
            for c in range(12):
                sums[c] = _segment_sum(buf[c], count)
        s += count
        out = raw[r]
        out[0] = n
        out[1] = sums[5]
        out[2] = sums[5] / n
        for side in range(2):  # q, then kv
            total, square = sums[side], sums[2 + side]
            mean = total / n
            lo, hi = (q_lo, q_hi) if side == 0 else (k_lo, k_hi)
            base = 3 + 7 * side
            out[base] = total
            out[base + 1] = mean
            out[base + 2] = math.sqrt(max(square / n - mean * mean, 0.0))
            out[base + 3] = lo
            out[base + 4] = hi
            if lo == hi:  # every sequence alike (a decode batch's new tokens): no sort
                out[base + 5] = out[base + 6] = lo
            else:
                _sorted_into(ordered, buf[side], count)
                out[base + 5] = _quantile(ordered, count, 0.5)
                out[base + 6] = _quantile(ordered, count, 0.9)
        pairs, q_sum, kv_sum = sums[4], sums[0], sums[1]
        out[17] = pairs
        out[18] = sums[6]
        out[19] = sums[7]
        out[20] = heads
        dcode, kvcode = per_row[shape_at, pr], per_row[shape_at + 1, pr]
        peak, kv_width = per_row[shape_at + 2, pr], per_row[shape_at + 3, pr]
        if mla:
            rank, rope, nope, v = per_row[2, pr], per_row[3, pr], per_row[4, pr], per_row[5, pr]
            out[21], out[22], out[23], out[24] = rank, rope, nope, v
            latent = rank + rope
            if mla == 1:
                flops = 2 * heads * pairs * (latent + rank)
            else:
                flops = 2 * heads * pairs * (nope + rope + v)
            nbytes = kv_sum * latent * kv_width + 2 * q_sum * heads * latent * act
            o = 25
        else:
            d = per_row[2, pr]
            out[21], out[22], out[23] = kvh, d, heads / kvh
            flops = 4 * heads * d * pairs
            nbytes = kv_sum * 2 * kvh * d * kv_width + 2 * q_sum * heads * d * act
            o = 24
        q_tiles = sums[8] * kvh
        q_waves = q_tiles / sm
        kv_tiles = sums[9] * kvh
        out[o] = q_tiles
        out[o + 1] = q_waves
        out[o + 2] = np.ceil(q_waves)
        out[o + 3] = kv_tiles
        out[o + 4] = kv_tiles / sm
        if split_kv:
            tile_rows, tile_keys = _fa_tiles(per_row[2, pr], kv_width)
            out[o + 5] = _kv_splits(kvh * np.ceil(q_hi * heads / kvh / tile_rows), np.ceil(k_hi / tile_keys), sm)
        out[o + 5 + extra] = dcode
        out[o + 6 + extra] = kvcode
        quantization = sums[10] * TILE / sums[11] * (np.ceil(q_waves) / max(q_waves, 1e-9))
        _roofline_columns(out, o + 7 + extra, work[r], flops, nbytes, peak, bw, quantization, launch)
    return _finish(raw, work, empty, transform, checked, low, high, nodes, as_float, spread, roots, depth, calibration)


@njit(cache=True, error_model="numpy")
def _moe(tokens, lengths, per_row, consts, transform, checked, low, high, nodes, as_float, spread, roots, depth, calibration):
    """``per_row`` (values x rows, or x 1 for all rows): num_tokens, hidden, num_experts, topk, ep, moe_tp, inter,
    dtype code, peak FLOP/s, width."""
    rows = len(lengths)
    sm, bw, act, launch = consts[0], consts[1], consts[2], consts[3]
    raw = np.empty((rows, 25))
    work = np.zeros((rows, 2))
    empty = np.zeros(rows, dtype=np.bool_)
    longest = 1
    for r in range(rows):
        longest = max(longest, lengths[r])
    buf = np.empty((7, longest))
    ordered = np.empty(longest)
    sums = np.empty(5)
    s = 0
    wide = per_row.shape[1] > 1  # a single column serves every row
    for r in range(rows):
        pr = r if wide else 0
        count = lengths[r]
        if count == 0:
            raw[r] = 0.0
            empty[r] = True
            continue
        n = float(count)
        peak_load = -np.inf
        for j in range(count):
            t = tokens[s + j]
            buf[0, j] = t
            buf[1, j] = t * t
            buf[2, j] = 1.0 if t > 0 else 0.0
            buf[3, j] = np.ceil(t / 16)
            buf[4, j] = np.ceil(t / 64)
            peak_load = max(peak_load, t)
        for c in range(5):
            sums[c] = _segment_sum(buf[c], count)
        routed, square, active, tiles_16, tiles_64 = sums[0], sums[1], sums[2], sums[3], sums[4]
        _sorted_into(ordered, buf[0], count)
        floor_routed = max(routed, 1.0)
        for j in range(count):
            buf[5, j] = (2.0 * (j + 1) - n - 1) * ordered[j]
            share = buf[0, j] / floor_routed
            buf[6, j] = -share * math.log2(share if share > 0 else 1.0)
        s += count
        gini_sum = _segment_sum(buf[5], count)
        entropy = _segment_sum(buf[6], count)
        mean = routed / n
        h, inter = per_row[1, pr], per_row[6, pr]
        out = raw[r]
        for c in range(6):
            out[c] = per_row[c, pr]
        waves = tiles_64 * np.ceil(2 * inter / TILE) / sm
        out[6] = inter
        out[7] = per_row[7, pr]
        out[8] = n
        out[9] = routed
        out[10] = peak_load
        out[11] = mean
        out[12] = math.sqrt(max(square / n - mean * mean, 0.0)) / max(mean, 1e-12)
        out[13] = gini_sum / (n * floor_routed)
        out[14] = entropy
        out[15] = active
        out[16] = tiles_16
        out[17] = tiles_64
        out[18] = waves
        padding = tiles_64 * 64 / floor_routed if routed > 0 else 1.0
        quantization = padding * (np.ceil(waves) / max(waves, 1e-9))
        flops = 2 * 3 * h * inter * routed
        nbytes = 3 * h * inter * per_row[9, pr] * active + 2 * routed * h * act
        _roofline_columns(out, 19, work[r], flops, nbytes, per_row[8, pr], bw, quantization, launch)
    return _finish(raw, work, empty, transform, checked, low, high, nodes, as_float, spread, roots, depth, calibration)


@njit(cache=True, error_model="numpy")
def _gemm(nrows, per_row, consts, transform, checked, low, high, nodes, as_float, spread, roots, depth, calibration):
    """``per_row`` (values x rows, or x 1 for all rows): m, n, k, dtype code, peak FLOP/s,
    width."""
    rows = nrows
    sm, bw, act, launch = consts[0], consts[1], consts[2], consts[3]
    raw = np.empty((rows, 15))
    work = np.empty((rows, 2))
    wide = per_row.shape[1] > 1  # a single column serves every row
    for r in range(rows):
        pr = r if wide else 0
        mr, nr, kr = per_row[0, pr], per_row[1, pr], per_row[2, pr]
        tiles = np.ceil(mr / TILE) * np.ceil(nr / TILE)
        waves = tiles / sm
        out = raw[r]
        out[0], out[1], out[2], out[3] = mr, nr, kr, per_row[3, pr]
        out[4] = tiles
        out[5] = waves
        out[6] = tiles / (np.ceil(waves) * sm)
        out[7] = np.ceil(mr / 64) * np.ceil(nr / TILE)
        out[8] = mr % 64
        quantization = tiles * TILE * TILE / (mr * nr) * (np.ceil(waves) / max(waves, 1e-9))
        flops = 2 * mr * nr * kr
        nbytes = (mr * kr + kr * nr) * per_row[5, pr] + mr * nr * act
        _roofline_columns(out, 9, work[r], flops, nbytes, per_row[4, pr], bw, quantization, launch)
    return _finish(raw, work, np.zeros(rows, dtype=np.bool_), transform, checked, low, high, nodes, as_float, spread,
                   roots, depth, calibration)


@njit(cache=True, error_model="numpy")
def _transfer(nrows, per_row, kind, transform, checked, low, high, nodes, as_float, spread, roots, depth, calibration):
    """``per_row`` (values x rows, or x 1 for all rows): bytes, group size, placement code,
    impl code, link bytes/s, link latency µs. kind: 0 p2p, 1 all_reduce, 2 another
    collective."""
    rows = nrows
    raw = np.empty((rows, 3 if kind == 0 else 6))
    work = np.zeros((rows, 2))
    wide = per_row.shape[1] > 1  # a single column serves every row
    for r in range(rows):
        pr = r if wide else 0
        b, group, bandwidth, latency = per_row[0, pr], per_row[1, pr], per_row[4, pr], per_row[5, pr]
        out = raw[r]
        out[0] = b
        out[1] = per_row[2, pr]
        if kind == 0:
            link = latency + b / bandwidth * 1e6
        else:
            g = max(group, 1.0)
            share = (g - 1) / g
            factor = 2 * share if kind == 1 else share
            link = latency + factor * b / bandwidth * 1e6 if g > 1 else 0.0
            out[2] = group
            out[3] = b / g
            out[4] = per_row[3, pr]
        out[len(out) - 1] = link
        work[r, 1] = link
    return _finish(raw, work, np.zeros(rows, dtype=np.bool_), transform, checked, low, high, nodes, as_float, spread,
                   roots, depth, calibration)


# -- from a query to arrays ------------------------------------------------------------------

def _ragged(column: Sequence[Any], rows: int) -> tuple[np.ndarray, list]:
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


class HardwareTables:
    """One GPU's per-dtype peaks and widths and per-placement links, looked up once."""

    def __init__(self, hw: HardwareConfig):
        self.consts = np.array([float(hw.gpu.sm_count), float(hw.gpu.hbm_bandwidth_bytes_per_s), ACTIVATION_BYTES,
                                KERNEL_LAUNCH_US])
        self._hw = hw
        self._dtypes: dict[str, tuple[float, float, float]] = {}
        self._links = {False: (hw.network.bandwidth_bytes_per_s, hw.network.latency_us),
                       True: (hw.node.nvlink_bandwidth_bytes_per_s, INTRA_NODE_COLLECTIVE_LATENCY_US)}

    def dtype(self, value) -> tuple[float, float, float]:
        """(code, peak FLOP/s, width in bytes; NaN if unknown) of a dtype."""
        key = str(value)
        found = self._dtypes.get(key)
        if found is None:
            found = self._dtypes[key] = (float(DTYPE_CODES.get(key, UNKNOWN)), float(self._hw.gpu.peak_flops(key)),
                                         float(DTYPE_BYTES.get(key, math.nan)))
        return found

    def dtype_columns(self, values, width: bool = True) -> tuple:
        """Code, peak and width of a dtype column, each a scalar where every row has the
        same dtype; an unknown width is a KeyError, as in the roofline, where it is needed."""
        if _constant(values):
            found = self.dtype(values[0])
            if width and math.isnan(found[2]):
                raise KeyError(str(values[0]))
            return found
        found = tuple(zip(*(self.dtype(v) for v in values), strict=True))
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


def _matrix(columns: list, rows: int) -> np.ndarray:
    """Columns (scalars or per-row sequences) as the kernels' (columns x rows) matrix, or
    (columns x 1) when every column is a scalar."""
    if all(not isinstance(c, (list, tuple, np.ndarray)) for c in columns):
        return np.array(columns, dtype=np.float64).reshape(len(columns), 1)
    out = np.empty((len(columns), rows))
    for i, column in enumerate(columns):
        out[i] = column
    return out


class CompiledFamily:
    """One fitted family ready for the compiled path: its arrays in the kernels' layout."""

    MLA_SHAPE = ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
    MOE_SHAPE = ("num_tokens", "hidden", "num_experts", "topk", "ep", "moe_tp", "inter")

    def __init__(self, model, tables: HardwareTables):
        family, names = model.family, list(model.names)
        if family not in FAST_FAMILIES:
            raise KeyError(f"no compiled features for {family!r}")
        self.family, self.tables = family, tables
        transfer = family in COLLECTIVE_FAMILIES or family == "p2p"
        self.transform = np.array([2 if name == "log_roofline_us" and not transfer else
                                   0 if name in LINEAR_FEATURES else 1 for name in names], dtype=np.int8)
        self.checked = np.asarray(np.arange(len(names)) if model.range_columns is None else model.range_columns,
                                  dtype=np.int64)
        forest = model.forest
        self.model_arrays = (self.transform, self.checked, np.asarray(model.low, dtype=np.float64),
                             np.asarray(model.high, dtype=np.float64), forest.nodes, forest.nodes.view(np.float32),
                             forest.spread if forest.spread is not None else np.zeros(0, dtype=np.float32),
                             forest.roots, forest.depth, np.asarray(model.calibration, dtype=np.float64))
        self.has_spread = model.has_spread
        self.mla = _MLA_KIND.get(family, 0)
        self.attention = family in ATTENTION_FAMILIES or bool(self.mla)
        self.impl = {name: i for i, name in enumerate(model.vocab.get("impl", ()))}

    def predict(self, q: Mapping[str, Any], rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latency (µs), std (µs) and out-of-range flag of each of the ``rows`` rows of ``q``."""
        family, tables = self.family, self.tables
        if self.attention:
            new, lengths = _ragged(q["q_lens"], rows)
            ctx, ctx_lengths = _ragged(q["ctx_lens"], rows)
            if lengths != ctx_lengths or len(new) != len(ctx):
                raise ValueError(f"{family} query: q_lens and ctx_lens differ in length in some row")
            out = _attention(new, ctx, np.array(lengths, dtype=np.int64), self._attention_rows(q, rows),
                             tables.consts, self.mla, family in SPLIT_KV_FAMILIES, *self.model_arrays)
        elif family == "gemm":
            per_row = _matrix([_column(q["m"]), _column(q["n"]), _column(q["k"]), *tables.dtype_columns(q["dtype"])],
                              rows)
            out = _gemm(rows, per_row, tables.consts, *self.model_arrays)
        elif family in MOE_FAMILIES:
            tokens, lengths = _ragged(q["expert_tokens"], rows)
            per_row = _matrix([*(_column(q[c]) for c in self.MOE_SHAPE), *tables.dtype_columns(q["dtype"])], rows)
            out = _moe(tokens, np.array(lengths, dtype=np.int64), per_row, tables.consts, *self.model_arrays)
        else:
            placement, bandwidth, latency = tables.link_columns(q["placement"])
            if family == "p2p":
                group = impl = 0.0
                kind = 0
            else:
                group, impl = _column(q["group_size"]), q["impl"]
                impl = self.impl.get(str(impl[0]), UNKNOWN) if _constant(impl) else \
                    [self.impl.get(str(v), UNKNOWN) for v in impl]
                kind = 1 if family == "all_reduce" else 2
            per_row = _matrix([_column(q["bytes"]), group, placement, impl, bandwidth, latency], rows)
            out = _transfer(rows, per_row, kind, *self.model_arrays)
        factors = np.exp(out[:, :2])
        latency = out[:, 2] * factors[:, 0]
        std = latency * factors[:, 1] if self.has_spread else np.zeros(rows)
        return latency, std, out[:, 3] != 0

    def _attention_rows(self, q: Mapping[str, Any], rows: int) -> np.ndarray:
        """The attention kernel's per-row matrix: head shape, dtype codes, peak and KV width."""
        code, peak, _ = self.tables.dtype_columns(q["dtype"], width=False)
        kv_code, _, kv_width = self.tables.dtype_columns(q["kv_dtype"])
        if self.mla:
            shape = [_column(q["num_heads"]), 1.0, *(_column(q[c]) for c in self.MLA_SHAPE)]
        else:
            shape = [_column(q["num_heads"]), _column(q["num_kv_heads"]), _column(q["head_dim"])]
        return _matrix([*shape, code, kv_code, peak, kv_width], rows)

    def attention_pricer(self, constants: Mapping[str, Any]):
        """``price(new, ctx, lengths)``: the latency (µs) and out-of-range flag of attention
        rows that share ``constants`` (every query column but ``q_lens`` and ``ctx_lens``),
        given as flat float64 lengths and int64 row lengths. The same numbers as ``predict``
        without building a query: the simulator's memo misses take this path."""
        if not self.attention:
            raise KeyError(f"{self.family} is not an attention family")
        per_row = self._attention_rows({c: [v] for c, v in constants.items()}, 1)
        args = (per_row, self.tables.consts, self.mla, self.family in SPLIT_KV_FAMILIES, *self.model_arrays)

        def price(new: np.ndarray, ctx: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out = _attention(new, ctx, lengths, *args)
            return out[:, 2] * np.exp(out[:, :2])[:, 0], out[:, 3] != 0
        return price
