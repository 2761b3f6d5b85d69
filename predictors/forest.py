"""A fitted scikit-learn forest flattened into numpy arrays and walked vectorized.

sklearn's ``predict`` costs tens of microseconds of Python and validation per call
before any tree is touched; the simulator asks for a handful of rows at a time, tens
of thousands of times a second. Here every tree's nodes live in one set of arrays;
a walk moves all (row, tree) pairs one level down per numpy step, leaves point to
themselves, and the walk stops when every pair sits on a leaf. A leaf can carry
several values (the mean log inefficiency and the mean log CV of its training rows),
so one walk yields both the estimate and its spread.

Stored compactly, 18 bytes a node: int16 feature; float32 threshold, rounded down,
which decides exactly as sklearn's float64 one for the float32-exact features it
sees (x <= t iff x <= the largest float32 not above t); int32 right child (sklearn
stores trees depth first: a left child follows its parent); float32 leaf values.
The walk's per-slot arrays are rebuilt when a forest is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FlatForest:
    """Per node: split feature and threshold (a leaf: +inf), right child (a leaf: itself;
    the left child is the next node), and leaf values (nodes x outputs); the root node
    of each tree; the depth."""

    feature: np.ndarray
    threshold: np.ndarray
    right: np.ndarray
    values: np.ndarray
    roots: np.ndarray
    depth: int
    _walk: tuple | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_sklearn(cls, forest, extra_leaf_values: list[np.ndarray] | None = None) -> FlatForest:
        """Flatten a fitted one-output forest; ``extra_leaf_values[t]`` optionally gives
        tree t one more value per node, appended as a further output."""
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
            features.append(np.where(leaf, 0, tree.feature))
            thresholds.append(rounded)
            rights.append(np.where(leaf, ids, tree.children_right) + offset)
            columns = [tree.value[:, 0, 0]]
            if extra_leaf_values is not None:
                columns.append(extra_leaf_values[t])
            values.append(np.column_stack(columns))
            roots.append(offset)
            offset += tree.node_count
            depth = max(depth, tree.max_depth)
        return cls(np.concatenate(features).astype(np.int16), np.concatenate(thresholds).astype(np.float32),
                   np.concatenate(rights).astype(np.int32), np.concatenate(values).astype(np.float32),
                   np.asarray(roots, dtype=np.int64), depth)

    def __post_init__(self) -> None:
        self._slots()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_walk": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._slots()  # at load, so the first prediction costs what the others do

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    def _slots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Node i owns slots 2i (taken when x <= threshold) and 2i + 1: per slot, the
        node's feature and threshold and the slot of the child it leads to. Indexing
        by slot saves a multiply per level."""
        if self._walk is None:  # built once per forest
            nodes = np.arange(len(self.right), dtype=np.int32)
            leaf = np.isinf(self.threshold)
            left = np.where(leaf, nodes, nodes + 1)
            child = 2 * np.column_stack([left, self.right]).ravel()
            self._walk = (np.repeat(self.feature, 2), np.repeat(self.threshold, 2), child)
        return self._walk

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """Leaf node of every (row, tree) pair, shape rows x trees."""
        rows, width = X.shape
        feature, threshold, child = self._slots()
        flat_x = np.ascontiguousarray(X, dtype=float).ravel()
        slot = np.tile(2 * self.roots, rows)
        base = None if rows == 1 else np.repeat(np.arange(rows) * width, self.n_trees)
        for level in range(self.depth):
            split = feature[slot] if base is None else feature[slot] + base
            slot = child[slot + (flat_x[split] > threshold[slot])]
            # the check costs a step; most paths end above the deepest leaf
            if level % 4 == 3 and np.isinf(threshold[slot]).all():
                break
        return (slot // 2).reshape(rows, self.n_trees)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Mean over trees of each leaf value: rows x outputs."""
        return self.values[self.leaves(X)].mean(axis=1, dtype=float)
