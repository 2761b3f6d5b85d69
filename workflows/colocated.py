"""Co-located serving: one pool runs prefill and decode in the same iterations.

With chunked prefill the scheduler mixes prefill chunks and decode steps in one
batch; attention then sees a mixed batch. Attention and dense layers are split by
tensor parallelism (an all-reduce after attention and after the FFN); with
attention data parallelism each DP rank attends to its own share of sequences.
MoE layers split every expert by TP, or run expert parallel when the pool's
``ep`` > 1 (with uniform routing; the ``ep_moe`` workflow chooses the routing),
exchanging tokens by all-to-all (``ep_comm: all_to_all``) or by gathering them on every
GPU and summing the experts' outputs (``ep_comm: gather``, the engines' default on Hopper).
"""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.ep_moe import EP_COMM, gather_moe_block
from frontier_dag.workflows.layers import ALL_REDUCE, decoder, use_all_reduce


@workflow("colocated", "One pool serves prefill and decode in the same iterations (chunked prefill), "
          "with TP all-reduces and attention data parallelism.", params={"ep_comm": EP_COMM, "all_reduce": ALL_REDUCE})
def colocated(g: Builder, ep_comm: str, all_reduce: str) -> None:
    use_all_reduce(g, all_reduce)
    pool = g.pool("colocated")
    stream = g.stream("colocated")
    block = gather_moe_block if ep_comm == "gather" and pool.ep > 1 else None
    with g.stage("colocated", pools=["colocated"], serves="both") as st:
        decoder(g, pool, stream, st.mb, moe_block=block)
