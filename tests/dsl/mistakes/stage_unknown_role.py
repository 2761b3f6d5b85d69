"""The stage names a role that does not exist."""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.layers import decoder


@workflow("stage_unknown_role", "g.stage(pools=[...]) given a misspelt role.")
def stage_unknown_role(g: Builder) -> None:
    pool = g.pool("colocated")
    with g.stage("colocated", pools=["colocate"]) as st:  # <- mistake
        decoder(g, pool, g.stream("colocated"), st.mb)
