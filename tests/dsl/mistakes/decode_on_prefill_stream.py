"""PD where the decode stage samples on the prefill pool's stream."""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.layers import attention, embed, ffn, kv_bytes_per_token, lm_head


@workflow("decode_on_prefill_stream", "PD whose decode stage runs its lm_head on the prefill pool.")
def decode_on_prefill_stream(g: Builder) -> None:
    prefill, decode = g.pool("prefill"), g.pool("decode")
    p_gpu, d_gpu, link = g.stream("prefill"), g.stream("decode"), g.link("prefill", "decode")
    with g.stage("prefill", pools=["prefill"], serves="prefill") as st:
        x = embed(g, prefill, p_gpu, st.mb)
        for layer in g.layers():
            x = ffn(g, prefill, p_gpu, st.mb, layer, attention(g, prefill, p_gpu, st.mb, x, layer))
        done = lm_head(g, prefill, p_gpu, st.mb, x)
    with g.stage("kv_transfer", pools=["prefill", "decode"], serves="transfer") as st:
        kv = g.transfer("kv_cache", link, bytes=st.mb.kv_tokens * kv_bytes_per_token(g, prefill), after=done)
    with g.stage("decode", pools=["prefill", "decode"], serves="decode") as st:
        x = embed(g, decode, d_gpu, st.mb, after=kv)
        for layer in g.layers():
            x = ffn(g, decode, d_gpu, st.mb, layer, attention(g, decode, d_gpu, st.mb, x, layer))
        lm_head(g, decode, p_gpu, st.mb, x)  # <- mistake
