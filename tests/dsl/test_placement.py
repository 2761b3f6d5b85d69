"""What a pool holds follows what it runs: ``pool.tp`` means the TP of a pool's dense layers
whatever its role, and a pool's weights are the groups its ops read (``g.weights``), not
its role's."""

from __future__ import annotations

import pytest

from frontier_dag.config.run import WEIGHTS_OF_ROLE, resolve, weights_per_gpu_bytes
from frontier_dag.dsl import WorkflowDef, trace
from frontier_dag.errors import ConfigError
from frontier_dag.ir.symbols import Sym
from frontier_dag.sim.memory import kv_capacity_tokens
from frontier_dag.workflows.layers import attention, dense_ffn, embed, ffn, lm_head, tp_all_reduce
from tests.conftest import TINY_DENSE, TINY_MOE, make_config, traced

AF = {"a": {"role": "attention", "gpus": 2, "tp": 2}, "f": {"role": "ffn", "gpus": 4}}


def test_an_ffn_pools_tp_is_the_split_of_its_dense_layers():
    """layers.ffn always split an ffn pool's dense FFN over its 4 GPUs; pool.tp now says so,
    and a helper that reads pool.tp (tp_all_reduce) no longer skips the all-reduce."""
    seen = {}

    def wf(g):
        pool, gpu = g.pool("ffn"), g.stream("ffn")
        g.stream("attention")
        with g.stage("af", pools=["attention", "ffn"]) as st:
            x = dense_ffn(g, pool, gpu, st.mb, None, reduce=False)
            seen["tp"] = pool.tp
            tp_all_reduce(g, pool, gpu, "sum", st.mb.tokens, x)

    deployment = resolve(make_config(TINY_DENSE, AF, "af_pingpong"))
    graph = trace(WorkflowDef("wf", "test", wf), deployment)
    assert seen["tp"] == 4
    ops = {a["op"]: graph.templates[a["template"]] for _, a in graph.graph.nodes(data=True)}
    assert ops["gate_up_proj"].field("n") == 2 * TINY_DENSE["intermediate_size"] // 4
    assert ops["sum"].field("group_size") == 4


def test_an_ffn_pool_with_another_tp_is_an_error():
    with pytest.raises(ConfigError, match="an ffn pool's dense layers are tensor parallel over all its GPUs per "
                                          "replica; omit tp or set it to 4"):
        make_config(TINY_DENSE, {**AF, "f": {"role": "ffn", "gpus": 4, "tp": 2}}, "af_pingpong")
    make_config(TINY_DENSE, {**AF, "f": {"role": "ffn", "gpus": 4, "tp": 4}}, "af_pingpong")


