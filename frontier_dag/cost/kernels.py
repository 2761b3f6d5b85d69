"""Compiled helpers of expert routing and pricing (numba, built ahead of time by ``frontier_dag.aot``).

``draw_counts`` draws a stretch's routed counts (thousands per step) from uniforms of the
run's stream, one 64-bit number per count, where numpy's Poisson sampler costs
about 40 ns a count and its placement onto the ranks several temporaries.

A decode step of a wide-EP MoE stage routes thousands of (layer, rank) rows of expert
counts; only the few ranks of each layer that can be the slowest are priced (see
``StageCoster._critical_mask``). One compiled pass over a stretch's rows picks those
ranks, sorts their counts (largest first, the memo's key) and hashes them, where the
same steps in numpy take a dozen array passes and temporaries per call. The results are
exactly numpy's: the same ranks (ties to the lower rank), the same sorted rows, the same
wrapping 64-bit hash.
"""

from __future__ import annotations

import math

import numpy as np

from frontier_dag.aot import Kernels

#: Counts of a Poisson expert are looked up in a table of its CDF up to this many tokens
#: (the normal limit serves from a mean of 10: the table's tail beyond is below 1e-60).
POISSON_TABLE = 128
#: The mean from which an expert's count is drawn from its normal limit (see Router.draw).
NORMAL_FROM = 10.0
#: A Poisson mean of 1 or more drawn this many times (a uniform routing's experts share
#: one) gets its whole CDF table and a guide of GUIDE_CELLS cells (a power of two, 127
#: counts at most: int8): the count at which each cell's uniforms start their search
#: (indexed search), so a draw takes a step or two whatever the mean. The counts are
#: those of the search from 0.
GUIDE_AFTER = 32
GUIDE_CELLS = 256

kernel = Kernels(__name__, exports={
    "draw_counts": "void(i8[::1], f8[:, ::1], f8[::1], i8[:, :, ::1], f8[:, :, ::1], i8, i8[:, ::1], f8[::1], "
                   "i8[:, :, :, ::1])",
    "critical_rows": "i8(i8[:, :, :, :], i8[::1], i8[::1], i8[:, ::1], i8, i8[::1], u1[:, ::1], u1[:, ::1], "
                     "i8[:, ::1], i8[::1])",
    "fill_prices": "void(f8[:, ::1], i8[::1], i8[::1], u1[:, ::1], u1[:, ::1], f8[::1])",
})


@kernel
def critical_rows(loads: np.ndarray, layer_of: np.ndarray, rank_of: np.ndarray, slots: np.ndarray, top: int,
                  weights: np.ndarray, chosen: np.ndarray, busy: np.ndarray, picked: np.ndarray,
                  keys: np.ndarray) -> int:
    """Choose and sort the rows of routed counts to price in ``k`` steps.

    ``loads`` (k, layers, ranks, experts) are each step's routed counts; a group's row r is
    ``loads[:, layer_of[r] % layers, rank_of[r]]``; ``slots`` (layers of the group, ranks)
    lists each layer's rows. Per step and layer, the ``top`` (1 or 2) rows with the most
    tokens and the ``top`` with the busiest expert are chosen (with one expert per rank the
    two coincide) into ``chosen`` (k, rows); ``busy`` (k, rows) marks rows with any token.
    The chosen rows, step after step and in row order within a step, are written sorted
    largest first to ``picked`` with their hashes ``row @ weights`` (wrapping) in ``keys``.
    Returns how many rows were chosen."""
    k, experts = loads.shape[0], loads.shape[3]
    ranks = slots.shape[1]
    depth = loads.shape[1]
    total = np.empty(ranks, dtype=np.int64)
    most = np.empty(ranks, dtype=np.int64)
    count = 0
    for s in range(k):
        for layer in range(slots.shape[0]):
            for j in range(ranks):
                r = slots[layer, j]
                lr, rk = layer_of[r] % depth, rank_of[r]
                t = m = loads[s, lr, rk, 0]
                any_token = t != 0
                for e in range(1, experts):
                    v = loads[s, lr, rk, e]
                    t += v
                    any_token |= v != 0
                    if v > m:
                        m = v
                total[j], most[j] = t, m
                busy[s, r] = any_token
                chosen[s, r] = 0
            for which in range(1 if experts == 1 else 2):  # with one expert per rank both scores agree
                score = total if which == 0 else most
                first = 0
                for j in range(1, ranks):
                    if score[j] > score[first]:
                        first = j
                chosen[s, slots[layer, first]] = 1
                if top == 2:
                    second = -1
                    for j in range(ranks):
                        if j != first and (second < 0 or score[j] > score[second]):
                            second = j
                    chosen[s, slots[layer, second]] = 1
        for r in range(len(layer_of)):
            if chosen[s, r]:
                lr, rk = layer_of[r] % depth, rank_of[r]
                out = picked[count]
                for e in range(experts):  # insertion sort, largest first
                    v = loads[s, lr, rk, e]
                    i = e
                    while i > 0 and out[i - 1] < v:
                        out[i] = out[i - 1]
                        i -= 1
                    out[i] = v
                h = np.int64(0)
                for e in range(experts):
                    h += out[e] * weights[e]
                keys[count] = h
                count += 1
    return count


