"""Held-out accuracy of the fitted models: random and grouped splits.

* ``random``: 20% of the rows, drawn with the seed.
* ``grouped``: 20% of the *groups* (at least one), whole: every row of a held-out
  group leaves training, so the model must predict a shape it never saw. Groups:
  attention and MLA prefill: the sequence lengths (q) of the batch; decode: the
  context lengths; mixed: the batch composition (prefill lengths, decode count,
  context lengths); gemm: the (n, k) site; moe_grouped_gemm, the wide-EP expert families and DeepEP's dispatch and combine: the
  token count;
  collectives and p2p: the message size; elementwise: the token count.
  Groups at the edge of the measured range (holding the smallest or largest size)
  stay in training: predicting them is extrapolation, which the model flags as out
  of range and which is reported apart (``out_of_range``), not interpolation.
* ``spaced``: as ``grouped`` (the same groups, count and edges), but two held-out groups
  are never neighbours in size order: each held-out size keeps both measured neighbours in
  training. On a table measured on a doubling grid, ``grouped`` may hold out two adjacent
  token counts and leave a 4x gap, wider than any gap between a simulator's query and the
  fitted rows; ``spaced`` scores the interpolation across one missing grid point
  (docs/predictors.md, "Held-out splits").

Metrics per family: rows in training and test, the share of test predictions within
5% and 10% relative error, the median and p90 relative error, and how many test rows
were out of range.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from frontier_dag.config.hardware import load_hardware
from frontier_dag.cost.queries import (
    ATTENTION_FAMILIES,
    COLLECTIVE_FAMILIES,
    DEEPEP_FAMILIES,
    MLA_FAMILIES,
    MOE_FAMILIES,
)
from frontier_dag.errors import PredictorError

from .fitting import DEFAULT_SETTINGS, FitSettings, fit_family, metrics, table_query
from .schema import ProfileSet

TEST_SHARE = 0.2
SPLITS = ("random", "grouped", "spaced")


def _distinct(column) -> list[tuple]:
    return [tuple(np.unique(v).tolist()) for v in column]


def _composition(table: pd.DataFrame) -> list[tuple]:
    return [(tuple(sorted(q[q > 1].tolist())), int((q == 1).sum()), tuple(np.unique(c[q == 1]).tolist()))
            for q, c in zip(table["q_lens"], table["ctx_lens"], strict=True)]


def _max_of(column) -> np.ndarray:
    return np.array([np.max(v) for v in column], dtype=float)


def group_rule(family: str) -> tuple[Callable[[pd.DataFrame], list], Callable[[pd.DataFrame], np.ndarray]]:
    """(group key per row, size columns per row whose extremes mark edge groups) of ``family``."""
    if family in ATTENTION_FAMILIES or family in MLA_FAMILIES:
        if family.endswith("prefill"):
            return (lambda t: _distinct(t["q_lens"])), (lambda t: _max_of(t["q_lens"])[:, None])
        if family.endswith("decode"):
            return (lambda t: _distinct(t["ctx_lens"])), (lambda t: _max_of(t["ctx_lens"])[:, None])
        return _composition, (lambda t: np.column_stack([_max_of(t["q_lens"]), _max_of(t["ctx_lens"])]))
    if family == "gemm":
        return (lambda t: list(zip(t["n"], t["k"], strict=True))), (lambda t: t[["n", "k"]].to_numpy(float))
    if family in MOE_FAMILIES or family in DEEPEP_FAMILIES or family == "elementwise":
        return (lambda t: t["num_tokens"].tolist()), (lambda t: t[["num_tokens"]].to_numpy(float))
    if family in COLLECTIVE_FAMILIES or family == "p2p":
        return (lambda t: t["bytes"].tolist()), (lambda t: t[["bytes"]].to_numpy(float))
    raise KeyError(family)


def held_out_mask(family: str, table: pd.DataFrame, split: str, seed: int = 0) -> np.ndarray:
    """Which rows of ``table`` the ``split`` holds out."""
    rng = np.random.default_rng(seed)
    if split == "random":
        mask = np.zeros(len(table), dtype=bool)
        mask[rng.permutation(len(table))[: max(1, round(TEST_SHARE * len(table)))]] = True
        return mask
    if split not in ("grouped", "spaced"):
        raise PredictorError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    key_of, sizes_of = group_rule(family)
    keys = pd.Series(key_of(table), dtype=object)
    codes, groups = pd.factorize(keys)
    sizes = sizes_of(table)
    edge_rows = ((sizes == sizes.min(axis=0)) | (sizes == sizes.max(axis=0))).any(axis=1)
    edge_groups = np.zeros(len(groups), dtype=bool)
    edge_groups[codes[edge_rows]] = True
    interior = np.flatnonzero(~edge_groups)
    if len(interior) < 2:
        return np.zeros(len(table), dtype=bool)
    # keep at least one interior group in training
    count = min(max(1, round(TEST_SHARE * len(groups))), len(interior) - 1)
    if split == "spaced":
        return np.isin(codes, _spaced_choice(rng, interior, _size_order(codes, sizes, len(groups)), count))
    return np.isin(codes, rng.choice(interior, size=count, replace=False))


def _size_order(codes: np.ndarray, sizes: np.ndarray, n_groups: int) -> np.ndarray:
    """Each group's position when the groups are sorted by their smallest size columns
    (lexicographically)."""
    first = np.full((n_groups, sizes.shape[1]), np.inf)
    np.minimum.at(first, codes, sizes)
    order = np.lexsort(first.T[::-1])
    position = np.empty(n_groups, dtype=np.int64)
    position[order] = np.arange(n_groups)
    return position


def _spaced_choice(rng: np.random.Generator, interior: np.ndarray, position: np.ndarray, count: int) -> np.ndarray:
    """``count`` of the ``interior`` groups, drawn in random order, skipping a group whose
    neighbour in size order (``position``) is drawn already; fewer if no more fit."""
    taken: set[int] = set()
    chosen = []
    for group in rng.permutation(interior):
        at = int(position[group])
        if at - 1 in taken or at + 1 in taken:
            continue
        taken.add(at)
        chosen.append(group)
        if len(chosen) == count:
            break
    return np.array(chosen, dtype=np.int64)


#: what ``evaluate(by=...)`` breaks the held-out rows down by
BREAKDOWNS = ("source", "dtype", "kv_dtype")


def _breakdown_key(test: pd.DataFrame, by: str) -> pd.Series:
    if by in ("dtype", "kv_dtype"):  # kv_dtype: attention's KV cache precision (FP8 or BF16)
        return test[by].astype(str) if by in test else pd.Series("-", index=test.index)
    if "source" not in test:
        return pd.Series("-", index=test.index)
    # aiconfigurator:<engine>/<version>/<table>:<kernel>[:<routing>] -> <kernel>[:<routing>]
    return test["source"].astype(str).map(lambda s: s.split(":", 2)[-1] if s.startswith("aiconfigurator:") else s)


def evaluate(profiles: ProfileSet, split: str = "random", seed: int = 0, settings: FitSettings = DEFAULT_SETTINGS,
             families=None, n_jobs: int = 2, by: str | None = None) -> dict[str, dict]:
    """Fit each family on its training rows and score it on the held-out ones; ``by``
    (``source``: the measured kernel, ``dtype``, ``kv_dtype``) adds the scores of each part of the
    held-out rows (``parts``)."""
    hw = load_hardware(profiles.hardware)
    report = {}
    for family in sorted(profiles.tables) if families is None else families:
        table = profiles.tables.get(family)
        if table is None or len(table) < 10:
            continue
        held = held_out_mask(family, table, split, seed)
        if not held.any() or held.all():
            continue
        train, test = table[~held].reset_index(drop=True), table[held].reset_index(drop=True)
        model = fit_family(family, train, hw, settings, n_jobs=n_jobs)
        latency, _, out_of_range = model.predict(table_query(family, test), hw)
        measured = test["latency_us"].to_numpy(float)
        report[family] = {"n_train": len(train), "n_test": len(test), **metrics(latency, measured),
                          "out_of_range": int(out_of_range.sum())}
        if by is not None:
            if by not in BREAKDOWNS:
                raise PredictorError(f"--by {by!r}: use one of {', '.join(BREAKDOWNS)}")
            keys = _breakdown_key(test, by).to_numpy()
            report[family]["parts"] = {str(k): {"n_test": int((keys == k).sum()),
                                                **metrics(latency[keys == k], measured[keys == k])}
                                       for k in sorted(set(keys))}
    return report
