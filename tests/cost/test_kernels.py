"""The compiled expert-row selection against numpy's path (the same rows, sorted rows and hashes)."""

import numpy as np
import pytest

from frontier_dag.cost.coster import _ROW_HASH, StageCoster


def _coster(critical: int) -> StageCoster:
    coster = StageCoster.__new__(StageCoster)  # only the selection state: no graph needed
    coster.critical_ranks, coster._layer_slots = critical, None
    return coster


@pytest.mark.parametrize(("critical", "experts", "high"), [(2, 16, 4), (2, 1, 3), (1, 8, 2), (2, 4, 50)])
def test_critical_rows_match_numpy(critical, experts, high):
    rng = np.random.default_rng(critical * 100 + experts)
    steps, layers, ranks = 5, 6, 8
    loads = rng.integers(0, high, size=(steps, layers, ranks, experts))  # small counts: many ties
    loads[1, 2] = 0  # a layer without tokens
    # a group of rows (layer, rank) of layers 1..5, listed rank-major as the templates come
    layer_of, rank_of = np.tile(np.arange(1, layers), ranks), np.repeat(np.arange(ranks), layers - 1)
    coster = _coster(critical)
    chosen, busy, picked, hashes = coster._critical_compiled(layer_of, rank_of, loads)
    rows = loads[:, layer_of % layers, rank_of]
    expected = _coster(critical)._critical_mask(layer_of, rows)
    assert (chosen == expected).all()
    assert (busy == rows.any(axis=2)).all()
    sorted_rows = -np.sort(-rows[expected], axis=1)
    assert (picked == sorted_rows).all()
    assert (hashes == sorted_rows @ _ROW_HASH[:experts]).all()
    assert chosen.sum() < chosen.size  # the test exercises a real choice


def test_no_compiled_path_where_every_rank_is_priced():
    loads = np.ones((2, 3, 2, 4), dtype=np.int64)
    layer_of, rank_of = np.repeat(np.arange(3), 2), np.tile(np.arange(2), 3)
    assert _coster(2)._critical_compiled(layer_of, rank_of, loads) is None  # 2 ranks, 2 critical: all priced
    layer_of, rank_of = np.repeat(np.arange(3), 5), np.tile(np.arange(5), 3)
    assert _coster(3)._critical_compiled(layer_of, rank_of, np.ones((2, 3, 5, 4), dtype=np.int64)) is None  # numpy's
