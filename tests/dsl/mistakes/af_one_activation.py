"""AF ping-pong whose micro-batches share one activation variable: micro-batch 1 starts
from micro-batch 0's output, so the two run one after the other."""

from frontier_dag.dsl import Builder, Param, workflow
from frontier_dag.workflows.layers import ACTIVATION_BYTES, attention, ffn, lm_head


@workflow("af_one_activation", "AF ping-pong with one activation for every micro-batch.",
          params={"micro_batches": Param(int, 2, "micro-batches", minimum=1)})
def af_one_activation(g: Builder, micro_batches: int) -> None:
    attn_pool, ffn_pool = g.pool("attention"), g.pool("ffn")
    attn, ffn_gpu = g.stream("attention"), g.stream("ffn")
    a2f, f2a = g.link("attention", "ffn"), g.link("ffn", "attention")
    with g.stage("af", pools=["attention", "ffn"], micro_batches=micro_batches) as st:  # <- mistake
        x = None
        for layer in g.layers():
            for mb in st.micro_batches:
                x = attention(g, attn_pool, attn, mb, x, layer)
                x = g.transfer("a2f", a2f, bytes=mb.tokens * g.model.hidden_size * ACTIVATION_BYTES, after=x)
                x = ffn(g, ffn_pool, ffn_gpu, mb, layer, x)
                x = g.transfer("f2a", f2a, bytes=mb.tokens * g.model.hidden_size * ACTIVATION_BYTES, after=x)
        for mb in st.micro_batches:
            lm_head(g, attn_pool, attn, mb, x)
