"""Streams that share GPUs contend for them (frontier_dag.ir.contention): closed forms under
a fake cost model, the graph's shape after the pass, and the built-ins it leaves alone."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from frontier_dag.analysis.iteration import analyze_iteration
from frontier_dag.config.run import resolve
from frontier_dag.cost.batch import MicroBatchLoad
from frontier_dag.dsl import WorkflowDef, trace
from frontier_dag.ir.contention import CONTENTION_EDGE, DEFAULT_COMM_SMS, deepep_ll_sms
from tests.conftest import TINY_DENSE, TINY_MLA, TINY_MOE, make_config, traced

TOKENS = 10  # one decode micro-batch of ten sequences
H100_SMS = 132


def pool_config(gpus=2, ep=1, comm_sms=None):
    cluster = {"pools": {"d": {"role": "colocated", "gpus": gpus, "ep": ep}}}
    if comm_sms is not None:
        cluster["comm_sms"] = comm_sms
    return make_config(TINY_MOE if ep > 1 else TINY_DENSE, cluster["pools"], "colocated", cluster=cluster)


def iteration_time(fn, cost, **config) -> tuple[float, object]:
    deployment = resolve(pool_config(**config))
    graph = trace(WorkflowDef(fn.__name__, "test", fn), deployment)
    load = MicroBatchLoad(np.ones(TOKENS, dtype=np.int64), np.full(TOKENS, 50, dtype=np.int64))
    report = analyze_iteration(graph, deployment, cost, {"s": [load]})
    assert report.stage_times_us["s"] == pytest.approx(report.iteration_time_us)  # the reduced program agrees
    return report.iteration_time_us, graph


@pytest.fixture
def gemm_cost(fake_cost_model):
    """A GEMM costs 1 µs per token; an all-to-all 1 µs per byte."""
    return fake_cost_model(per_unit={"gemm": 1.0, "all_to_all": 1.0})


# -- compute on two streams of one pool --------------------------------------------------------

def two_streams(g):
    main, side = g.stream("colocated"), g.stream("colocated", "side")
    with g.stage("s", pools=["colocated"]) as st:
        g.gemm("a", main, m=st.mb.tokens, n=8, k=8)
        g.gemm("b", side, m=st.mb.tokens, n=8, k=8)


def two_ranks(g):
    r0, r1 = g.ep_ranks("colocated", 2)
    with g.stage("s", pools=["colocated"]) as st:
        g.gemm("a", r0, m=st.mb.tokens, n=8, k=8)
        g.gemm("b", r1, m=st.mb.tokens, n=8, k=8)


def rank_and_main(g):
    main = g.stream("colocated")
    r0, r1 = g.ep_ranks("colocated", 2)
    with g.stage("s", pools=["colocated"]) as st:
        g.gemm("a", r0, m=st.mb.tokens, n=8, k=8)
        g.gemm("b", r1, m=st.mb.tokens * 3, n=8, k=8)
        g.gemm("c", main, m=st.mb.tokens, n=8, k=8)  # all GPUs: after both ranks
        g.gemm("d", r0, m=st.mb.tokens, n=8, k=8)  # GPU 0: after c


def test_two_equal_compute_ops_on_two_streams_of_one_pool_take_twice_as_long(gemm_cost):
    time, graph = iteration_time(two_streams, gemm_cost)
    assert time == pytest.approx(2 * TOKENS)  # not 1x: they share the GPUs
    assert [d for *_, d in graph.graph.edges(data="dep")] == [CONTENTION_EDGE]


def test_ops_on_different_ep_ranks_run_at_once(gemm_cost):
    time, graph = iteration_time(two_ranks, gemm_cost, ep=2)
    assert time == pytest.approx(TOKENS)  # GPU 0 and GPU 1
    assert graph.graph.number_of_edges() == 0


def test_the_main_stream_holds_every_gpu_of_the_replica(gemm_cost):
    """c (all GPUs) waits for the slower rank; d (GPU 0) waits for c, not for rank 1's b."""
    time, graph = iteration_time(rank_and_main, gemm_cost, ep=2)
    assert time == pytest.approx(3 * TOKENS + TOKENS + TOKENS)
    ops = {graph.graph.nodes[n]["op"]: n for n in graph.graph}
    assert set(graph.graph.predecessors(ops["c"])) == {ops["a"], ops["b"]}
    assert set(graph.graph.predecessors(ops["d"])) == {ops["c"]}  # a -> d is implied through c


