"""StageCoster: one batched call per family, empty micro-batches cost nothing, attention is
priced on the heaviest attention-DP rank, MLA splits prefill and decode sequences."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.cost.batch import (
    MicroBatchLoad,
    _bucket,
    _bucket_start,
    decode_key,
    decode_key_runs,
    dp_share,
    stage_env,
)
from frontier_dag.cost.coster import StageCoster
from frontier_dag.cost.queries import FAMILIES
from frontier_dag.ir.compile import CompiledStage


def coster(graph, stage, model):
    return StageCoster(graph, CompiledStage(graph, stage), model)


def mixed_batch(decodes=6, chunk=40):
    q = np.concatenate([np.ones(decodes, dtype=np.int64), [chunk]])
    ctx = np.concatenate([np.full(decodes, 300, dtype=np.int64), [0]])
    return MicroBatchLoad(q, ctx)


def test_one_call_per_family_and_empty_batches_cost_nothing(trace_dict, tiny, fake_cost_model):
    deployment, graph = trace_dict(tiny["dense"], {"m": {"role": "colocated", "gpus": 2, "tp": 2}}, "colocated")
    model = fake_cost_model(constant={"gemm": 1.0, "elementwise": 1.0, "all_reduce": 1.0, "attention": 1.0})
    c = coster(graph, "colocated", model)
    costs = c.costs(*stage_env("colocated", [mixed_batch()]))
    assert (costs > 0).all()
    families = [f for f, _ in model.calls]
    assert sorted(families) == sorted(set(families))  # each family priced in one call
    assert "attention_mixed" in families
    empty = MicroBatchLoad(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert coster(graph, "colocated", model).costs(*stage_env("colocated", [empty])).sum() == 0.0


def test_attention_dp_prices_the_heaviest_rank(trace_dict, tiny, fake_cost_model):
    _, graph = trace_dict(tiny["dense"], {"m": {"role": "colocated", "gpus": 4}}, "colocated")  # dp 4
    model = fake_cost_model(per_unit={"attention": 1.0})  # µs per new token of the rank's sequences
    costs = coster(graph, "colocated", model).costs(*stage_env("colocated", [mixed_batch(decodes=7, chunk=40)]))
    # sequences dealt longest first: the prefill chunk's rank also gets a decode
    assert costs.max() == 41.0
    q, ctx = dp_share(np.array([1, 1, 40, 1]), np.array([9, 9, 0, 9]), 2)
    assert 40 in q.tolist() and len(q) == 2


def test_mla_prices_prefill_and_decode_sequences_separately(trace_dict, tiny, fake_cost_model):
    _, graph = trace_dict(tiny["mla"], {"m": {"role": "colocated", "gpus": 1}}, "colocated")
    model = fake_cost_model(constant={"mla_decode": 1.0, "mla_prefill": 10.0})
    costs = coster(graph, "colocated", model).costs(*stage_env("colocated", [mixed_batch()]))
    assert {f for f, _ in model.calls} >= {"mla_decode", "mla_prefill"}
    assert 11.0 in costs.tolist()  # one attention op: both launches


def test_scalar_prices_are_memoised_on_the_batch_statistics(trace_dict, tiny, fake_cost_model):
    _, graph = trace_dict(tiny["dense"], {"m": {"role": "colocated", "gpus": 1}}, "colocated")
    model = fake_cost_model(constant={"gemm": 2.0})
    c = coster(graph, "colocated", model)
    first = c.costs(*stage_env("colocated", [mixed_batch()]))
    calls = sum(f == "gemm" for f, _ in model.calls)
    second = c.costs(*stage_env("colocated", [mixed_batch()]))
    assert sum(f == "gemm" for f, _ in model.calls) == calls
    np.testing.assert_array_equal(first, second)


def test_a_mixed_batch_is_priced_as_its_parts_without_mixed_measurements(trace_dict, tiny, fake_cost_model):
    deployment, graph = trace_dict(tiny["dense"], {"m": {"role": "colocated", "gpus": 1}}, "colocated")
    measured = [f for f in FAMILIES if f != "attention_mixed"]
    model = fake_cost_model(constant={"attention_decode": 2.0, "attention_prefill": 5.0}, measured_families=measured)
    costs = coster(graph, "colocated", model).costs(*stage_env("colocated", [mixed_batch()]))
    families = {f for f, _ in model.calls}
    assert "attention_mixed" not in families and {"attention_decode", "attention_prefill"} <= families
    attention = [i for i, t in enumerate(coster(graph, "colocated", model).stage.templates.tolist())
                 if graph.templates[t].family == "attention"]
    assert costs[attention] == pytest.approx(7.0)  # decode part + prefill part


def test_largest_columns_match_a_full_sort():
    from frontier_dag.cost.coster import _largest

    rng = np.random.default_rng(3)
    values = rng.permutation(58 * 256).reshape(58, 256)  # distinct: one right answer
    for k in (1, 2, 3):
        want = np.sort(np.argsort(-values, axis=1)[:, :k], axis=1)
        assert np.array_equal(np.sort(_largest(values, k), axis=1), want), k


def test_bucket_start_is_the_first_count_of_its_bucket():
    for bucket in [*range(300), 1000, 2500, 3200]:
        start = _bucket_start(bucket)
        assert _bucket(start) >= bucket and (start == 0 or _bucket(start - 1) < bucket)


def test_decode_key_runs_are_the_per_step_keys_run_length_encoded():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        seqs, ctx, top, steps = (int(v) for v in (rng.integers(1, 300), rng.integers(0, 10**6),
                                                  rng.integers(0, 20_000), rng.integers(1, 80)))
        runs = decode_key_runs(seqs, ctx, top, steps)
        assert [key for key, length in runs for _ in range(length)] == \
            [decode_key(seqs, ctx + seqs * j, top + j) for j in range(steps)]
        assert len({key for key, _ in runs}) == len(runs)  # a key never comes back


@pytest.mark.parametrize("arch", ["dense", "mla"])
def test_a_decode_stretch_prices_the_attention_dp_share_as_the_whole_batch_does(trace_dict, tiny, fake_cost_model, arch):
    """Step j of a decode stretch (``stretch=(ctx0, j)``): the heaviest rank's share found once
    and its summary by arithmetic give the prices, usage and model calls of the materialised
    batch ``(1, ctx0 + j)``."""
    _, graph = trace_dict(tiny[arch], {"m": {"role": "colocated", "gpus": 4}}, "colocated")  # dp 4
    ctx0 = np.random.default_rng(0).integers(10, 5000, size=37)
    ones = np.ones(len(ctx0), dtype=np.int64)
    plain_model, stretch_model = (fake_cost_model(constant={"attention": 2.0, "mla": 3.0},
                                                  per_unit={"attention": 1.0, "mla": 0.5}) for _ in range(2))
    plain, stretch = coster(graph, "colocated", plain_model), coster(graph, "colocated", stretch_model)
    for j in range(0, 400, 7):
        whole = MicroBatchLoad(ones, ctx0 + j)
        lazy = MicroBatchLoad(summary=whole.summary, materialize=lambda j=j: (ones, ctx0 + j), stretch=(ctx0, j))
        np.testing.assert_array_equal(stretch.costs(*stage_env("colocated", [lazy])),
                                      plain.costs(*stage_env("colocated", [whole])))
    assert stretch.usage.by_family() == plain.usage.by_family()
    assert stretch_model.calls == plain_model.calls
    assert stretch._stretch_share is not None  # the stretch's path was taken
