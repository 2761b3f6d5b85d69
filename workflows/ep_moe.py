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

from frontier_dag.cost.queries import WIDEEP_FAMILY_OF_IMPL
from frontier_dag.dsl import Builder, Param, workflow
from frontier_dag.workflows.layers import (
    ACTIVATION_BYTES,
    all_reduce_impl,
    decoder,
    embed,
    lm_head,
    router,
    shared_experts,
)

ROUTING = Param(dict, {"kind": "uniform"}, "expert routing: {kind: uniform|power_law|trace, alpha, path, "
                "redundant_experts}")


def deepep(g: Builder, pool, on, mb, phase: str, impl: str, after):
    """DeepEP's ``phase`` ("dispatch" or "combine") of micro-batch ``mb`` on stream ``on``:
    each GPU sends its share of the tokens, top_k copies, to the experts' ranks (DeepEP
    dispatches FP8 and combines BF16: frontier_dag.cost.queries.DEEPEP_WIDTH)."""
    moe = g.model.moe
    return g.compute(phase, on, f"deepep_{phase}", kind="collective", after=after,
                     num_tokens=mb.tokens.ceil_div(pool.gpus_per_stage), hidden=g.model.hidden_size,
                     topk=moe.top_k, num_experts=moe.num_experts, group_size=pool.ep,
                     placement=pool.placement(pool.ep), impl=impl)


def ep_moe_block(impl: str = "deepep_normal"):
    """An expert-parallel MoE layer, with all-to-alls implemented by ``impl``
    (``deepep_normal`` for throughput-bound prefill, ``deepep_ll`` for latency-bound decode).
    Its experts are the wide-EP kernels that run behind that DeepEP mode (priced from the
    tables that measure them where the system has them, else from the plain MoE tables)."""

    def block(g: Builder, pool, on, mb, layer, after):
        x = router(g, pool, on, mb, after)
        x = shared_experts(g, pool, on, mb, x, whole_per_gpu=True)
        x = deepep(g, pool, on, mb, "dispatch", impl, after=x)
        x = expert_ranks(g, pool, on, mb, layer, x, family=WIDEEP_FAMILY_OF_IMPL[impl])
        return deepep(g, pool, on, mb, "combine", impl, after=x)

    return block


def expert_ranks(g: Builder, pool, on, mb, layer, after, family: str = "moe_grouped_gemm"):
    """One grouped-GEMM node per EP rank (of operator ``family``), weighted by the tokens
    routed to it, and the barrier on the slowest rank."""
    moe = g.model.moe
    with g.weights("experts"):
        experts = [
            g.compute("experts", rank, family, routing=(mb, layer, r), after=after,
                      num_tokens=mb.tokens, hidden=g.model.hidden_size,
                      inter=moe.expert_intermediate_size // pool.config.moe_tp, num_experts=moe.num_experts,
                      topk=moe.top_k, ep=pool.ep, moe_tp=pool.config.moe_tp, dtype=g.model.moe_dtype or g.model.dtype)
            for r, rank in enumerate(g.ep_ranks(pool.role))
        ]
    return g.sync("ep_barrier", on, after=experts)


def gather_moe_block(g: Builder, pool, on, mb, layer, after):
    """Expert parallelism as vLLM, SGLang and TensorRT-LLM run it by default on Hopper (no
    DeepEP): every GPU of the expert group sees all of the batch's tokens (with attention TP
    they are there after the attention all-reduce; with attention DP an all-gather brings the
    other DP ranks' tokens), each EP rank runs its experts on the tokens routed to them (one
    node per rank, a barrier on the slowest), and the partial outputs are summed: an
    all-reduce, or with attention DP a reduce-scatter back to the DP ranks."""
    hidden = g.model.hidden_size
    group = pool.gpus_per_stage
    placement = pool.placement(group)
    x = router(g, pool, on, mb, after)
    x = shared_experts(g, pool, on, mb, x)
    full = mb.tokens * hidden * ACTIVATION_BYTES
    if pool.dp > 1 and group > 1:
        x = g.collective("moe_all_gather", on, "all_gather", bytes=full, group=group, placement=placement, after=x)
    x = expert_ranks(g, pool, on, mb, layer, x)
    if group == 1:
        return x
    if pool.dp > 1:
        return g.collective("moe_reduce_scatter", on, "reduce_scatter", bytes=full, group=group, placement=placement,
                            after=x)
    return g.collective("moe_all_reduce", on, "all_reduce", bytes=full, group=group, placement=placement,
                        impl=all_reduce_impl(g), after=x)


#: Two-batch overlap's micro-batches (the parameter of ``two_batch_overlap.py``, declared here
#: so that this module does not import the one that builds on it).
TBO_MICRO_BATCHES = Param(int, 1, "two-batch overlap: micro-batches whose dispatch and combine overlap one another's "
                          "compute (1: none, the plain iteration; 2: SGLang's and DeepSeek's TBO)", minimum=1)

#: How expert-parallel MoE layers of the co-located and PD workflows exchange tokens.
EP_COMM = Param(str, "all_to_all", "expert-parallel token exchange: all_to_all (DeepEP dispatch and combine) or "
                "gather (every GPU gets all tokens, an all-reduce or reduce-scatter sums the experts' outputs: "
                "the default of vLLM, SGLang and TensorRT-LLM on Hopper)", choices=("all_to_all", "gather"))


@workflow("ep_moe", "One pool serves prefill and decode; MoE layers run expert parallel (dispatch, one "
          "expert node per EP rank, barrier on the slowest rank, combine), optionally with two-batch overlap.",
          params={"routing": ROUTING, "micro_batches": TBO_MICRO_BATCHES})
def ep_moe(g: Builder, routing: dict, micro_batches: int) -> None:
    from frontier_dag.workflows.two_batch_overlap import tbo_layers  # it builds on this module

    pool = g.pool("colocated")
    g.expert_routing(routing)
    stream = g.stream("colocated")
    with g.stage("colocated", pools=["colocated"], micro_batches=micro_batches, serves="both") as st:
        if micro_batches == 1:
            decoder(g, pool, stream, st.mb, moe_block=ep_moe_block("deepep_normal"))
            return
        # two-batch overlap: one micro-batch's dispatch and combine under the other's compute
        x = tbo_layers(g, pool, st.micro_batches, {mb.index: embed(g, pool, stream, mb) for mb in st.micro_batches},
                       "deepep_normal")
        for mb in st.micro_batches:
            lm_head(g, pool, stream, mb, x[mb.index])