@kernel
def fill_prices(out: np.ndarray, steps: np.ndarray, idx: np.ndarray, chosen: np.ndarray, busy: np.ndarray,
                latency: np.ndarray) -> None:
    """Write a group's expert prices into ``out[steps[s], idx[r]]``: the chosen rows' prices
    ``latency`` (step after step, rows in order), the others of a step its cheapest chosen
    price (0 where none), and 0 where a row has no tokens (``busy``)."""
    n = 0
    for s in range(len(steps)):
        chosen_here = 0
        for r in range(len(idx)):
            chosen_here += chosen[s, r]
        floor = 0.0
        if chosen_here:
            floor = latency[n]
            for i in range(n + 1, n + chosen_here):
                if latency[i] < floor:
                    floor = latency[i]
        row = out[steps[s]]
        for r in range(len(idx)):
            price = floor
            if chosen[s, r]:
                price = latency[n]
                n += 1
            row[idx[r]] = price if busy[s, r] else 0.0


@kernel
def _normal_tail(u: float) -> float:
    """Acklam's approximation of the standard normal quantile of ``u`` below 0.02425
    (about 1e-5 relative: refined by the caller)."""
    t = math.sqrt(-2.0 * math.log(u))
    return (((((-7.784894002430293e-03 * t - 3.223964580411365e-01) * t - 2.400758277161838e+00) * t
              - 2.549671348874318e+00) * t + 4.374664141464968e+00) * t + 2.938163982698783e+00) / \
        ((((7.784695709041462e-03 * t + 3.224671290700398e-01) * t + 2.445134137142996e+00) * t
          + 3.754408661907416e+00) * t + 1.0)


@kernel
def normal_quantile(u: float) -> float:
    """The standard normal quantile of ``u`` in (0, 1) by Acklam's rational approximation
    (relative error about 1e-9 in the centre; in the tails refined by one Halley step on
    erfc), far below the rounding of a count to an integer."""
    if u < 0.02425 or u > 1.0 - 0.02425:
        tail = u if u < 0.5 else 1.0 - u  # the upper tail by symmetry (1 - u is exact there)
        x = _normal_tail(tail)
        e = 0.5 * math.erfc(-x / math.sqrt(2.0)) - tail
        step = e * math.sqrt(2.0 * math.pi) * math.exp(x * x / 2.0)
        x -= step / (1.0 + x * step / 2.0)
        return x if u < 0.5 else -x
    q = u - 0.5
    r = q * q
    return (((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r - 2.759285104469687e+02) * r
              + 1.383577518672690e+02) * r - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q / \
        (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r - 1.556989798598866e+02) * r
           + 6.680131188771972e+01) * r - 1.328068155288572e+01) * r + 1.0)


