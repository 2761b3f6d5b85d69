"""A mixed pool: the decode pool also prefills short prompts, beside a prefill pool.

Splitwise's mixed pool and DistServe's local prefill. A request whose prompt is short is
prefilled on the decode pool itself, in the same iterations as its decodes (chunked
prefill, as co-located serving does), and its KV never moves; a longer prompt is
prefilled on the prefill pool, and its KV moves to the decode pool as in PD. Where a new
request enters is the strategy's entry rule (``g.entry``): by prompt length, at
``threshold`` tokens (the config's ``cluster.entry`` may name another rule).
"""

from frontier_dag.dsl import Builder, Param, workflow
from frontier_dag.workflows.layers import decoder
from frontier_dag.workflows.pd import prefill_and_transfer

THRESHOLD = Param(int, 1024, "prompt tokens from which a request is prefilled on the prefill pool (shorter prompts are "
                  "prefilled on the decode pool)", minimum=1)


@workflow("hybrid_pd", "A decode pool that also prefills short prompts beside a prefill pool (Splitwise's mixed pool, "
          "DistServe's local prefill): requests enter by prompt length.", params={"threshold": THRESHOLD})
def hybrid_pd(g: Builder, threshold: int) -> None:
    decode = g.pool("decode")
    # long prompts: prefilled on the prefill pool, their KV moved to the decode pool
    sent = prefill_and_transfer(g, "decode")
    # the decode pool's iterations mix its own prompts' chunks with every request's decode step
    with g.stage("decode", pools=["decode"], serves="both") as st:
        decoder(g, decode, g.stream("decode"), st.mb, after=sent)
    g.entry(pools=["decode", "prefill"], rule="by_prompt_length", params={"threshold": threshold})
