"""The tracer with a pipelined pool: each layer's ops land on its stage's streams, the
activations cross between stages as transfers over the stages' link, and a workflow that
would send them backwards is an error naming the op."""

from __future__ import annotations

import pytest

from frontier_dag.config.run import resolve
from frontier_dag.dsl import WorkflowDef, trace
from frontier_dag.errors import WorkflowError
from frontier_dag.workflows.layers import embed, lm_head
from tests.conftest import TINY_DENSE, TINY_MOE, make_config, traced

FOUR_LAYERS = {**TINY_DENSE, "name": "tiny-dense-4", "num_layers": 4}


def _ops(graph, op):
    return [(n, a) for n, a in graph.graph.nodes(data=True) if a["op"] == op]


def test_layers_run_on_their_stages_and_activations_cross_once_per_boundary():
    _, graph = traced(FOUR_LAYERS, {"main": {"role": "colocated", "gpus": 4, "tp": 2, "pp": 2}}, "colocated")
    for _, a in graph.graph.nodes(data=True):
        resource = graph.resources[a["resource"]]
        if a["layer"] is not None and resource.kind == "gpu":
            assert resource.pp_stage == (0 if a["layer"] < 2 else 1), (a["op"], a["layer"], resource.name)
    sends = _ops(graph, "pp_send")
    assert len(sends) == 1
    link = graph.resources[sends[0][1]["resource"]]
    assert link.name == "link:colocated.pp[0]->colocated.pp[1]" and link.pipeline_link
    # each TP rank sends its slice; the next stage's TP group gathers the hidden states and residual
    (gather_node, gather), = _ops(graph, "pp_all_gather")
    assert graph.templates[gather["template"]].field("group_size") == 2
    assert graph.resources[gather["resource"]].pp_stage == 1
    assert "colocated" not in graph.resources  # a pipelined pool runs on its stages' streams only
    (head, _), = _ops(graph, "lm_head")
    assert graph.resources[graph.graph.nodes[head]["resource"]].pp_stage == 1
    parts = graph.pipeline_stages("colocated")
    assert len(parts) == 2 and sends[0][0] in parts[1] and gather_node in parts[1]


def test_the_link_between_stages_is_nvlink_within_a_node_and_the_network_across():
    deployment, graph = traced("llama-3.1-70b", {"main": {"role": "colocated", "gpus": 16, "tp": 4, "pp": 4}},
                               "colocated")
    placements = {graph.resources[a["resource"]].pp_stage: graph.templates[a["template"]].field("placement")
                  for _, a in _ops(graph, "pp_send")}
    # stages of 4 GPUs: 0 and 1 share the first node, 2 and 3 the second
    assert placements == {1: "intra_node", 2: "inter_node", 3: "intra_node"}


def test_ep_moe_within_a_stage_sizes_its_experts_by_the_stages_gpus():
    _, graph = traced(TINY_MOE, {"main": {"role": "colocated", "gpus": 4, "ep": 2, "pp": 2}}, "ep_moe")
    ranks = {r.name for r in graph.resources.values() if r.rank is not None}
    assert ranks == {"colocated.pp[1].ep_rank[0]", "colocated.pp[1].ep_rank[1]"}  # layer 1, the MoE one, on stage 1


def test_a_workflow_that_sends_activations_backwards_is_an_error():
    def backwards(g):
        pool, gpu = g.pool("colocated"), g.stream("colocated")
        with g.stage("colocated", pools=["colocated"]) as st:
            x = embed(g, pool, gpu, st.mb)
            for _ in g.layers():
                x = g.elementwise("norm", gpu, kind="rmsnorm", tokens=st.mb.tokens, hidden=8, after=x)
            x = lm_head(g, pool, gpu, st.mb, x)
            with g.scope(layer=0):
                g.elementwise("late_norm", gpu, kind="rmsnorm", tokens=st.mb.tokens, hidden=8, after=x)

    deployment = resolve(make_config(FOUR_LAYERS, {"main": {"role": "colocated", "gpus": 2, "pp": 2}}, "colocated"))
    with pytest.raises(WorkflowError, match="activations only flow forward through the stages"):
        trace(WorkflowDef("backwards", "test", backwards), deployment)
