"""A fitted scikit-learn forest flattened into one array, for the compiled walk.

sklearn's ``predict`` costs tens of microseconds of Python and validation per call
before any tree is touched; the simulator asks for a handful of rows at a time, tens
of thousands of times a second. Here every tree's nodes live in one array, which
``features.walk_forest`` walks in the same compiled call that computes the features: every
(row, tree) pair one level down per sweep, leaves pointing to themselves. A leaf can
carry two values (the mean log inefficiency and the mean log CV of its training rows),
so one walk yields both the estimate and its spread.

Stored compactly, 16 bytes a node (four int32 words, ``FlatForest``): a float32
threshold, rounded down, which decides exactly as sklearn's float64 one for the
float32-exact features it sees (x <= t iff x <= the largest float32 not above t), the
split feature and the right child (sklearn stores trees depth first: a left child
follows its parent); a leaf stores its first float32 value in the fourth word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FlatForest:
    """All trees' nodes in one (nodes x 4) int32 array, 16 bytes a node, read by the
    compiled walk in one cache line. An internal node holds its float32 threshold's bits,
    its split feature, its right child (the left child is the next node) and 0; a leaf
    holds -inf's bits, feature -1 (a column of zeros the walk appends), its own index and
    its first float32 value, so that a walk may step past a leaf and stay on it. A second
    leaf value (the log CV), when any leaf's is non-zero, is in ``spread``. Plus the root
    node of each tree and the depth."""

    nodes: np.ndarray
    spread: np.ndarray | None
    roots: np.ndarray
    depth: int

    @classmethod
    def from_arrays(cls, feature: np.ndarray, threshold: np.ndarray, right: np.ndarray, values: np.ndarray,
                    roots: np.ndarray, depth: int) -> FlatForest:
        """From per-node arrays: feature, float32 threshold (+-inf at a leaf), right child, and
        leaf values (nodes x outputs, at most 2)."""
        if values.shape[1] > 2:
            raise ValueError("a flat forest stores at most two values per leaf")
        leaf = np.isinf(threshold)
        nodes = np.zeros((len(threshold), 4), dtype=np.int32)
        as_float = nodes.view(np.float32)
        as_float[:, 0] = np.where(leaf, -np.inf, threshold)
        nodes[:, 1] = np.where(leaf, -1, feature)
        nodes[:, 2] = np.where(leaf, np.arange(len(threshold)), right)
        as_float[:, 3] = np.where(leaf, values[:, 0], 0)
        spread = None
        if values.shape[1] == 2 and np.any(values[leaf, 1] != 0):
            spread = np.where(leaf, values[:, 1], 0).astype(np.float32)
        return cls(nodes, spread, np.asarray(roots, dtype=np.int64), int(depth))

    @classmethod
    def from_sklearn(cls, forest, extra_leaf_values: list[np.ndarray] | None = None,
                     columns: np.ndarray | None = None, node_values: list[np.ndarray] | None = None) -> FlatForest:
        """Flatten a fitted one-output forest; ``extra_leaf_values[t]`` optionally gives
        tree t one more value per node, appended as a further output, and ``node_values[t]``
        the node values in place of the fitted ones. With ``columns``,
        the forest was fitted on those columns of a wider feature matrix, and its splits
        are renumbered to read the wider one."""
        features, thresholds, rights, values, roots = [], [], [], [], []
        offset, depth = 0, 0
        for t, estimator in enumerate(forest.estimators_):
            tree = estimator.tree_
            ids = np.arange(tree.node_count)
            leaf = tree.children_left < 0
            if not np.array_equal(tree.children_left[~leaf], ids[~leaf] + 1):
                raise ValueError("tree nodes are not in depth-first order")
            threshold = np.where(leaf, np.inf, tree.threshold)
            rounded = threshold.astype(np.float32)
            rounded = np.where(rounded > threshold, np.nextafter(rounded, np.float32(-np.inf)), rounded)
            split = np.where(leaf, 0, tree.feature)
            features.append(split if columns is None else np.asarray(columns)[split])
            thresholds.append(rounded)
            rights.append(np.where(leaf, ids, tree.children_right) + offset)
            leaf_values = [tree.value[:, 0, 0] if node_values is None else node_values[t]]
            if extra_leaf_values is not None:
                leaf_values.append(extra_leaf_values[t])
            values.append(np.column_stack(leaf_values))
            roots.append(offset)
            offset += tree.node_count
            depth = max(depth, tree.max_depth)
        return cls.from_arrays(np.concatenate(features), np.concatenate(thresholds).astype(np.float32),
                               np.concatenate(rights), np.concatenate(values).astype(np.float32), roots, depth)

    @property
    def threshold(self) -> np.ndarray:
        return self.nodes.view(np.float32)[:, 0]
