"""AF ping-pong that runs all layers of micro-batch 0, then all layers of micro-batch 1:
the attention stream serves micro-batch 1 only after micro-batch 0's last layer."""

from frontier_dag.dsl import Builder, Param, workflow
from frontier_dag.workflows.layers import ACTIVATION_BYTES, attention, embed, ffn, lm_head


@workflow("af_micro_batch_outer_loop", "AF ping-pong with micro-batches in the outer loop.",
          params={"micro_batches": Param(int, 2, "micro-batches", minimum=1)})
def af_micro_batch_outer_loop(g: Builder, micro_batches: int) -> None:
    attn_pool, ffn_pool = g.pool("attention"), g.pool("ffn")
    attn, ffn_gpu = g.stream("attention"), g.stream("ffn")
    a2f, f2a = g.link("attention", "ffn"), g.link("ffn", "attention")
    with g.stage("af", pools=["attention", "ffn"], micro_batches=micro_batches) as st:
        x = {}
        for mb in st.micro_batches:  # <- mistake
            x[mb.index] = embed(g, attn_pool, attn, mb)
            for layer in g.layers():
                h = attention(g, attn_pool, attn, mb, x[mb.index], layer)
                h = g.transfer("a2f", a2f, bytes=mb.tokens * g.model.hidden_size * ACTIVATION_BYTES, after=h)
                h = ffn(g, ffn_pool, ffn_gpu, mb, layer, h)
                x[mb.index] = g.transfer("f2a", f2a, bytes=mb.tokens * g.model.hidden_size * ACTIVATION_BYTES, after=h)
        for mb in st.micro_batches:
            lm_head(g, attn_pool, attn, mb, x[mb.index])
