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


def test_normal_quantile_matches_the_exact_one():
    from statistics import NormalDist

    from frontier_dag.cost.kernels import normal_quantile

    for u in [1e-12, 1e-6, 0.01, 0.02425, 0.1, 0.3, 0.5, 0.77, 0.97576, 0.999, 1 - 1e-9]:
        assert normal_quantile.py_func(u) == pytest.approx(NormalDist().inv_cdf(u), rel=2e-9, abs=1e-12)


def _values(popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's (value_of, values) of ``popularity`` (as Router passes them)."""
    values, value_of = np.unique(popularity, return_inverse=True)
    return value_of.reshape(popularity.shape).astype(np.int64), values


def _uniforms(raw: np.ndarray) -> np.ndarray:
    """The uniforms of 64-bit numbers: the top 53 bits, as numpy makes a double."""
    return (raw >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def test_a_generators_uniforms_are_its_64_bit_numbers_top_bits():
    """Router.draw_many fills the kernel's uniforms with ``random()``: one 64-bit number of
    the stream each, its top 53 bits, as the numbers drawn raw give (and the stream goes on
    from the same place)."""
    raw_rng, rng = np.random.default_rng([3, 9]), np.random.default_rng([3, 9])
    filled = np.empty(100_003)
    rng.random(out=filled)
    np.testing.assert_array_equal(filled, _uniforms(raw_rng.bit_generator.random_raw(len(filled))))
    assert rng.bit_generator.random_raw() == raw_rng.bit_generator.random_raw()


def test_drawn_counts_are_the_python_functions_numbers():
    from frontier_dag.cost.kernels import draw_counts

    rng = np.random.default_rng(5)
    popularity = rng.dirichlet(np.ones(12), size=3)  # Poisson and normal means in one layer
    slot_expert = rng.permuted(np.tile(np.arange(12), (3, 1)), axis=1)[:, :, None].reshape(3, 4, 3).copy()
    picks = np.array([0, 40, 400, 7], dtype=np.int64)
    raw = rng.bit_generator.random_raw(3 * 12 * 3)
    for replicated in (0, 1):
        share = np.full(slot_expert.shape, 0.5) if replicated else np.ones(slot_expert.shape)
        compiled, python = (np.full((4, 3, 4, 3), -1, dtype=np.int64) for _ in range(2))
        draw_counts(picks, popularity, _uniforms(raw), slot_expert, share, replicated, *_values(popularity), compiled)
        draw_counts.py_func(picks, popularity, _uniforms(raw), slot_expert, share, replicated, *_values(popularity),
                            python)
        np.testing.assert_array_equal(compiled, python)
        assert (compiled[0] == 0).all() and (compiled >= 0).all()


def _plain_counts(picks: np.ndarray, popularity: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """``draw_counts``'s counts (draws, layers, experts) by the plain definition: every
    count's CDF built afresh term by term and searched from 0 (capped at the table's last
    count), the normal limit from NORMAL_FROM."""
    from frontier_dag.cost.kernels import NORMAL_FROM, POISSON_TABLE, normal_quantile

    u = iter(_uniforms(raw).tolist())
    out = np.zeros((len(picks), *popularity.shape), dtype=np.int64)
    for d, n in enumerate(picks.tolist()):
        for (layer, e), share in (np.ndenumerate(popularity) if n > 0 else ()):
            lam, x = n * share, next(u)
            if lam >= NORMAL_FROM:
                out[d, layer, e] = max(np.rint(lam + np.sqrt(lam) * normal_quantile(max(x, 1e-300))), 0)
                continue
            p = np.exp(-lam)
            cdf, count = p, 0
            while x >= cdf and count < POISSON_TABLE - 1:
                count += 1
                p *= lam / count
                cdf += p
            out[d, layer, e] = count
    return out


@pytest.mark.parametrize("routing", ["uniform", "power_law"])
@pytest.mark.parametrize("mean", [1e-3, 0.37, 2.0, 5.5, 9.9])
def test_shared_and_guided_tables_give_the_plain_counts(routing, mean):
    """Experts of one popularity share a CDF table while the picks stay (built as far as
    any draw needed, rebuilt when the picks change); a mean drawn again and again is
    searched from its guide. The counts are the plain definition's, also at the extreme
    uniforms (0 and just below 1) and on the guide cells' edges."""
    from frontier_dag.cost.kernels import GUIDE_AFTER, GUIDE_CELLS, draw_counts

    layers, experts = 3, 40
    if routing == "uniform":
        popularity = np.full((layers, experts), 1.0 / experts)
    else:  # every layer a permutation of the same weights: values shared across layers
        weights = np.arange(1, experts + 1, dtype=float) ** -1.2
        rng = np.random.default_rng(7)
        popularity = np.stack([rng.permutation(weights) for _ in range(layers)]) / weights.sum()
    n = max(int(round(mean / popularity.mean())), 1)
    picks = np.array([n, n, n, 7, 0, n, n + 1, n, 40 * n], dtype=np.int64)  # the last reaches the normal limit
    live = np.flatnonzero(picks)  # a draw of no picks takes no numbers
    raw = np.random.default_rng(3).bit_generator.random_raw(len(live) * popularity.size)
    edges = (np.arange(0, GUIDE_CELLS, 7, dtype=np.uint64) << np.uint64(45))  # u = i / GUIDE_CELLS exactly
    raw[GUIDE_AFTER + 1:GUIDE_AFTER + 1 + len(edges)] = edges
    raw[2 * popularity.size + 5:2 * popularity.size + 5 + len(edges)] = edges
    raw[-1], raw[-2], raw[popularity.size] = np.uint64(0), np.uint64(2**64 - 1), np.uint64(2**64 - 1)
    out = np.empty((len(picks), layers, 4, 10), dtype=np.int64)
    draw_counts(picks, popularity, _uniforms(raw), np.zeros((layers, 4, 10), dtype=np.int64),
                np.ones((layers, 4, 10)), 0,
                *_values(popularity), out)
    np.testing.assert_array_equal(out.reshape(len(picks), layers, experts), _plain_counts(picks, popularity, raw))


@pytest.mark.parametrize("mean", [0.3, 4.0, 9.5, 10.0, 60.0])
def test_drawn_counts_have_the_poisson_moments(mean):
    """Each expert's count: Poisson of its mean (below 10), its normal limit from 10."""
    from frontier_dag.cost.kernels import draw_counts

    experts, draws = 64, 400
    popularity = np.full((2, experts), 1.0 / experts)
    picks = np.full(draws, int(round(mean * experts)), dtype=np.int64)
    mean = picks[0] / experts
    raw = np.random.default_rng(11).bit_generator.random_raw(draws * popularity.size)
    out = np.empty((draws, 2, 8, 8), dtype=np.int64)
    draw_counts(picks, popularity, _uniforms(raw), np.zeros((2, 8, 8), dtype=np.int64), np.ones((2, 8, 8)), 0,
                *_values(popularity), out)
    counts = out.ravel()  # 51,200 counts: the sample mean within 5 standard errors
    assert abs(counts.mean() - mean) < 5 * np.sqrt(mean / counts.size)
    assert counts.var() == pytest.approx(mean, rel=0.05)
    if mean < 10:
        assert np.mean(counts == 0) == pytest.approx(np.exp(-mean), abs=0.01)


def test_fill_prices_writes_what_numpy_writes():
    from frontier_dag.cost.kernels import fill_prices

    rng = np.random.default_rng(2)
    k, g, templates = 4, 9, 30
    chosen = rng.random((k, g)) < 0.4
    chosen[2] = False  # a step with nothing priced: its rows cost the floor 0
    busy = rng.random((k, g)) < 0.8
    latency = rng.random(int(chosen.sum())) * 100
    steps, idx = np.array([0, 2, 3, 5]), rng.permutation(templates)[:g]
    counts = chosen.sum(axis=1)
    ends = np.cumsum(counts)
    expected = np.full((6, templates), -1.0)
    for j, s in enumerate(steps):  # the loop the kernel replaces
        price = latency[ends[j] - counts[j]:ends[j]]
        floor = np.full(g, price.min() if len(price) else 0.0)
        floor[chosen[j]] = price
        expected[s, idx] = np.where(busy[j], floor, 0.0)
    out = np.full((6, templates), -1.0)
    fill_prices(out, steps, idx, chosen.view(np.uint8), busy.view(np.uint8), latency)
    np.testing.assert_array_equal(out, expected)


def test_stacked_views_evenly_spaced_draws_and_copies_the_rest():
    from frontier_dag.cost.coster import _stacked

    drawn = np.empty((12, 3, 4, 2), dtype=np.int64)  # as Router.draw_many returns them
    drawn[:] = np.arange(drawn.size).reshape(drawn.shape)
    for picked, view in (([0, 1, 2, 3], True), ([1, 3, 5], True), ([4], True), ([0, 2, 3], False), ([5, 4], False)):
        arrays = [drawn[i] for i in picked]
        stacked = _stacked(arrays)
        np.testing.assert_array_equal(stacked, np.stack(arrays))
        assert np.shares_memory(stacked, drawn) == view
