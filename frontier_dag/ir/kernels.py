"""Compiled longest path over the residual DAG of a ReducedProgram (numba).

A stage that does not reduce to sums and maxes (the grid of ping-pong micro-batches) is
left with hundreds of residual nodes, evaluated once per simulated iteration. One compiled
pass over their predecessor lists (CSR, topological order) gives every node's finish time
in microseconds, where a generated Python statement per node takes hundreds. The result is
bit for bit the generated function's: each finish is the node's weight plus the largest
predecessor finish, the same two operands of the same addition.

Imported on first use by ``frontier_dag.ir.reduce``. The kernels are compiled ahead of
time (``frontier_dag.aot``): a process that evaluates a residual DAG loads them in a
millisecond, without importing numba.
"""

from __future__ import annotations

import numpy as np

from frontier_dag.aot import Kernels

kernel = Kernels(__name__, exports={
    "residual_finish": "f8[:](f8[:], i8[:], i8[:])",
    "residual_longest": "f8(f8[:], i8[:], i8[:], i8[:])",
    "residual_path": "i8[:](f8[:], i8[:], i8[:], i8[:])",
})


@kernel
def residual_finish(weights: np.ndarray, pred_ptr: np.ndarray, pred_idx: np.ndarray) -> np.ndarray:
    """Finish time of every node: ``weights[v]`` plus the largest finish among its
    predecessors ``pred_idx[pred_ptr[v]:pred_ptr[v + 1]]`` (none: starts at 0)."""
    n = len(weights)
    finish = np.empty(n)
    for v in range(n):
        start, end = pred_ptr[v], pred_ptr[v + 1]
        if start == end:
            finish[v] = weights[v]
            continue
        longest = finish[pred_idx[start]]
        for e in range(start + 1, end):
            if finish[pred_idx[e]] > longest:
                longest = finish[pred_idx[e]]
        finish[v] = weights[v] + longest
    return finish


@kernel
def residual_longest(weights: np.ndarray, pred_ptr: np.ndarray, pred_idx: np.ndarray, sinks: np.ndarray) -> float:
    """The longest path: the largest finish among ``sinks``."""
    finish = residual_finish(weights, pred_ptr, pred_idx)
    longest = finish[sinks[0]]
    for s in sinks[1:]:
        if finish[s] > longest:
            longest = finish[s]
    return longest


@kernel
def residual_path(finish: np.ndarray, pred_ptr: np.ndarray, pred_idx: np.ndarray, sinks: np.ndarray) -> np.ndarray:
    """The nodes of a longest path, last first: from the sink predecessor that finishes
    last, each step back to the predecessor that finishes last (ties to the lower index)."""
    v = sinks[0]
    for s in sinks[1:]:
        if finish[s] > finish[v] or (finish[s] == finish[v] and s < v):
            v = s
    path = np.empty(len(finish), dtype=np.int64)
    length = 0
    while True:
        path[length] = v
        length += 1
        start, end = pred_ptr[v], pred_ptr[v + 1]
        if start == end:
            break
        best = pred_idx[start]
        for e in range(start + 1, end):
            u = pred_idx[e]
            if finish[u] > finish[best] or (finish[u] == finish[best] and u < best):
                best = u
        v = best
    return path[:length]
