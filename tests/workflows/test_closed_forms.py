"""Closed forms: the built-in workflows' iteration times agree with pipeline formulas, the
slowest EP rank, and link bandwidth, under cost models whose times are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.analysis.iteration import analyze_iteration
from frontier_dag.cost.batch import MicroBatchLoad
from frontier_dag.cost.protocol import RooflineCostModel
from frontier_dag.cost.roofline import INTRA_NODE_COLLECTIVE_LATENCY_US


def decode_batch(seqs: int, ctx: int = 100) -> MicroBatchLoad:
    return MicroBatchLoad(np.ones(seqs, dtype=np.int64), np.full(seqs, ctx, dtype=np.int64))


def prefill_batch(seqs: int, prompt: int) -> MicroBatchLoad:
    return MicroBatchLoad(np.full(seqs, prompt, dtype=np.int64), np.zeros(seqs, dtype=np.int64),
                          kv_out_tokens=seqs * prompt)


# -- AF ping-pong: a pipeline of four equal stages -------------------------------------------

@pytest.mark.parametrize("layers", [1, 3])
def test_af_pingpong_matches_the_pipeline_formula(layers, trace_dict, tiny, fake_cost_model):
    """Every micro-batch crosses four stages per layer: attention, A2F, FFN, F2A. The fake
    model makes each take ``s`` for a micro-batch of ``b`` tokens (GEMMs cost 1 µs per token:
    two per block; a transfer 2 µs per token), norms and the attention kernel nothing, so
    with m <= 4 micro-batches no stage is ever contended and micro-batch j leaves the last
    layer at ``(4 L + j) s``; its lm_head (one GEMM, ``s / 2``) follows on the attention pool:

        T(m) = (4 L + m - 1) s + s / 2,   s = 2 b,   b = n / m
    """
    n = 6  # sequences, one new token each
    model = {**tiny["dense"], "num_layers": layers}
    pools = {"a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 1}}
    per_token_bytes = model["hidden_size"] * 2  # a2f/f2a move one bf16 hidden vector per token
    cost = fake_cost_model(per_unit={"gemm": 1.0, "p2p": 2.0}, bytes_per_unit=per_token_bytes)
    times = {}
    for m in (1, 2, 3):
        deployment, graph = trace_dict(model, pools, "af_pingpong", {"micro_batches": m})
        loads = {"af": [decode_batch(n // m) for _ in range(m)]}
        report = analyze_iteration(graph, deployment, cost, loads)
        b = n / m
        s = 2 * b
        expected = (4 * layers + m - 1) * s + s / 2
        assert report.iteration_time_us == pytest.approx(expected)
        assert report.stage_times_us["af"] == pytest.approx(expected)  # the reduced program agrees
        times[m] = report.iteration_time_us
    assert times[2] < times[1]
    assert times[3] < times[2]


def test_af_pingpong_saturates_the_busiest_stage(trace_dict, tiny, fake_cost_model):
    """When the FFN takes far longer than everything else, m micro-batches cannot beat the
    FFN pool's total work, and they approach it as m grows."""
    n, layers, ffn_per_token = 12, 2, 10.0
    pools = {"a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 1}}

    class FFNHeavy(fake_cost_model):
        """GEMMs cost 0.01 µs per token; the FFN's activation 10 µs per token."""

        def predict(self, family, query):
            pred = super().predict(family, query)
            if family == "elementwise":
                pred.latency_us = np.array([ffn_per_token * t if op == "silu_mul" else 0.0
                                            for op, t in zip(query["op"], query["num_tokens"], strict=True)])
            return pred

    heavy = FFNHeavy(per_unit={"gemm": 0.01})
    times = []
    for m in (1, 2, 3, 4, 6):
        deployment, graph = trace_dict({**tiny["dense"], "num_layers": layers}, pools, "af_pingpong",
                                       {"micro_batches": m})
        report = analyze_iteration(graph, deployment, heavy, {"af": [decode_batch(n // m) for _ in range(m)]})
        times.append(report.iteration_time_us)
    ffn_work = layers * n * ffn_per_token
    assert all(t >= ffn_work for t in times)
    assert times == sorted(times, reverse=True)
    assert times[-1] < 1.2 * ffn_work


# -- EP-MoE: the layer waits for the slowest rank --------------------------------------------

EP = 4


@pytest.fixture
def ep_moe(trace_dict, tiny):
    model = {**tiny["moe"], "moe": {**tiny["moe"]["moe"], "first_dense_layers": 0}}  # both layers MoE
    return trace_dict(model, {"m": {"role": "colocated", "gpus": EP, "ep": EP}}, "ep_moe")


def ep_report(ep_moe, cost, expert_loads, seqs=32):
    deployment, graph = ep_moe
    load = decode_batch(seqs)
    load.expert_loads = np.asarray(expert_loads, dtype=np.int64)
    return analyze_iteration(graph, deployment, cost, {"colocated": [load]})


def test_ep_moe_layer_time_is_the_slowest_rank(ep_moe, fake_cost_model):
    """Everything else costs 1 µs per op; an EP rank costs 0.5 µs per routed token. The
    iteration is the rest plus, per layer, the slowest rank's experts."""
    cost = fake_cost_model(constant={"gemm": 1.0, "elementwise": 1.0, "attention": 1.0, "deepep_dispatch": 1.0,
                                     "deepep_combine": 1.0}, per_unit={"moe_wideep_prefill": 0.5})
    rng = np.random.default_rng(0)
    loads = rng.integers(0, 20, size=(2, EP, 2))  # layers x ranks x experts per rank
    base = ep_report(ep_moe, cost, np.zeros_like(loads)).iteration_time_us
    report = ep_report(ep_moe, cost, loads)
    slowest = 0.5 * loads.sum(axis=2).max(axis=1)
    assert report.iteration_time_us == pytest.approx(base + slowest.sum())
    assert report.stage_times_us["colocated"] == pytest.approx(report.iteration_time_us)
    on_path = [row for row in report.critical_path if row["op"] == "experts"]
    assert [row["resource"] for row in on_path] == [
        f"colocated.ep_rank[{int(np.argmax(loads[layer].sum(axis=1)))}]" for layer in (0, 1)]
    assert [row["duration_us"] for row in on_path] == pytest.approx(slowest.tolist())


def test_skewed_routing_is_slower_than_balanced_with_the_same_tokens(ep_moe, fake_cost_model):
    cost = fake_cost_model(constant={"gemm": 1.0}, per_unit={"moe_wideep_prefill": 0.5})
    balanced = np.full((2, EP, 2), 8)
    skewed = np.zeros((2, EP, 2), dtype=np.int64)
    skewed[:, 0, :] = 20
    skewed[:, 1:, :] = 4
    assert skewed.sum() == balanced.sum()
    t_balanced = ep_report(ep_moe, cost, balanced).iteration_time_us
    t_skewed = ep_report(ep_moe, cost, skewed).iteration_time_us
    assert t_skewed - t_balanced == pytest.approx(2 * 0.5 * (40 - 16))


def test_power_law_routing_is_slower_than_uniform(trace_dict, tiny, fake_cost_model):
    """The same config and tokens routed by the workflow's routing model: a hot expert makes
    its rank the straggler. (Experts cost per routed token here: under the roofline a
    small expert GEMM is bound by reading weights, and skew barely shows.)"""
    from frontier_dag.analysis.iteration import representative_loads

    model = {**tiny["moe"], "moe": {**tiny["moe"]["moe"], "num_experts": 32}}
    pools = {"m": {"role": "colocated", "gpus": EP, "ep": EP}}
    cost = fake_cost_model(constant={"gemm": 1.0}, per_unit={"moe_wideep_prefill": 0.01})
    times = {}
    for kind in ("uniform", "power_law"):
        deployment, graph = trace_dict(model, pools, "ep_moe", {"routing": {"kind": kind, "alpha": 1.5}})
        loads = representative_loads(graph, deployment, batch_size=1024)
        times[kind] = analyze_iteration(graph, deployment, cost, loads)
        routed = 2 * loads["colocated"][0].q.sum() * 2  # layers x tokens x top_k
        assert loads["colocated"][0].expert_loads.sum() == pytest.approx(routed, rel=0.05)
    assert times["power_law"].iteration_time_us > times["uniform"].iteration_time_us
    assert times["power_law"].attribution["moe_experts"] > times["uniform"].attribution["moe_experts"]


# -- PD: KV transfer time is bytes over link bandwidth ---------------------------------------

def pd_transfer(trace_dict, tiny, prompt, *, tp=1, kv_link="auto", kv_transfer="per_request"):
    pools = {"p": {"role": "prefill", "gpus": tp, "tp": tp}, "d": {"role": "decode", "gpus": tp, "tp": tp}}
    deployment, graph = trace_dict(tiny["dense"], pools, "pd", {"kv_transfer": kv_transfer},
                                   cluster={"pools": pools, "kv_link": kv_link})
    loads = {"prefill": [prefill_batch(1, prompt)], "decode": [decode_batch(8)],
             "kv_transfer": [MicroBatchLoad(np.array([prompt]), np.array([0]), kv_out_tokens=prompt)]}
    report = analyze_iteration(graph, deployment, RooflineCostModel(deployment.hardware), loads)
    durations = {}
    for v, node in enumerate(report.compiled.nodes):
        op = graph.node(int(node))["op"]
        if op in ("kv_cache", "kv_layer"):
            durations.setdefault(op, []).append(float(report.duration_us[v]))
    return deployment, report, durations


@pytest.mark.parametrize(("kv_link", "medium"), [("auto", "nvlink"), ("nvlink", "nvlink"), ("network", "network")])
@pytest.mark.parametrize("tp", [1, 2])
def test_pd_transfer_time_is_kv_bytes_over_link_bandwidth(trace_dict, tiny, kv_link, medium, tp):
    model = tiny["dense"]
    # bf16 K and V of every layer, split over the TP shards' KV heads
    kv_bytes_per_token = 2 * model["num_kv_heads"] * model["head_dim"] * 2 * model["num_layers"] / tp
    for prompt in (1000, 2000, 4000):
        deployment, report, durations = pd_transfer(trace_dict, tiny, prompt, tp=tp, kv_link=kv_link)
        hw = deployment.hardware
        bandwidth = hw.node.nvlink_bandwidth_bytes_per_s if medium == "nvlink" else hw.network.bandwidth_bytes_per_s
        latency = INTRA_NODE_COLLECTIVE_LATENCY_US if medium == "nvlink" else hw.network.latency_us
        expected = latency + prompt * kv_bytes_per_token / bandwidth * 1e6
        assert durations["kv_cache"] == [pytest.approx(expected)]
        assert report.stage_times_us["kv_transfer"] == pytest.approx(expected)


def test_pd_transfer_scales_linearly_with_kv_bytes(trace_dict, tiny):
    t = {p: pd_transfer(trace_dict, tiny, p, kv_link="network")[2]["kv_cache"][0] for p in (1000, 2000, 4000)}
    assert t[4000] - t[2000] == pytest.approx(2 * (t[2000] - t[1000]))


def test_pd_per_layer_sends_each_layer_over_the_link(trace_dict, tiny):
    prompt = 3000
    deployment, report, durations = pd_transfer(trace_dict, tiny, prompt, kv_link="network", kv_transfer="per_layer")
    model, hw = tiny["dense"], deployment.hardware
    per_layer = prompt * 2 * model["num_kv_heads"] * model["head_dim"] * 2
    expected = hw.network.latency_us + per_layer / hw.network.bandwidth_bytes_per_s * 1e6
    assert durations["kv_layer"] == [pytest.approx(expected)] * model["num_layers"]
    assert "kv_transfer" not in report.stage_times_us
    # the decode waits for the last layer's KV and for the prefill's first token: the
    # prefill's whole iteration (ending with sampling) lies on the critical path
    graph_ops = [(row["op"], row["resource"]) for row in report.critical_path]
    assert ("sampling", "prefill") in graph_ops
    assert graph_ops.index(("sampling", "prefill")) < graph_ops.index(("embedding", "decode"))
    assert report.iteration_time_us == pytest.approx(report.stage_times_us["prefill"] + report.stage_times_us["decode"])
