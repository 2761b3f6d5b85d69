"""Level-by-level longest path: the reference evaluator of node-weighted DAGs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Levels:
    """Nodes grouped by longest distance from a source; ``preds[i]`` pads each node's
    predecessors with ``sentinel`` (a column that stays zero)."""

    nodes: list[np.ndarray]
    preds: list[np.ndarray]
    sentinel: int

    @staticmethod
    def build(num_nodes: int, pred_lists: list[list[int]]) -> Levels:
        level = np.zeros(num_nodes, dtype=np.int64)
        for v in range(num_nodes):
            if pred_lists[v]:
                level[v] = 1 + max(level[u] for u in pred_lists[v])
        nodes, preds = [], []
        for lv in range(int(level.max()) + 1 if num_nodes else 0):
            members = np.flatnonzero(level == lv)
            width = max(1, max(len(pred_lists[v]) for v in members))
            padded = np.full((len(members), width), num_nodes, dtype=np.int64)
            for i, v in enumerate(members):
                padded[i, : len(pred_lists[v])] = pred_lists[v]
            nodes.append(members)
            preds.append(padded)
        return Levels(nodes, preds, num_nodes)

    def finish(self, weights: np.ndarray) -> np.ndarray:
        """Finish times ``(k, n)`` of nodes with weights ``(k, n)`` (all start at time 0)."""
        k, n = weights.shape
        finish = np.zeros((k, n + 1))
        for members, preds in zip(self.nodes, self.preds, strict=True):
            finish[:, members] = finish[:, preds].max(axis=2) + weights[:, members]
        return finish[:, :n]
