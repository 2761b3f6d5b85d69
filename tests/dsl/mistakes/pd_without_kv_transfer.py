"""PD whose decode stage starts after the prefill's last op, but never moves the KV."""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.layers import decoder


@workflow("pd_without_kv_transfer", "PD without a KV transfer.")
def pd_without_kv_transfer(g: Builder) -> None:
    prefill, decode = g.pool("prefill"), g.pool("decode")
    with g.stage("prefill", pools=["prefill"], serves="prefill") as st:
        done = decoder(g, prefill, g.stream("prefill"), st.mb)
    with g.stage("decode", pools=["decode"], serves="decode") as st:  # <- mistake
        decoder(g, decode, g.stream("decode"), st.mb, after=done)
