"""A new strategy, authored step by step in docs/dsl.md: prefill/decode disaggregation
whose decode is itself split into an attention pool and an FFN pool that ping-pong
micro-batches. Three stages: a prefill iteration, the KV transfer, an AF decode iteration.

    frontier-dag critical-path examples/pd_af_pingpong.yaml --set predictor.source=roofline
"""

from frontier_dag.dsl import Builder, Param, workflow
from frontier_dag.workflows.layers import (
    ACTIVATION_BYTES,
    attention,
    embed,
    ffn,
    kv_bytes_per_token,
    lm_head,
)

MICRO_BATCHES = Param(int, 2, "decode micro-batches in flight between the attention and FFN pools", minimum=1, maximum=64)


@workflow("pd_af_pingpong", "Prefill pool, KV transfer, and a decode that ping-pongs m micro-batches "
          "between an attention pool and an FFN pool.", params={"micro_batches": MICRO_BATCHES})
def pd_af_pingpong(g: Builder, micro_batches: int) -> None:
    # Step 1: the pools the strategy needs, and the resources that execute its ops.
    prefill, attn_pool, ffn_pool = g.pool("prefill"), g.pool("attention"), g.pool("ffn")
    prefill_gpu, attn_gpu, ffn_gpu = g.stream("prefill"), g.stream("attention"), g.stream("ffn")
    kv_link = g.link("prefill", "attention")  # the KV cache lives with the attention layers
    a2f, f2a = g.link("attention", "ffn"), g.link("ffn", "attention")
    hidden_bytes = g.model.hidden_size * ACTIVATION_BYTES

    # Step 2: a prefill iteration on the prefill pool, built from the blocks in workflows/layers.py.
    with g.stage("prefill", pools=["prefill"], serves="prefill") as st:
        x = embed(g, prefill, prefill_gpu, st.mb)
        for layer in g.layers():
            x = attention(g, prefill, prefill_gpu, st.mb, x)
            x = ffn(g, prefill, prefill_gpu, st.mb, layer, x)
        first_token = lm_head(g, prefill, prefill_gpu, st.mb, x)

    # Step 3: the finished prompts' KV moves to the attention pool; its size is symbolic in
    # the transfer stage's batch (kv_tokens), bound per iteration.
    with g.stage("kv_transfer", pools=["prefill", "attention"], serves="transfer") as st:
        kv = g.transfer("kv_cache", kv_link, bytes=st.mb.kv_tokens * kv_bytes_per_token(g, prefill),
                        after=first_token)

    # Step 4: decode. Each micro-batch goes attention -> A2F -> FFN -> F2A in every layer.
    # Ops on one stream run in program order, so micro-batch i+1's attention overlaps
    # micro-batch i's FFN without any explicit edge.
    with g.stage("decode", pools=["attention", "ffn"], micro_batches=micro_batches, serves="decode") as st:
        x = {mb.index: embed(g, attn_pool, attn_gpu, mb, after=kv) for mb in st.micro_batches}
        for layer in g.layers():
            for mb in st.micro_batches:
                activations = mb.tokens.ceil_div(attn_pool.dp) * hidden_bytes
                h = attention(g, attn_pool, attn_gpu, mb, x[mb.index])
                h = g.transfer("a2f", a2f, bytes=activations, after=h)
                h = ffn(g, ffn_pool, ffn_gpu, mb, layer, h)
                x[mb.index] = g.transfer("f2a", f2a, bytes=activations, after=h)
        for mb in st.micro_batches:
            lm_head(g, attn_pool, attn_gpu, mb, x[mb.index])
