"""PD whose pools run expert-parallel MoE: the decode pool (and the prefill pool when
its ``ep`` > 1) dispatches tokens to EP ranks in every MoE layer. A composition of
``pd`` and ``ep_moe``."""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.ep_moe import ROUTING, ep_moe_block
from frontier_dag.workflows.pd import KV_TRANSFER, pd_stages


@workflow("pd_ep_moe", "PD disaggregation whose decode pool (and prefill pool, if ep > 1) runs expert-parallel "
          "MoE.", params={"kv_transfer": KV_TRANSFER, "routing": ROUTING})
def pd_ep_moe(g: Builder, kv_transfer: str, routing: dict) -> None:
    g.expert_routing(routing)
    pd_stages(g, kv_transfer, decode_moe=ep_moe_block("deepep_ll"))
