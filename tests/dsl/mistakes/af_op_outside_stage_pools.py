"""Attention offload: the FFN runs on its own pool, but the stage forgot to step it."""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.layers import attention, embed, ffn, lm_head


@workflow("af_op_outside_stage_pools", "AF whose stage lists only the attention pool.")
def af_op_outside_stage_pools(g: Builder) -> None:
    attn_pool, ffn_pool = g.pool("attention"), g.pool("ffn")
    attn, ffn_gpu = g.stream("attention"), g.stream("ffn")
    with g.stage("af", pools=["attention"]) as st:
        x = embed(g, attn_pool, attn, st.mb)
        for layer in g.layers():
            x = attention(g, attn_pool, attn, st.mb, x, layer)
            x = ffn(g, ffn_pool, ffn_gpu, st.mb, layer, x)  # <- mistake
        lm_head(g, attn_pool, attn, st.mb, x)
