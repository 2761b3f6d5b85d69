"""A projection that names the op it waits for instead of passing it."""

from frontier_dag.dsl import Builder, workflow


@workflow("after_a_name", "after= given the name of an op.")
def after_a_name(g: Builder) -> None:
    gpu, hidden = g.stream("colocated"), g.model.hidden_size
    with g.stage("colocated", pools=["colocated"]) as st:
        g.gemm("qkv_proj", gpu, m=st.mb.tokens, n=3 * hidden, k=hidden)
        g.gemm("o_proj", gpu, m=st.mb.tokens, n=hidden, k=hidden, after="qkv_proj")  # <- mistake
