"""Prefill/decode disaggregation: a prefill pool and a decode pool.

A prefill iteration computes the prompts' KV cache; the KV then moves to the
decode pool over a link of finite bandwidth, either per request once its prefill
completes (``kv_transfer: per_request``), or layer by layer while the prefill is
still computing (``per_layer``: each layer's KV leaves right after that layer's
attention, overlapping the transfer with the remaining layers). A decode
iteration then generates one token for every sequence in the decode batch.

``pd_stages`` is the reusable piece: ``pd_ep_moe`` passes an expert-parallel MoE
block for the pools.
"""

from frontier_dag.dsl import Builder, Op, Param, workflow
from frontier_dag.workflows.ep_moe import EP_COMM, gather_moe_block
from frontier_dag.workflows.layers import (
    ALL_REDUCE,
    MoEBlock,
    attention,
    embed,
    ffn,
    kv_bytes_per_token,
    lm_head,
    moe_block_for,
    use_all_reduce,
)

KV_TRANSFER = Param(str, "per_request", "when KV moves to the decode pool: per_request (after the prefill) or "
                    "per_layer (overlapped with the prefill)", choices=("per_request", "per_layer"))


def pd_stages(g: Builder, kv_transfer: str, prefill_moe: MoEBlock | None = None, decode_moe: MoEBlock | None = None) -> None:
    decode = g.pool("decode")
    decode_moe = decode_moe or moe_block_for(decode, "deepep_ll")
    g.stream("prefill")  # declared in the order the DAG has always had: prefill, decode, the link
    decode_stream = g.stream("decode")
    arrived = prefill_stages(g, kv_transfer, prefill_moe)

    with g.stage("decode", pools=["decode"], serves="decode") as st:
        # a request decodes once its KV has arrived and its prefill sampled the first token
        # (per_layer: the last layer's KV can arrive before the prefill's lm_head is done)
        x = embed(g, decode, decode_stream, st.mb, after=arrived)
        for layer in g.layers():
            x = attention(g, decode, decode_stream, st.mb, x, layer)
            x = ffn(g, decode, decode_stream, st.mb, layer, x, decode_moe)
        lm_head(g, decode, decode_stream, st.mb, x)


def prefill_stages(g: Builder, kv_transfer: str, prefill_moe: MoEBlock | None = None) -> list[Op]:
    """The prefill stage and the KV transfer to the decode pool (its own stage, or per layer
    inside the prefill); returns what a decode stage waits for: the KV and the first token."""
    prefill = g.pool("prefill")
    prefill_moe = prefill_moe or moe_block_for(prefill, "deepep_normal")
    prefill_stream = g.stream("prefill")
    link = g.link("prefill", "decode")

    with g.stage("prefill", pools=["prefill"], serves="prefill") as st:
        mb = st.mb
        x = embed(g, prefill, prefill_stream, mb)
        for layer in g.layers():
            x = attention(g, prefill, prefill_stream, mb, x, layer)
            if kv_transfer == "per_layer":
                # this layer's new KV leaves now; the link serialises layers, compute goes on
                sent = g.transfer("kv_layer", link, bytes=mb.tokens * kv_bytes_per_token(g, prefill, layers=1), after=x)
            x = ffn(g, prefill, prefill_stream, mb, layer, x, prefill_moe)
        done = lm_head(g, prefill, prefill_stream, mb, x)

    if kv_transfer == "per_request":
        with g.stage("kv_transfer", pools=["prefill", "decode"], serves="transfer") as st:
            sent = g.transfer("kv_cache", link, bytes=st.mb.kv_tokens * kv_bytes_per_token(g, prefill), after=done)
    return [sent, done]


def prefill_and_transfer(g: Builder, dst: str, moe_block: MoEBlock | None = None) -> Op:
    """A prefill stage on the prefill pool and a stage that moves each finished request's KV
    to the pool with role ``dst``; returns the transfer, which a decode stage waits for.
    ``af_pingpong`` puts this in front of its attention/FFN decode."""
    prefill = g.pool("prefill")
    stream, link = g.stream("prefill"), g.link("prefill", dst)
    moe_block = moe_block or moe_block_for(prefill, "deepep_normal")
    with g.stage("prefill", pools=["prefill"], serves="prefill") as st:
        x = embed(g, prefill, stream, st.mb)
        for layer in g.layers():
            x = attention(g, prefill, stream, st.mb, x, layer)
            x = ffn(g, prefill, stream, st.mb, layer, x, moe_block)
        done = lm_head(g, prefill, stream, st.mb, x)
    with g.stage("kv_transfer", pools=["prefill", dst], serves="transfer") as st:
        return g.transfer("kv_cache", link, bytes=st.mb.kv_tokens * kv_bytes_per_token(g, prefill), after=done)


@workflow("pd", "Prefill/decode disaggregation: prefill iteration, KV transfer to the decode pool (per request "
          "or per layer), decode iteration.", params={"kv_transfer": KV_TRANSFER, "ep_comm": EP_COMM,
                                                              "all_reduce": ALL_REDUCE})
def pd(g: Builder, kv_transfer: str, ep_comm: str, all_reduce: str) -> None:
    use_all_reduce(g, all_reduce)
    if ep_comm == "gather":
        pd_stages(g, kv_transfer, _gather_where_ep(g.pool("prefill")), _gather_where_ep(g.pool("decode")))
    else:
        pd_stages(g, kv_transfer)


def _gather_where_ep(pool) -> MoEBlock | None:
    return gather_moe_block if pool.ep > 1 else None
