"""AF ping-pong whose FFN pool runs expert-parallel MoE: in every MoE layer each
micro-batch's tokens are dispatched to the FFN pool's EP ranks. A composition of
``af_pingpong`` and ``ep_moe``."""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.af_pingpong import MICRO_BATCHES, af_stages
from frontier_dag.workflows.ep_moe import ROUTING, ep_moe_block


@workflow("af_ep_moe", "AF ping-pong whose FFN pool runs expert-parallel MoE.",
          params={"micro_batches": MICRO_BATCHES, "routing": ROUTING})
def af_ep_moe(g: Builder, micro_batches: int, routing: dict) -> None:
    g.expert_routing(routing)
    af_stages(g, micro_batches, moe_block=ep_moe_block("deepep_ll"))
