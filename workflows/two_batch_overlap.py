"""Two-batch overlap (TBO), as SGLang and DeepSeek run expert-parallel MoE.

A stage's batch splits into micro-batches; in every MoE layer one micro-batch's dispatch
and combine all-to-alls run on the pool's communication stream while another micro-batch
computes on the same GPUs. Compute on those GPUs still runs one kernel at a time, and the
all-to-all kernels hold a share of the SMs while they overlap compute
(``cluster.comm_sms``, docs/dsl.md "Streams share their GPUs"), so what overlaps is
communication, not compute.

The issue order is software-pipelined per MoE layer. The compute stream sees attention 0,
attention 1, experts 0, experts 1, then the next layer's attention 0; dispatch 0 runs
under attention 1, dispatch 1 under experts 0, combine 0 under experts 1 and combine 1
under the next layer's attention 0. ``pd_ep_moe`` and ``ep_moe`` trace their stage with
``tbo_layers`` when ``micro_batches`` is 2 or more.
"""

from __future__ import annotations

from frontier_dag.cost.queries import WIDEEP_FAMILY_OF_IMPL
from frontier_dag.dsl import Builder, MicroBatch, Op, PoolView
from frontier_dag.workflows.ep_moe import TBO_MICRO_BATCHES, deepep, expert_ranks
from frontier_dag.workflows.layers import (
    attention,
    ffn,
    rank_tokens,
    router,
    shared_experts,
)

MICRO_BATCHES = TBO_MICRO_BATCHES


def tbo_layers(g: Builder, pool: PoolView, micro_batches: list[MicroBatch], x: dict[int, Op | list[Op]],
               impl: str) -> dict[int, Op | list[Op]]:
    """Every decoder layer of the micro-batches on ``pool``, the MoE layers' all-to-alls
    (implemented by ``impl``) on its communication stream. ``x`` maps each micro-batch's
    index to what its first layer waits for; returns what each one's last layer ends with."""
    gpu, comm = g.stream(pool.role), g.stream(pool.role, "comm")  # two timelines on the same GPUs
    hidden = g.model.hidden_size

    x = dict(x)
    for layer in g.layers():
        if not g.model.is_moe_layer(layer):  # DeepSeek's first dense layers: nothing to overlap
            for mb in micro_batches:
                x[mb.index] = ffn(g, pool, gpu, mb, layer, attention(g, pool, gpu, mb, x[mb.index]))
            continue
        # Issue every micro-batch's attention, routing and shared experts, each followed by
        # its dispatch on the comm stream: micro-batch 0's dispatch runs while micro-batch
        # 1's attention computes.
        sent, shared = {}, {}
        for mb in micro_batches:
            h = attention(g, pool, gpu, mb, x[mb.index])
            h = g.elementwise("post_attention_norm", gpu, kind="rmsnorm", tokens=rank_tokens(pool, mb),
                              hidden=hidden, after=h)
            h = router(g, pool, gpu, mb, h)
            shared[mb.index] = shared_experts(g, pool, gpu, mb, h, whole_per_gpu=True)
            sent[mb.index] = deepep(g, pool, comm, mb, "dispatch", impl, after=h)
        # Then every micro-batch's routed experts (one op per EP rank, the barrier on the
        # comm stream so that it does not hold the compute stream) and its combine:
        # micro-batch 0's combine runs while micro-batch 1's experts compute, and
        # micro-batch 1's combine while micro-batch 0 starts the next layer.
        for mb in micro_batches:
            routed = expert_ranks(g, pool, comm, mb, layer, sent[mb.index], family=WIDEEP_FAMILY_OF_IMPL[impl])
            combined = deepep(g, pool, comm, mb, "combine", impl, after=routed)
            x[mb.index] = [combined, shared[mb.index]]
    return x
