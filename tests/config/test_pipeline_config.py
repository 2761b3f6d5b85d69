"""Pipeline parallelism in the config: the split of a model's layers into stages, the
weights and KV each stage holds, and the shapes refused before anything runs."""

from __future__ import annotations

import pytest

from frontier_dag.config.hardware import load_hardware
from frontier_dag.config.model import load_model
from frontier_dag.config.run import (
    PoolConfig,
    SchedulerConfig,
    resolve,
    stage_weight_shares,
    stage_weights_per_gpu_bytes,
    weights_per_gpu_bytes,
)
from frontier_dag.errors import ConfigError
from frontier_dag.sim.memory import kv_capacity_tokens
from tests.conftest import TINY_DENSE, make_config


@pytest.mark.parametrize("layers, pp, split", [
    (61, 2, [31, 30]),          # DeepSeek-V3: the extra layer before the last stage
    (126, 4, [31, 32, 32, 31]),  # Llama-3.1-405B: the remainder on the stages before the last
    (80, 4, [20, 20, 20, 20]),
    (5, 4, [1, 1, 2, 1]),        # the second-to-last stage first
])
def test_layers_split_as_vllm_and_sglang_split_them(layers, pp, split):
    pool = PoolConfig(role="colocated", gpus=pp, pp=pp)
    assert pool.stage_layers(layers) == split
    assert [len(r) for r in pool.stage_ranges(layers)] == split
    assert pool.stage_ranges(layers)[-1].stop == layers


def test_an_explicit_partition_is_kept_and_checked_against_the_model():
    pool = PoolConfig(role="colocated", gpus=2, pp=2, pp_layers=[1, 3])
    assert pool.stage_layers(4) == [1, 3]
    with pytest.raises(ConfigError, match=r"pp_layers: \[1, 2\] sum to 3 layers but tiny-dense-4 has 4"):
        resolve(make_config({**TINY_DENSE, "name": "tiny-dense-4", "num_layers": 4},
                            {"main": {"role": "colocated", "gpus": 2, "pp": 2, "pp_layers": [1, 2]}}, "colocated"))


@pytest.mark.parametrize("pool, message", [
    ({"role": "colocated", "gpus": 3, "pp": 2}, "pp=2 does not divide the gpus per replica"),
    ({"role": "colocated", "gpus": 4, "pp": 2, "tp": 4}, r"pipeline stage .* not divisible by tp=4"),
    ({"role": "colocated", "gpus": 2, "pp": 2, "pp_layers": [2]}, "names 1 stages but pp=2"),
    ({"role": "attention", "gpus": 2, "pp": 2}, "an attention pool holds half of each layer"),
])
def test_bad_pipeline_shapes_are_refused(pool, message):
    with pytest.raises(ConfigError, match=message):
        make_config(TINY_DENSE, {"main": pool}, "colocated")


def test_more_stages_than_layers_is_refused():
    with pytest.raises(ConfigError, match="a stage holds at least one layer"):
        resolve(make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 4, "pp": 4}}, "colocated"))


def test_each_stage_holds_its_layers_weights_and_the_ends_hold_embedding_and_head():
    model = load_model("llama-3.1-405b")
    whole = model.weight_bytes()
    pool = PoolConfig(role="colocated", gpus=16, tp=8, pp=2)
    shares = stage_weight_shares(model, pool)
    assert [s["attention"] for s in shares] == pytest.approx([63 / 126, 63 / 126])
    assert [s["embeddings"] for s in shares] == [0.5, 0.5]  # input embedding first, LM head last
    per_stage = stage_weights_per_gpu_bytes(model, pool)
    assert sum(per_stage) * 8 == pytest.approx(sum(whole.values()))
    # TP8 x PP2 holds what TP16 holds per GPU: 810 GB over 16 GPUs
    assert weights_per_gpu_bytes(model, pool) == pytest.approx(
        weights_per_gpu_bytes(model, PoolConfig(role="colocated", gpus=16, tp=16)), rel=0.01)


def test_llama_405b_needs_both_nodes_and_fits_them_pipelined():
    big = {"model": "llama-3.1-405b"}
    with pytest.raises(ConfigError, match=r"needs .* GiB of weights per GPU with tp=8"):
        resolve(make_config("llama-3.1-405b", {"main": {"role": "colocated", "gpus": 8, "tp": 8}}, "colocated"))
    for tp, pp in ((16, 1), (8, 2), (4, 4)):
        deployment = resolve(make_config(big["model"], {"main": {"role": "colocated", "gpus": 16, "tp": tp, "pp": pp}},
                                         "colocated"))
        assert deployment.pools["main"].gpus_per_stage == tp


def test_kv_per_stage_is_its_layers_kv_and_the_tightest_stage_sets_the_replicas():
    model = load_model({**TINY_DENSE, "name": "tiny-dense-4", "num_layers": 4})
    hw, sched = load_hardware("h100_sxm"), SchedulerConfig()
    one = kv_capacity_tokens(model, PoolConfig(role="colocated", gpus=1), hw, sched, "test")
    two = kv_capacity_tokens(model, PoolConfig(role="colocated", gpus=2, pp=2), hw, sched, "test")
    # each stage's GPU keeps half the layers' KV per token: twice the tokens (a tiny model's weights aside)
    assert two == pytest.approx(2 * one, rel=0.01)
    uneven = kv_capacity_tokens(model, PoolConfig(role="colocated", gpus=2, pp=2, pp_layers=[1, 3]), hw, sched, "test")
    assert uneven == pytest.approx(one * 4 / 3, rel=0.01)  # the three-layer stage is full first