@kernel
def draw_counts(picks: np.ndarray, popularity: np.ndarray, uniforms: np.ndarray, slot_expert: np.ndarray,
                slot_share: np.ndarray, replicated: int, value_of: np.ndarray, values: np.ndarray,
                out: np.ndarray) -> None:
    """Routed counts of draws ``picks`` (each a batch's ``tokens x top_k`` picks; 0 draws
    nothing) into ``out`` (draws, layers, ranks, slots).

    Expert e of layer l gets a count of mean ``lam = picks x popularity[l, e]``: Poisson
    (by inversion of its CDF) below NORMAL_FROM, else ``lam + sqrt(lam) z`` rounded and at
    least 0, z standard normal (by its quantile), each from the next of ``uniforms`` (a
    generator's ``random()``: one 64-bit number's top 53 bits each), layer after layer,
    expert after expert, draw after draw. With ``replicated`` the counts go to ``slot_expert``'s
    slots, each ``ceil(count x slot_share - 1e-9)``; else expert e fills slot e of the
    layer (ranks hold contiguous runs).

    ``popularity[l, e]`` is ``values[value_of[l, e]]`` (its distinct values): the experts of
    one value share a CDF table while the picks stay the same (a stretch's steps route the
    same batch), built term by term as far as a draw needs, so that a count costs a search,
    not a table; a value drawn GUIDE_AFTER times with a mean of 1 or more gets its whole
    table and a guide of GUIDE_CELLS cells (a power of two): the count from which each
    cell's uniforms search (indexed search). Every count is that of the search from 0 on
    the same terms."""
    layers, experts = popularity.shape
    kinds = len(values)
    cdf = np.empty(kinds * POISSON_TABLE)  # value v's table at v x POISSON_TABLE
    term = np.empty(kinds)  # the latest term of each table
    built = np.zeros(kinds, dtype=np.int64)  # how far each table is built (0: not yet)
    uses = np.zeros(kinds, dtype=np.int64)  # how often each table served (-1: guided)
    guide = np.empty(kinds * GUIDE_CELLS, dtype=np.int8)  # value v's guide at v x GUIDE_CELLS
    counts = np.empty(experts, dtype=np.int64)
    table_picks = -1  # the picks of which the tables are
    next_u = 0
    for d in range(len(picks)):
        if picks[d] <= 0:
            out[d] = 0
            continue
        if picks[d] != table_picks:
            table_picks = picks[d]
            built[:] = 0
            uses[:] = 0
        for layer in range(layers):
            for e in range(experts):
                lam = picks[d] * popularity[layer, e]
                u = uniforms[next_u]
                next_u += 1
                if lam >= NORMAL_FROM:
                    c = np.rint(lam + np.sqrt(lam) * normal_quantile(max(u, 1e-300)))
                    counts[e] = np.int64(c) if c > 0 else 0
                    continue
                v = value_of[layer, e]
                at = v * POISSON_TABLE
                was = top = built[v]
                if top == 0:
                    term[v] = cdf[at] = np.exp(-lam)
                    top = 1
                count = 0
                n = uses[v] if lam >= 1.0 else 0  # a small mean's search is short: no guide
                if n < 0:
                    # every count below the guide's has cdf <= i / GUIDE_CELLS <= u (u x
                    # GUIDE_CELLS is exact), so the search ends where the search from 0 would
                    count = np.int64(guide[v * GUIDE_CELLS + int(u * GUIDE_CELLS)])
                elif n + 1 == GUIDE_AFTER:  # a mean that recurs: its whole table
                    p = term[v]
                    while top < POISSON_TABLE:
                        p *= lam / top
                        cdf[at + top] = cdf[at + top - 1] + p
                        top += 1
                    term[v] = p
                    for i in range(GUIDE_CELLS):
                        while count < POISSON_TABLE - 1 and cdf[at + count] <= i / GUIDE_CELLS:
                            count += 1
                        guide[v * GUIDE_CELLS + i] = count
                    uses[v] = -1
                    count = np.int64(guide[v * GUIDE_CELLS + int(u * GUIDE_CELLS)])
                elif lam >= 1.0:
                    uses[v] = n + 1
                while u >= cdf[at + count] and count < POISSON_TABLE - 1:
                    count += 1
                    if count == top:
                        p = term[v] * (lam / count)
                        term[v] = p
                        cdf[at + count] = cdf[at + count - 1] + p
                        top += 1
                if top != was:
                    built[v] = top
                counts[e] = count
            if not replicated:
                flat = out[d, layer].reshape(experts)
                for e in range(experts):
                    flat[e] = counts[e]
            else:
                for r in range(slot_expert.shape[1]):
                    for s in range(slot_expert.shape[2]):
                        out[d, layer, r, s] = np.int64(np.ceil(counts[slot_expert[layer, r, s]]
                                                               * slot_share[layer, r, s] - 1e-9))