def ordered_streams(g):
    main, side = g.stream("colocated"), g.stream("colocated", "side")
    with g.stage("s", pools=["colocated"]) as st:
        a = g.gemm("a", main, m=st.mb.tokens, n=8, k=8)
        g.gemm("b", side, m=st.mb.tokens, n=8, k=8, after=a)


def test_ops_the_workflow_already_orders_gain_nothing(gemm_cost):
    time, graph = iteration_time(ordered_streams, gemm_cost)
    assert time == pytest.approx(2 * TOKENS)
    assert [d for *_, d in graph.graph.edges(data="dep")] == ["data"]


# -- communication that overlaps compute -------------------------------------------------------

COMM_BYTES = 4  # x TOKENS bytes: a 40 µs all-to-all against a 10 µs GEMM per op


def comm_overlap(g, gemms=(10, 10, 10, 10)):
    main, comm = g.stream("colocated"), g.stream("colocated", "comm")
    with g.stage("s", pools=["colocated"]) as st:
        g.collective("dispatch", comm, "all_to_all", bytes=st.mb.tokens * COMM_BYTES, group=2,
                     placement="intra_node", impl="deepep_normal")
        x = None
        for i, tokens in enumerate(gemms):
            x = g.gemm(f"g{i}", main, m=st.mb.tokens * tokens // TOKENS, n=8, k=8, after=x)


def test_a_collective_that_overlaps_compute_slows_it_by_its_sm_share(gemm_cost):
    """The all-to-all (40 µs) runs beside 40 µs of GEMMs; DeepEP's 20 SMs of the H100's 132
    add 20/132 of its time to the compute: T = 40 + 40 x 20/132."""
    time, graph = iteration_time(comm_overlap, gemm_cost)
    share = DEFAULT_COMM_SMS["deepep_normal"] / H100_SMS
    assert time == pytest.approx(4 * TOKENS + share * COMM_BYTES * TOKENS)
    shares = [a for _, a in graph.graph.nodes(data=True) if "share_of" in a]
    assert [(a["op"], a["resource"], a["scale"]) for a in shares] == [("dispatch.sm_share", "colocated", share)]
    assert "dispatch.sm_share" in graph.dump() and f"x{share:.6g}" in graph.dump()


@pytest.mark.parametrize(("sms", "expected"), [(66, 40 + 20), (0, 40), (132, 40 + 40)])
def test_the_sm_share_is_a_setting_per_implementation(gemm_cost, sms, expected):
    time, _ = iteration_time(comm_overlap, gemm_cost, comm_sms={"deepep_normal": sms})
    assert time == pytest.approx(expected)


def test_a_collective_longer_than_the_compute_it_overlaps_bounds_the_iteration(gemm_cost):
    """One 10 µs GEMM beside the 40 µs all-to-all: max(40, 10 + 40 x s)."""
    time, _ = iteration_time(lambda g: comm_overlap(g, gemms=(10,)), gemm_cost)
    assert time == pytest.approx(4 * TOKENS)


def comm_after_compute(g):
    main, comm = g.stream("colocated"), g.stream("colocated", "comm")
    with g.stage("s", pools=["colocated"]) as st:
        a = g.gemm("a", main, m=st.mb.tokens, n=8, k=8)
        d = g.collective("dispatch", comm, "all_to_all", bytes=st.mb.tokens * COMM_BYTES, group=2,
                         placement="intra_node", impl="deepep_normal", after=a)
        g.gemm("b", main, m=st.mb.tokens, n=8, k=8, after=d)


def test_a_collective_that_overlaps_nothing_costs_no_share(gemm_cost):
    time, graph = iteration_time(comm_after_compute, gemm_cost)
    assert time == pytest.approx(TOKENS + COMM_BYTES * TOKENS + TOKENS)
    assert not any("share_of" in a for _, a in graph.graph.nodes(data=True))


def test_an_implementation_without_an_sm_count_is_an_error(gemm_cost):
    from frontier_dag.errors import ConfigError

    def own_impl(g):
        main, comm = g.stream("colocated"), g.stream("colocated", "comm")
        with g.stage("s", pools=["colocated"]) as st:
            g.collective("send", comm, "all_to_all", bytes=st.mb.tokens, group=2, placement="intra_node", impl="nixl")
            g.gemm("a", main, m=st.mb.tokens, n=8, k=8)

    with pytest.raises(ConfigError, match="cluster.comm_sms.nixl"):
        iteration_time(own_impl, gemm_cost)
    time, _ = iteration_time(own_impl, gemm_cost, comm_sms={"nixl": 0})
    assert time == pytest.approx(TOKENS)


def test_deepep_low_latency_kernels_hold_their_launch_grid():
    assert deepep_ll_sms(256, 132) == 128  # DeepSeek-V3 on an H100: two experts per block
    assert deepep_ll_sms(64, 132) == 64
    assert deepep_ll_sms(128, 132) == 128


# -- two-batch overlap: the pass keeps the graph reduced and the work conserved -----------------

def tbo(g):
    """Two micro-batches, software-pipelined: A0 D0 A1 D1 E0 C0 E1 C1 per layer."""
    main, comm = g.stream("colocated"), g.stream("colocated", "comm")
    with g.stage("s", pools=["colocated"], micro_batches=2) as st:
        x = {mb.index: None for mb in st.micro_batches}
        for _layer in g.layers(2):
            sent = {}
            for mb in st.micro_batches:
                a = g.gemm("attn", main, m=mb.tokens, n=8, k=8, after=x[mb.index])
                sent[mb.index] = g.collective("dispatch", comm, "all_to_all", bytes=mb.tokens * COMM_BYTES, group=2,
                                              placement="intra_node", impl="deepep_normal", after=a)
            for mb in st.micro_batches:
                e = g.gemm("experts", main, m=mb.tokens, n=8, k=8, after=sent[mb.index])
                x[mb.index] = g.collective("combine", comm, "all_to_all", bytes=mb.tokens * COMM_BYTES, group=2,
                                           placement="intra_node", impl="deepep_normal", after=e)


def test_two_batch_overlap_never_beats_the_conserved_work(gemm_cost):
    deployment = resolve(pool_config())
    graph = trace(WorkflowDef("tbo", "test", tbo), deployment)
    half = MicroBatchLoad(np.ones(TOKENS // 2, dtype=np.int64), np.full(TOKENS // 2, 50, dtype=np.int64))
    report = analyze_iteration(graph, deployment, gemm_cost, {"s": [half, half]})
    share = DEFAULT_COMM_SMS["deepep_normal"] / H100_SMS
    compute = 2 * 2 * 2 * TOKENS // 2  # layers x (attn, experts) x micro-batches x tokens
    comm = 2 * 2 * 2 * COMM_BYTES * TOKENS // 2
    assert report.iteration_time_us >= compute + share * comm - 1e-9
    # the graph stays transitively reduced, so the compiler collapses what it can
    reduced = nx.transitive_reduction(graph.graph.to_networkx())
    assert set(reduced.edges) == set(graph.graph.edges)


# -- the built-ins: nothing overlapped, nothing changes ----------------------------------------

@pytest.mark.parametrize(("model", "pools", "workflow", "params"), [
    (TINY_MOE, {"m": {"role": "colocated", "gpus": 4, "ep": 4}}, "ep_moe", {}),
    (TINY_MLA, {"p": {"role": "prefill", "gpus": 2, "ep": 2}, "d": {"role": "decode", "gpus": 4, "ep": 4}},
     "pd_ep_moe", {}),
    (TINY_MOE, {"a": {"role": "attention", "gpus": 2}, "f": {"role": "ffn", "gpus": 4, "ep": 4}}, "af_ep_moe",
     {"micro_batches": 2}),
], ids=["ep_moe", "pd_ep_moe", "af_ep_moe_m2"])
def test_built_in_expert_parallel_workflows_gain_no_contention(model, pools, workflow, params):
    """Their expert ranks run between a dispatch and a barrier on the main stream, and the
    all-to-alls sit on the main stream: every op on a pool's GPUs is already ordered."""
    _, graph = traced(model, pools, workflow, params)
    assert all(d != CONTENTION_EDGE for *_, d in graph.graph.edges(data="dep"))
    assert not any("share_of" in a for _, a in graph.graph.nodes(data=True))
