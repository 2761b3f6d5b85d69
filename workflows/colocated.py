"""Co-located serving: one pool runs prefill and decode in the same iterations.

With chunked prefill the scheduler mixes prefill chunks and decode steps in one
batch; attention then sees a mixed batch. Attention and dense layers are split by
tensor parallelism (an all-reduce after attention and after the FFN); with
attention data parallelism each DP rank attends to its own share of sequences.
MoE layers split every expert by TP, or run expert parallel when the pool's
``ep`` > 1 (with uniform routing; the ``ep_moe`` workflow chooses the routing).
"""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.layers import decoder


@workflow("colocated", "One pool serves prefill and decode in the same iterations (chunked prefill), "
          "with TP all-reduces and attention data parallelism.")
def colocated(g: Builder) -> None:
    pool = g.pool("colocated")
    stream = g.stream("colocated")
    with g.stage("colocated", pools=["colocated"], serves="both") as st:
        decoder(g, pool, stream, st.mb)
