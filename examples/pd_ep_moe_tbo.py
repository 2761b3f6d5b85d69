"""A new strategy written from docs/dsl.md: PD with expert-parallel MoE whose decode pool
runs two-batch overlap (TBO), as SGLang runs DeepSeek decode. The decode batch splits
into micro-batches; in every MoE layer one micro-batch's dispatch and combine all-to-alls
run on the pool's communication stream while another micro-batch computes on the same
GPUs. Compute on those GPUs still runs one kernel at a time, and the all-to-all kernels
hold a share of the SMs while they run (docs/dsl.md, "Streams share their GPUs"), so
what overlaps is communication, not compute.

    frontier-dag critical-path examples/pd_ep_moe_tbo.yaml
    frontier-dag critical-path examples/pd_ep_moe_tbo.yaml --set workflow.params.micro_batches=1
"""

from frontier_dag.dsl import Builder, Param, workflow
from frontier_dag.workflows.ep_moe import ROUTING, ep_moe_block, expert_ranks
from frontier_dag.workflows.layers import (
    ACTIVATION_BYTES,
    attention,
    embed,
    ffn,
    lm_head,
    rank_tokens,
    router,
    shared_experts,
)
from frontier_dag.workflows.pd import prefill_and_transfer

MICRO_BATCHES = Param(int, 2, "decode micro-batches that overlap one another's all-to-alls (1: none)", minimum=1)


@workflow("pd_ep_moe_tbo", "PD + expert-parallel MoE; the decode pool overlaps one micro-batch's dispatch and "
          "combine (on a communication stream) with another's compute (two-batch overlap).",
          params={"micro_batches": MICRO_BATCHES, "routing": ROUTING})
def pd_ep_moe_tbo(g: Builder, micro_batches: int, routing: dict) -> None:
    g.expert_routing(routing)
    # the prefill pool and the KV transfer, as the built-in PD strategies have them
    kv = prefill_and_transfer(g, "decode", moe_block=ep_moe_block("deepep_normal"))

    decode = g.pool("decode")
    gpu, comm = g.stream("decode"), g.stream("decode", "comm")  # two timelines on the same GPUs
    moe, hidden = g.model.moe, g.model.hidden_size
    placement = decode.placement(decode.ep)
    dispatch_bytes = 1 if (g.model.moe_dtype or g.model.dtype).startswith("fp8") else ACTIVATION_BYTES

    def all_to_all(name, mb, per_element, after):
        tokens_per_gpu = mb.tokens.ceil_div(decode.gpus_per_stage)
        return g.collective(name, comm, "all_to_all", bytes=tokens_per_gpu * moe.top_k * hidden * per_element,
                            group=decode.ep, placement=placement, impl="deepep_ll", after=after)

    with g.stage("decode", pools=["decode"], micro_batches=micro_batches, serves="decode") as st:
        x = {mb.index: embed(g, decode, gpu, mb, after=kv) for mb in st.micro_batches}
        for layer in g.layers():
            if not g.model.is_moe_layer(layer):  # DeepSeek's first dense layers: nothing to overlap
                for mb in st.micro_batches:
                    x[mb.index] = ffn(g, decode, gpu, mb, layer, attention(g, decode, gpu, mb, x[mb.index]))
                continue
            # Software pipelining. Issue every micro-batch's attention, routing and shared
            # experts, each followed by its dispatch on the comm stream: micro-batch 0's
            # dispatch runs while micro-batch 1's attention computes.
            sent, shared = {}, {}
            for mb in st.micro_batches:
                h = attention(g, decode, gpu, mb, x[mb.index])
                h = g.elementwise("post_attention_norm", gpu, kind="rmsnorm", tokens=rank_tokens(decode, mb),
                                  hidden=hidden, after=h)
                h = router(g, decode, gpu, mb, h)
                shared[mb.index] = shared_experts(g, decode, gpu, mb, h)
                sent[mb.index] = all_to_all("dispatch", mb, dispatch_bytes, after=h)
            # Then every micro-batch's routed experts (one op per EP rank, the barrier on the
            # comm stream so that it does not hold the compute stream) and its combine:
            # micro-batch 0's combine runs while micro-batch 1's experts compute, and
            # micro-batch 1's combine while micro-batch 0 starts the next layer.
            for mb in st.micro_batches:
                routed = expert_ranks(g, decode, comm, mb, layer, sent[mb.index])
                combined = all_to_all("combine", mb, ACTIVATION_BYTES, after=routed)
                x[mb.index] = [combined, shared[mb.index]]
        for mb in st.micro_batches:
            lm_head(g, decode, gpu, mb, x[mb.index])
