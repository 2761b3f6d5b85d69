"""Expert routing: token counts per layer, rank and local expert; power laws; recorded ids; EPLB."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.cost.routing import Router, RoutingSpec
from frontier_dag.errors import ConfigError


def router(kind="uniform", experts=16, top_k=2, ep=4, layers=3, **spec):
    return Router(RoutingSpec(kind=kind, **spec), experts, top_k, ep, layers, seed=0)


@pytest.mark.parametrize("kind", ["uniform", "power_law"])
def test_every_routed_token_lands_on_one_slot(kind):
    loads = router(kind).draw(tokens=20, rng=np.random.default_rng(1))
    assert loads.shape == (3, 4, 4)
    assert (loads.sum(axis=(1, 2)) == 20 * 2).all()
    # many tokens may be drawn approximately (per-expert Poisson), within sampling noise
    loads = router(kind).draw(tokens=5000, rng=np.random.default_rng(1))
    np.testing.assert_allclose(loads.sum(axis=(1, 2)), 5000 * 2, rtol=0.05)


def test_power_law_is_more_skewed_than_uniform():
    def max_over_mean(kind):
        loads = router(kind, alpha=1.5).expected(tokens=10_000).sum(axis=2)
        return (loads.max(axis=1) / loads.mean(axis=1)).mean()

    assert max_over_mean("uniform") == pytest.approx(1.0)
    assert max_over_mean("power_law") > 1.3


def test_hot_expert_differs_by_layer():
    r = router("power_law", layers=4)
    assert len({int(np.argmax(p)) for p in r.popularity}) > 1


def test_redundant_experts_balance_the_ranks():
    plain = router("power_law", alpha=1.5).expected(tokens=10_000).sum(axis=2).max(axis=1)
    eplb = router("power_law", alpha=1.5, redundant_experts=4).expected(tokens=10_000).sum(axis=2).max(axis=1)
    assert (eplb < plain).all()
    assert router("power_law", redundant_experts=4).experts_per_rank == 5


def test_recorded_expert_ids(tmp_path):
    ids = np.zeros((2, 100, 2), dtype=np.int64)  # every token picks experts 0 and 1 in both layers
    ids[:, :, 1] = 1
    np.save(tmp_path / "ids.npy", ids)
    loads = router("trace", path=str(tmp_path / "ids.npy"), layers=2).expected(tokens=10)
    assert loads[:, 0, :2].tolist() == [[10, 10], [10, 10]] and loads[:, 1:].sum() == 0
    (tmp_path / "ids.csv").write_text("layer,expert\n0,5\n0,5\n1,9\n")
    csv = router("trace", path=str(tmp_path / "ids.csv"), layers=2, top_k=1).expected(tokens=4)
    assert csv[0].sum(axis=1).tolist() == [0, 4, 0, 0] and csv[1].sum(axis=1).tolist() == [0, 0, 4, 0]


@pytest.mark.parametrize(("spec", "message"), [
    ({"kind": "zipf"}, "routing.kind: 'zipf' is not uniform"),
    ({"kind": "trace"}, "routing.path: routing kind trace needs"),
    ({"alpha": 0}, "routing.alpha: the power-law exponent must be > 0"),
    ({"redundant_experts": -1}, "redundant_experts: must be >= 0"),
    ({"skew": 2}, "routing.skew: unknown key"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        RoutingSpec.parse(spec)


def test_redundant_experts_must_fill_the_ranks():
    with pytest.raises(ConfigError, match="do not divide over ep=4 ranks"):
        router(redundant_experts=3)
    with pytest.raises(ConfigError, match="no such file"):
        router("trace", path="/nonexistent/ids.npy")


def eplb_reference(weight: np.ndarray, slots_total: int, ranks: int) -> tuple[np.ndarray, np.ndarray]:
    """DeepSeek's EPLB, global policy (eplb.py: ``replicate_experts`` then ``balanced_packing``),
    transcribed loop for loop: per-expert replica counts and per-rank loads, sorted."""
    logcnt = np.ones(len(weight), dtype=int)
    for _ in range(slots_total - len(weight)):
        logcnt[int(np.argmax(weight / logcnt))] += 1
    physical = [w / n for w, n in zip(weight, logcnt, strict=True) for _ in range(n)]
    per_rank = slots_total // ranks
    loads, items = [0.0] * ranks, [0] * ranks
    for w in sorted(physical, reverse=True):
        pack = min((i for i in range(ranks) if items[i] < per_rank), key=loads.__getitem__)
        loads[pack] += w
        items[pack] += 1
    return logcnt, np.sort(loads)


@pytest.mark.parametrize(("ep", "redundant"), [(72, 32), (32, 32), (64, 64), (8, 8)])
def test_redundant_experts_are_placed_as_eplb_places_them(ep, redundant):
    """DeepSeek-V3's 256 experts: the hottest get the replicas, and the replicas spread over
    the ranks exactly as DeepSeek's EPLB packs them (same replica counts, same rank loads)."""
    r = router("power_law", experts=256, top_k=8, ep=ep, layers=3, redundant_experts=redundant)
    for layer in range(3):
        counts, loads = eplb_reference(r.popularity[layer], 256 + redundant, ep)
        placed = np.bincount(r.slot_expert[layer].ravel(), minlength=256)
        np.testing.assert_array_equal(placed, counts)
        ours = (r.popularity[layer][r.slot_expert[layer]] * r.slot_share[layer]).sum(axis=1)
        np.testing.assert_allclose(np.sort(ours), loads, rtol=1e-12)
        assert counts[np.argmax(r.popularity[layer])] == counts.max() > 1  # the hottest expert is replicated most
        assert r.slot_expert.shape[2] == (256 + redundant) // ep


@pytest.mark.parametrize(("kind", "experts", "layers", "redundant"), [
    ("uniform", 8, 3, 0), ("power_law", 8, 3, 4),  # the exact multinomial
    ("uniform", 256, 12, 0), ("power_law", 256, 12, 0), ("power_law", 256, 12, 32),  # Poisson and normal counts
])
def test_draw_many_draws_what_draw_draws_one_by_one(kind, experts, layers, redundant):
    """A stretch's routing drawn at once: the same counts, and the stream left where the
    draws one by one leave it, whatever the mix of small, large and empty batches."""
    r = Router(RoutingSpec(kind=kind, alpha=1.2, redundant_experts=redundant), experts, 8, 4, layers, seed=0)
    for tokens in ([5, 5, 5], [300, 301, 300, 301], [0, 40, 0, 41], [400, 20, 20, 400], [2, 700, 3], [10, 9] * 4, [0]):
        one, many = np.random.default_rng(3), np.random.default_rng(3)
        expected = np.stack([r.draw(t, one) for t in tokens])
        np.testing.assert_array_equal(r.draw_many(tokens, many), expected)
        assert one.random() == many.random()
