"""Heterogeneous batch compositions: sequence lengths and expert loads (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.profiling.batches import (
    LENGTH_DISTRIBUTIONS,
    draw_lengths,
    ensure_heterogeneous,
    expert_popularity,
    fit_total,
    local_expert_tokens,
    route_tokens,
)


@pytest.mark.parametrize("dist", LENGTH_DISTRIBUTIONS)
def test_lengths_have_the_requested_mean_and_spread(dist):
    rng = np.random.default_rng(0)
    lengths = draw_lengths(rng, 20000, mean=1000, cv=0.5, dist=dist, high=100000)
    assert lengths.dtype == np.int64
    assert lengths.mean() == pytest.approx(1000, rel=0.05)
    assert lengths.std() / lengths.mean() == pytest.approx(0.5, rel=0.15)


def test_lengths_stay_in_bounds_and_small_batches_are_never_uniform():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 6))
        lengths = draw_lengths(rng, n, mean=float(rng.uniform(1, 3)), cv=0.1, dist="uniform", low=1, high=4)
        assert ((lengths >= 1) & (lengths <= 4)).all()
        assert len(set(lengths.tolist())) > 1
    assert ensure_heterogeneous(np.array([1, 1]), low=1, high=5).tolist() == [1, 2]
    assert ensure_heterogeneous(np.array([5, 5]), low=1, high=5).tolist() == [5, 4]
    assert ensure_heterogeneous(np.array([3]), low=1, high=5).tolist() == [3]


def test_fit_total_scales_down_to_the_cap_keeping_proportions():
    lengths = np.array([1000, 3000, 6000])
    fitted = fit_total(lengths, 1000, low=2)
    assert fitted.sum() <= 1000 and (fitted >= 2).all()
    assert fitted[2] > fitted[1] > fitted[0]
    assert fit_total(lengths, 20000).tolist() == lengths.tolist()


def test_routing_picks_distinct_experts_and_power_law_is_skewed():
    rng = np.random.default_rng(0)
    uniform = route_tokens(rng, 4096, expert_popularity(rng, 64, "uniform", 1.0), topk=8)
    skewed = route_tokens(rng, 4096, expert_popularity(rng, 64, "power_law", 1.2), topk=8)
    for counts in (uniform, skewed):
        assert counts.sum() == 4096 * 8
        assert counts.max() <= 4096  # a token never picks the same expert twice
    cv = lambda c: c.std() / c.mean()  # noqa: E731
    assert cv(uniform) < 0.1 < 1.0 < cv(skewed)
    # topk == num_experts: every token reaches every expert exactly once.
    assert route_tokens(rng, 10, expert_popularity(rng, 4, "power_law", 2.0), topk=4).tolist() == [10] * 4


def test_an_ep_rank_holds_a_contiguous_block_of_experts():
    counts = np.arange(16)
    assert local_expert_tokens(counts, ep=4, rank=2).tolist() == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="topk"):
        route_tokens(np.random.default_rng(0), 4, np.full(4, 0.25), topk=5)
