"""Expert-parallel MoE: each EP rank holds a slice of the experts.

Per MoE layer: the router scores experts, a dispatch all-to-all sends every token
to the ranks of its top-k experts, each rank runs its experts on the tokens it
received (one node per rank, weighted by that rank's routed tokens), a barrier
waits for the slowest rank, and a combine all-to-all brings the results back.
Routing is drawn per layer and per iteration from ``routing`` (uniform, a power
law with exponent ``alpha``, or recorded expert ids); ``redundant_experts``
replicates the hottest experts across ranks (EPLB).

``ep_moe_block`` is the reusable piece: ``pd_ep_moe`` and ``af_ep_moe`` plug it
into other strategies.
"""

from frontier_dag.dsl import Builder, Param, workflow
from frontier_dag.workflows.layers import ACTIVATION_BYTES, decoder, router, shared_experts

ROUTING = Param(dict, {"kind": "uniform"}, "expert routing: {kind: uniform|power_law|trace, alpha, path, "
                "redundant_experts}")


def ep_moe_block(impl: str = "deepep_normal"):
    """An expert-parallel MoE layer, with all-to-alls implemented by ``impl``
    (``deepep_normal`` for throughput-bound prefill, ``deepep_ll`` for latency-bound decode)."""

    def block(g: Builder, pool, on, mb, layer, after):
        moe, hidden = g.model.moe, g.model.hidden_size
        ranks = g.ep_ranks(pool.role)
        x = router(g, pool, on, mb, after)
        x = shared_experts(g, pool, on, mb, x)
        # each GPU sends its share of the tokens, top_k copies, to the experts' ranks
        per_gpu = mb.tokens.ceil_div(pool.gpus_per_replica) * moe.top_k * hidden
        dispatch_bytes = 1 if (g.model.moe_dtype or g.model.dtype).startswith("fp8") else ACTIVATION_BYTES
        placement = pool.placement(pool.ep)
        x = g.collective("dispatch", on, "all_to_all", bytes=per_gpu * dispatch_bytes, group=pool.ep,
                         placement=placement, impl=impl, after=x)
        experts = [
            g.compute("experts", rank, "moe_grouped_gemm", routing=(mb, layer, r), after=x,
                      num_tokens=mb.tokens, hidden=hidden, inter=moe.expert_intermediate_size // pool.config.moe_tp,
                      num_experts=moe.num_experts, topk=moe.top_k, ep=pool.ep, moe_tp=pool.config.moe_tp,
                      dtype=g.model.moe_dtype or g.model.dtype)
            for r, rank in enumerate(ranks)
        ]
        x = g.sync("ep_barrier", on, after=experts)
        return g.collective("combine", on, "all_to_all", bytes=per_gpu * ACTIVATION_BYTES, group=pool.ep,
                            placement=placement, impl=impl, after=x)

    return block


@workflow("ep_moe", "One pool serves prefill and decode; MoE layers run expert parallel (dispatch, one "
          "expert node per EP rank, barrier on the slowest rank, combine).", params={"routing": ROUTING})
def ep_moe(g: Builder, routing: dict) -> None:
    pool = g.pool("colocated")
    g.expert_routing(routing)
    stream = g.stream("colocated")
    with g.stage("colocated", pools=["colocated"], serves="both") as st:
        decoder(g, pool, stream, st.mb, moe_block=ep_moe_block("deepep_normal"))
