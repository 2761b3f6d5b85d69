"""An attention op written with g.compute, missing the columns its family is priced on."""

from frontier_dag.dsl import Builder, workflow


@workflow("compute_missing_columns", "g.compute without num_kv_heads, dtype and kv_dtype.")
def compute_missing_columns(g: Builder) -> None:
    gpu, m = g.stream("colocated"), g.model
    with g.stage("colocated", pools=["colocated"]) as st:
        g.compute("attention", gpu, "attention", batch=st.mb, num_heads=m.num_heads, head_dim=m.head_dim)  # <- mistake
