"""PD whose pools run expert-parallel MoE: the decode pool (and the prefill pool when
its ``ep`` > 1) dispatches tokens to EP ranks in every MoE layer. A composition of
``pd`` and ``ep_moe``.

Two options of large-scale DeepSeek deployments apply to the decode pool:
``micro_batches: 2`` runs two-batch overlap (``two_batch_overlap.py``: one micro-batch's
dispatch and combine overlap the other's compute), and ``mtp`` multi-token prediction
(``speculative.py``: each iteration verifies the draft tokens and drafts the next).
With neither, the decode stage is ``pd``'s.
"""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.ep_moe import ROUTING, ep_moe_block
from frontier_dag.workflows.layers import decoder, embed, lm_head
from frontier_dag.workflows.pd import KV_TRANSFER, pd_stages, prefill_stages
from frontier_dag.workflows.speculative import MTP, Speculation, Verification, draft
from frontier_dag.workflows.two_batch_overlap import MICRO_BATCHES, tbo_layers


@workflow("pd_ep_moe", "PD disaggregation whose decode pool (and prefill pool, if ep > 1) runs expert-parallel "
          "MoE; the decode pool optionally with two-batch overlap and multi-token prediction.",
          params={"kv_transfer": KV_TRANSFER, "routing": ROUTING, "micro_batches": MICRO_BATCHES, "mtp": MTP})
def pd_ep_moe(g: Builder, kv_transfer: str, routing: dict, micro_batches: int, mtp: dict) -> None:
    g.expert_routing(routing)
    speculation = Speculation.parse(mtp)
    moe_block = ep_moe_block("deepep_ll")
    if micro_batches == 1 and speculation is None:
        pd_stages(g, kv_transfer, decode_moe=moe_block)
        return
    arrived = prefill_stages(g, kv_transfer)
    decode, stream = g.pool("decode"), g.stream("decode")
    with g.stage("decode", pools=["decode"], micro_batches=micro_batches, serves="decode") as st:
        # with MTP every op of the target model runs the verified tokens: 1 + d per sequence
        if speculation is not None:
            g.speculate(speculation.queries_per_seq, speculation.tokens_per_step)
            batches = [Verification(mb, speculation.queries_per_seq) for mb in st.micro_batches]
        else:
            batches = st.micro_batches
        if micro_batches == 1:
            done = {0: decoder(g, decode, stream, batches[0], after=arrived, moe_block=moe_block)}
        else:
            x = tbo_layers(g, decode, batches, {mb.index: embed(g, decode, stream, mb, after=arrived)
                                                for mb in batches}, "deepep_ll")
            done = {mb.index: lm_head(g, decode, stream, mb, x[mb.index]) for mb in batches}
        if speculation is not None:
            for mb, verified in zip(st.micro_batches, batches, strict=True):
                draft(g, decode, stream, mb, verified, done[mb.index], speculation, moe_block)