def test_shared_experts_under_all_to_all_ep_run_whole_on_each_gpus_tokens():
    """ep_moe_block's combine returns only the routed experts' output, so its shared experts
    are not split by TP (their partial sums would need an all-reduce): each GPU runs them
    whole on the tokens it dispatches, and holds them whole."""
    pools = {"a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 4, "ep": 4}}
    deployment, graph = traced(TINY_MOE, pools, "af_ep_moe", {"micro_batches": 1})
    ops = {a["op"]: graph.templates[a["template"]] for _, a in graph.graph.nodes(data=True) if a["layer"] == 1}
    assert ops["shared_gate_up_proj"].field("n") == 2 * TINY_MOE["moe"]["expert_intermediate_size"]
    assert ops["shared_gate_up_proj"].field("m") == Sym.var("af.mb0.tokens").ceil_div(4)  # what each GPU dispatches
    assert "shared_ffn_all_reduce" not in ops
    placed = graph.weight_groups()["ffn"]
    assert placed["shared_experts"] == 1 and placed["dense_ffn"] == 4 and placed["experts"] is None
    model, ffn_pool = deployment.model, deployment.pools["f"]
    w = model.weight_bytes()
    assert weights_per_gpu_bytes(model, ffn_pool, placed) == pytest.approx(
        w["dense_ffn"] / 4 + w["shared_experts"] + w["experts"] / 4)


def test_built_in_pools_hold_their_roles_weights():
    deployment, graph = traced(TINY_MOE, {"a": {"role": "attention", "gpus": 1},
                                          "f": {"role": "ffn", "gpus": 4, "ep": 4}}, "af_ep_moe")
    groups = graph.weight_groups()
    assert {role: set(g) for role, g in groups.items()} == {"attention": WEIGHTS_OF_ROLE["attention"],
                                                            "ffn": WEIGHTS_OF_ROLE["ffn"]}
    pools = {"p": {"role": "prefill", "gpus": 1}, "d": {"role": "decode", "gpus": 2, "ep": 2}}
    deployment, pd = traced(TINY_MOE, pools, "pd_ep_moe")
    placed = pd.weight_groups()
    assert {role: set(g) for role, g in placed.items()} == {"prefill": WEIGHTS_OF_ROLE["prefill"],
                                                            "decode": WEIGHTS_OF_ROLE["decode"]}
    for pool in deployment.pools.values():  # the same bytes as the role's placement, to the bit
        assert weights_per_gpu_bytes(deployment.model, pool, placed[pool.role]) == weights_per_gpu_bytes(
            deployment.model, pool)


def dense_layers_on_the_attention_pool(g):
    """A strategy that keeps the dense FFNs on the attention pool and sends only MoE layers
    to the FFN pool; the FFN pool runs a GEMM of its own that declares no weight group."""
    attn_pool, ffn_pool = g.pool("attention"), g.pool("ffn")
    attn, ffn_gpu = g.stream("attention"), g.stream("ffn")
    with g.stage("af", pools=["attention", "ffn"], serves="both") as st:
        x = embed(g, attn_pool, attn, st.mb)
        for layer in g.layers():
            x = attention(g, attn_pool, attn, st.mb, x)
            x = ffn(g, attn_pool if layer == 0 else ffn_pool, attn if layer == 0 else ffn_gpu, st.mb, layer, x)
        g.gemm("adapter", ffn_gpu, m=st.mb.tokens, n=8, k=8, after=x)
        lm_head(g, attn_pool, attn, st.mb, x)


def test_a_pool_holds_the_weights_its_ops_read():
    pools = {"a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 2}}
    deployment = resolve(make_config(TINY_MOE, pools, "af_pingpong"))
    graph = trace(WorkflowDef("mixed", "test", dense_layers_on_the_attention_pool), deployment)
    groups = graph.weight_groups()
    assert set(groups["attention"]) == {"attention", "embeddings", "dense_ffn"}  # layer 0 is dense
    assert set(groups["ffn"]) == {"shared_experts", "experts", "undeclared"}
    model, attn = deployment.model, deployment.pools["a"]
    w = model.weight_bytes()
    assert weights_per_gpu_bytes(model, attn, groups["attention"]) == pytest.approx(
        w["attention"] + w["embeddings"] + w["dense_ffn"])
    assert weights_per_gpu_bytes(model, attn) == pytest.approx(w["attention"] + w["embeddings"])  # its role's
    # the KV cache gets what the weights the pool really holds leave
    hw, sched = deployment.hardware, deployment.config.scheduler
    by_role = kv_capacity_tokens(model, attn, hw, sched, "test")
    by_ops = kv_capacity_tokens(model, attn, hw, sched, "test", groups["attention"])
    assert by_role - by_ops == pytest.approx(w["dense_ffn"] / model.kv_bytes_per_token, abs=1)
    # an op that declares no group: the pool holds its role's weights too (never fewer)
    ffn_pool = deployment.pools["f"]
    assert weights_per_gpu_bytes(model, ffn_pool, groups["ffn"]) == pytest.approx(
        weights_per_gpu_bytes(model, ffn_pool))


def test_an_unknown_weight_group_is_an_error():
    from frontier_dag.errors import WorkflowError

    def wf(g):
        with g.weights("mlp"):
            pass

    deployment = resolve(make_config(TINY_DENSE, AF, "af_pingpong"))
    with pytest.raises(WorkflowError, match="g.weights\\('mlp'\\): weight groups are attention, embeddings"):
        trace(WorkflowDef("wf", "test", wf), deployment)
