"""One iteration of a config: representative batches, critical path, attribution, bubbles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frontier_dag.analysis.iteration import CATEGORIES, analyze_iteration, representative_loads
from frontier_dag.cost.protocol import RooflineCostModel

ROW_KEYS = {"node", "op", "resource", "layer", "micro_batch", "start_us", "duration_us"}
CASES = {
    "colocated": ("moe", {"m": {"role": "colocated", "gpus": 2, "tp": 2}}, "colocated", {}),
    "pd": ("dense", {"p": {"role": "prefill", "gpus": 1}, "d": {"role": "decode", "gpus": 2, "tp": 2}}, "pd", {}),
    "af_ep_moe": ("moe", {"a": {"role": "attention", "gpus": 2}, "f": {"role": "ffn", "gpus": 4, "ep": 4}},
                  "af_ep_moe", {"micro_batches": 3}),
    "af_after_prefill": ("dense", {"p": {"role": "prefill", "gpus": 1}, "a": {"role": "attention", "gpus": 1},
                                   "f": {"role": "ffn", "gpus": 1}}, "af_pingpong", {"micro_batches": 2}),
}


@pytest.fixture(params=sorted(CASES))
def analysed(request, trace_dict, tiny):
    model, pools, workflow, params = CASES[request.param]
    deployment, graph = trace_dict(tiny[model], pools, workflow, params)
    loads = representative_loads(graph, deployment, batch_size=16)
    return deployment, graph, loads, analyze_iteration(graph, deployment, RooflineCostModel(deployment.hardware), loads)


def test_representative_loads_fit_each_stage(analysed):
    deployment, graph, loads, _ = analysed
    sched = deployment.config.scheduler
    for name, stage in graph.stages.items():
        assert len(loads[name]) == stage.micro_batches
        q = np.concatenate([load.q for load in loads[name]])
        if stage.serves == "decode":
            assert (q == 1).all() and len(q) == 16
        elif stage.serves == "prefill":
            assert (q > 1).all() and q.sum() <= sched.max_num_batched_tokens
        elif stage.serves == "both":
            assert q.sum() <= sched.max_num_batched_tokens and (q == 1).sum() == 15
        if deployment.model.moe is not None and stage.serves != "transfer":
            for load in loads[name]:
                routed = load.q.sum() * deployment.model.moe.top_k * deployment.model.num_layers
                assert load.expert_loads.sum() == pytest.approx(routed, rel=0.1)


def test_critical_path_rows_and_attribution(analysed):
    _, graph, _, report = analysed
    assert report.iteration_time_us > 0
    assert report.critical_path and all(set(row) == ROW_KEYS for row in report.critical_path)
    last = report.critical_path[-1]
    assert last["start_us"] + last["duration_us"] == pytest.approx(report.iteration_time_us)
    starts = np.array([row["start_us"] for row in report.critical_path])
    assert (np.diff(starts) >= -1e-9 * report.iteration_time_us).all()  # up to rounding after zero-time syncs
    assert set(report.attribution) == set(CATEGORIES)
    assert sum(report.attribution.values()) == pytest.approx(1.0)
    assert all(0 <= share <= 1 for share in report.attribution.values())
    assert set(report.stage_times_us) == set(graph.stages)
    assert max(report.stage_times_us.values()) <= report.iteration_time_us + 1e-6
    json.dumps(report.to_json())  # plain JSON types only


def test_slack_is_zero_on_the_critical_path(analysed):
    *_, report = analysed
    assert np.abs(report.slack_us[report.path_positions]).max() <= 1e-6 * report.iteration_time_us
    assert (report.slack_us >= 0).all()


def test_bubbles_are_idle_fractions_of_gpu_streams(analysed):
    _, graph, _, report = analysed
    assert report.bubbles and all(0.0 <= b <= 1.0 for b in report.bubbles.values())
    assert all(graph.resources[r].kind == "gpu" for r in report.bubbles)


def test_attribution_follows_the_families(trace_dict, tiny, fake_cost_model):
    deployment, graph = trace_dict(tiny["dense"], {"m": {"role": "colocated", "gpus": 1}}, "colocated")
    cost = fake_cost_model(constant={"gemm": 3.0, "attention": 1.0})
    report = analyze_iteration(graph, deployment, cost, representative_loads(graph, deployment, batch_size=4))
    # per layer: qkv, o_proj, gate_up, down (4 GEMMs) and one attention; plus the lm_head
    layers = tiny["dense"]["num_layers"]
    total = layers * (4 * 3.0 + 1.0) + 3.0
    assert report.iteration_time_us == pytest.approx(total)
    assert report.attribution["dense_gemm"] == pytest.approx((layers * 12 + 3) / total)
    assert report.attribution["attention"] == pytest.approx(layers / total)


def test_bubbles_count_from_a_streams_first_op(trace_dict, tiny, fake_cost_model):
    """In PD the decode pool starts after the prefill and the transfer: its idle time before
    then is not a bubble; a chain of ops with no gaps has none."""
    pools = {"p": {"role": "prefill", "gpus": 1}, "d": {"role": "decode", "gpus": 1}}
    deployment, graph = trace_dict(tiny["dense"], pools, "pd")
    cost = fake_cost_model(constant={"gemm": 2.0, "elementwise": 1.0, "attention": 1.0, "p2p": 5.0})
    report = analyze_iteration(graph, deployment, cost, representative_loads(graph, deployment, batch_size=4))
    assert report.bubbles == {"decode": pytest.approx(0.0), "prefill": pytest.approx(0.0)}
    # the AF attention pool idles while a micro-batch is in the FFN pool
    pools = {"a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 1}}
    deployment, graph = trace_dict(tiny["dense"], pools, "af_pingpong", {"micro_batches": 1})
    report = analyze_iteration(graph, deployment, cost, representative_loads(graph, deployment, batch_size=4))
    assert 0.3 < report.bubbles["attention"] < 1.0 and 0.3 < report.bubbles["ffn"] < 1.0


def test_expert_routing_covers_the_stages_ep_ranks_whatever_the_pool_order(config_dict, tiny):
    """A stage that lists its FFN pool first still draws loads for the FFN pool's EP ranks."""
    from frontier_dag.config.run import resolve
    from frontier_dag.dsl import WorkflowDef, trace
    from frontier_dag.workflows.ep_moe import ep_moe_block
    from frontier_dag.workflows.layers import attention, embed, ffn, lm_head

    def ffn_first(g):
        attn_pool, ffn_pool = g.pool("attention"), g.pool("ffn")
        attn, ffn_stream = g.stream("attention"), g.stream("ffn")
        with g.stage("af", pools=["ffn", "attention"]) as st:
            x = embed(g, attn_pool, attn, st.mb)
            for layer in g.layers():
                x = attention(g, attn_pool, attn, st.mb, x)
                x = ffn(g, ffn_pool, ffn_stream, st.mb, layer, x, ep_moe_block())
            lm_head(g, attn_pool, attn, st.mb, x)

    pools = {"a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 4, "ep": 4}}
    deployment = resolve(config_dict(tiny["moe"], pools, "colocated"))
    graph = trace(WorkflowDef("ffn_first", "test", ffn_first), deployment)
    loads = representative_loads(graph, deployment, batch_size=8)
    assert loads["af"][0].expert_loads.shape[1] == 4
    assert analyze_iteration(graph, deployment, RooflineCostModel(deployment.hardware), loads).iteration_time_us > 0


def test_af_after_a_prefill_pool_only_decodes(trace_dict, tiny):
    pools = {"p": {"role": "prefill", "gpus": 1}, "a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 1}}
    deployment, graph = trace_dict(tiny["dense"], pools, "af_pingpong", {"micro_batches": 2})
    assert {name: stage.serves for name, stage in graph.stages.items()} == {
        "prefill": "prefill", "kv_transfer": "transfer", "af": "decode"}
    report = analyze_iteration(graph, deployment, RooflineCostModel(deployment.hardware),
                               representative_loads(graph, deployment, batch_size=8))
    resources = [row["resource"] for row in report.critical_path]
    assert resources[0] == "prefill" and "link:prefill->attention" in resources


def test_prices_say_which_came_from_outside_the_profiled_range(trace_dict, tiny):
    """The iteration's price counts, as a run's summary gives them: per source, and those the
    model flags as outside its data per stage and family (here GEMMs of more than 8 rows)."""
    from frontier_dag.cost.protocol import Prediction
    from tests.conftest import FakeCostModel

    class FlagsLargeGemms(FakeCostModel):
        def predict(self, family, query):
            pred = super().predict(family, query)
            flagged = np.asarray(query["m"]) > 8 if family == "gemm" else np.zeros(len(pred.latency_us), dtype=bool)
            return Prediction(pred.latency_us, source="measured" if family == "gemm" else "estimated",
                              out_of_range=flagged)

    deployment, graph = trace_dict(tiny["dense"], {"p": {"role": "prefill", "gpus": 1}, "d": {"role": "decode", "gpus": 1}},
                                   "pd")
    cost = FlagsLargeGemms(constant={"gemm": 3.0, "attention": 1.0})
    report = analyze_iteration(graph, deployment, cost, representative_loads(graph, deployment, batch_size=4))
    prices = report.prices
    gemms = {a["op"] for _, a in graph.graph.nodes(data=True)
             if graph.templates[a["template"]].family == "gemm" and graph.stages[a["stage"]].serves == "prefill"}
    # the prefill's GEMMs see the whole prompt (more than 8 rows) but the lm_head (a row per
    # prompt); the decode's, 4 sequences
    flagged = len(gemms - {"lm_head"})
    assert flagged == 4 and prices["out_of_range_by"] == {"prefill": {"gemm": flagged}} and prices["out_of_range"] == flagged
    assert prices["sources"]["measured"] > flagged and set(prices["sources"]) <= {"measured", "estimated"}
    assert json.loads(json.dumps(report.to_json()))["prices"] == prices
