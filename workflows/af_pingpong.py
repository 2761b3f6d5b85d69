"""Attention/FFN disaggregation with ping-pong micro-batches.

An attention pool holds the attention layers and the KV cache; an FFN pool holds
the FFN (or MoE) layers. The batch splits into ``micro_batches`` m; in every
layer each micro-batch goes attention -> A2F transfer -> FFN -> F2A transfer.
Because ops on one pool run in program order, micro-batch i+1's attention runs
while micro-batch i is in the FFN pool: with m = 1 nothing overlaps, and the
iteration time falls as m grows until one stage saturates.

With a ``prefill`` pool in the config, prefill runs there (PD) and the AF pools only
decode, each request starting once its KV has moved to the attention pool.

``af_stages`` is the reusable piece: ``af_ep_moe`` passes an expert-parallel MoE
block for the FFN pool.
"""

from frontier_dag.dsl import Builder, Param, workflow
from frontier_dag.workflows.layers import ACTIVATION_BYTES, MoEBlock, attention, embed, ffn, lm_head
from frontier_dag.workflows.pd import prefill_and_transfer

MICRO_BATCHES = Param(int, 2, "ping-pong micro-batches m (1 = no overlap)", minimum=1, maximum=64)


def af_stages(g: Builder, micro_batches: int, moe_block: MoEBlock | None = None) -> None:
    attn_pool, ffn_pool = g.pool("attention"), g.pool("ffn")
    attn, ffn_stream = g.stream("attention"), g.stream("ffn")
    a2f, f2a = g.link("attention", "ffn"), g.link("ffn", "attention")
    # with a prefill pool in front (PD), AF only decodes, once a request's KV has arrived;
    # otherwise it serves both phases (chunked prefill)
    kv = prefill_and_transfer(g, "attention") if g.has_pool("prefill") else None
    serves = "both" if kv is None else "decode"
    hidden_bytes = g.model.hidden_size * ACTIVATION_BYTES

    with g.stage("af", pools=["attention", "ffn"], micro_batches=micro_batches, serves=serves) as st:
        x = {mb.index: embed(g, attn_pool, attn, mb, after=kv) for mb in st.micro_batches}
        for layer in g.layers():
            for mb in st.micro_batches:
                h = attention(g, attn_pool, attn, mb, x[mb.index], layer)
                h = g.transfer("a2f", a2f, bytes=mb.tokens.ceil_div(attn_pool.dp) * hidden_bytes, after=h)
                h = ffn(g, ffn_pool, ffn_stream, mb, layer, h, moe_block)
                x[mb.index] = g.transfer("f2a", f2a, bytes=mb.tokens.ceil_div(attn_pool.dp) * hidden_bytes, after=h)
        for mb in st.micro_batches:
            lm_head(g, attn_pool, attn, mb, x[mb.index])


@workflow("af_pingpong", "Attention/FFN disaggregation: m ping-pong micro-batches overlap one micro-batch's "
          "FFN with the next one's attention; A2F and F2A transfers.", params={"micro_batches": MICRO_BATCHES})
def af_pingpong(g: Builder, micro_batches: int) -> None:
    af_stages(g, micro_batches)
