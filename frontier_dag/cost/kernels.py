"""Compiled helpers of expert pricing (numba, built ahead of time by ``frontier_dag.aot``).

A decode step of a wide-EP MoE stage routes thousands of (layer, rank) rows of expert
counts; only the few ranks of each layer that can be the slowest are priced (see
``StageCoster._critical_mask``). One compiled pass over a stretch's rows picks those
ranks, sorts their counts (largest first, the memo's key) and hashes them, where the
same steps in numpy take a dozen array passes and temporaries per call. The results are
exactly numpy's: the same ranks (ties to the lower rank), the same sorted rows, the same
wrapping 64-bit hash.
"""

from __future__ import annotations

import numpy as np

from frontier_dag.aot import Kernels

kernel = Kernels(__name__, exports={
    "critical_rows": "i8(i8[:, :, :, ::1], i8[::1], i8[::1], i8[:, ::1], i8, i8[::1], u1[:, ::1], u1[:, ::1], "
                     "i8[:, ::1], i8[::1])",
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
    rows, ranks = len(layer_of), slots.shape[1]
    depth = loads.shape[1]
    total = np.empty(ranks, dtype=np.int64)
    most = np.empty(ranks, dtype=np.int64)
    count = 0
    for s in range(k):
        for r in range(rows):
            chosen[s, r] = 0
            row = loads[s, layer_of[r] % depth, rank_of[r]]
            any_token = 0
            for e in range(experts):
                if row[e] != 0:
                    any_token = 1
                    break
            busy[s, r] = any_token
        for layer in range(slots.shape[0]):
            for j in range(ranks):
                r = slots[layer, j]
                row = loads[s, layer_of[r] % depth, rank_of[r]]
                t, m = row[0], row[0]
                for e in range(1, experts):
                    t += row[e]
                    if row[e] > m:
                        m = row[e]
                total[j], most[j] = t, m
            for score in (total, most):
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
                if experts == 1:
                    break
        for r in range(rows):
            if chosen[s, r]:
                row = loads[s, layer_of[r] % depth, rank_of[r]]
                out = picked[count]
                for e in range(experts):  # insertion sort, largest first
                    v = row[e]
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
