"""The stage names the pool by its key in the config (`main`) instead of its role."""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.layers import decoder


@workflow("stage_names_a_pool", "g.stage(pools=[...]) given a pool's name.")
def stage_names_a_pool(g: Builder) -> None:
    pool = g.pool("colocated")
    with g.stage("colocated", pools=["main"]) as st:  # <- mistake
        decoder(g, pool, g.stream("colocated"), st.mb)
