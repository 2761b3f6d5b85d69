"""The tracer: stream order, transitively reduced edges, scopes, and file:line on every node."""

from __future__ import annotations

import networkx as nx
import pytest

from frontier_dag.config.run import resolve
from frontier_dag.dsl import Builder, WorkflowDef, trace


@pytest.fixture
def deployment(config_dict, tiny):
    pools = {"p": {"role": "prefill", "gpus": 1}, "d": {"role": "decode", "gpus": 1}}
    return resolve(config_dict(tiny["dense"], pools, "pd"))


def run(fn, deployment):
    return trace(WorkflowDef(fn.__name__, "test", fn), deployment)


def edges(graph):
    return {(graph.label(u), graph.label(v)) for u, v in graph.graph.edges}


def test_ops_on_one_stream_run_in_program_order(deployment):
    def wf(g):
        decode, side = g.stream("decode"), g.stream("decode", "comm")
        with g.stage("decode", pools=["decode"]) as st:
            g.gemm("a", decode, m=st.mb.tokens, n=8, k=8)
            g.gemm("b", side, m=st.mb.tokens, n=8, k=8)
            g.gemm("c", decode, m=st.mb.tokens, n=8, k=8)  # no after=: still after a

    builder = Builder(deployment, "wf", {})
    wf(builder)
    traced = builder.finish()  # what the tracer records, before the contention pass
    assert edges(traced) == {("mb0.a", "mb0.c")}
    assert traced.graph.edges[0, 2]["dep"] == "stream"
    assert set(traced.resources) == {"decode", "decode.comm"}
    # b shares the decode pool's GPUs with a and c: the pass orders it between them (issue
    # order), and a -> c is then implied (frontier_dag.ir.contention)
    graph = run(wf, deployment)
    assert edges(graph) == {("mb0.a", "mb0.b"), ("mb0.b", "mb0.c")}


def test_implied_edges_are_dropped(deployment):
    def wf(g):
        decode, side = g.stream("decode"), g.stream("decode", "comm")
        with g.stage("decode", pools=["decode"]) as st:
            a = g.gemm("a", decode, m=st.mb.tokens, n=8, k=8)
            b = g.gemm("b", side, m=st.mb.tokens, n=8, k=8, after=a)
            g.gemm("c", decode, m=st.mb.tokens, n=8, k=8, after=[a, b])  # a is implied by b

    graph = run(wf, deployment)
    assert edges(graph) == {("mb0.a", "mb0.b"), ("mb0.b", "mb0.c")}
    assert nx.transitive_reduction(graph.graph.to_networkx()).number_of_edges() == graph.graph.number_of_edges()


def test_streams_are_ordered_per_stage(deployment):
    def wf(g):
        link = g.link("prefill", "decode")
        with g.stage("prefill", pools=["prefill"], serves="prefill") as st:
            g.transfer("x", link, bytes=st.mb.tokens)
        with g.stage("decode", pools=["decode"], serves="decode") as st:
            g.transfer("y", link, bytes=st.mb.tokens)  # another stage's iteration: no edge

    graph = run(wf, deployment)
    assert edges(graph) == set()
    assert graph.resources["link:prefill->decode"].kind == "link"


def test_layers_micro_batches_and_locations_are_recorded(deployment):
    def wf(g):
        decode = g.stream("decode")
        with g.stage("decode", pools=["decode"], micro_batches=2) as st:
            for _ in g.layers(3):
                for mb in st.micro_batches:
                    x = g.gemm("proj", decode, m=mb.tokens, n=8, k=8)
                    g.sync("done", decode, after=x)  # sized by nothing: inherits x's micro-batch
            g.sync("end", decode)

    graph = run(wf, deployment)
    nodes = [graph.node(n) for n in graph.topological_order()]
    assert [(a["op"], a["layer"], a["micro_batch"]) for a in nodes[:4]] == [
        ("proj", 0, 0), ("done", 0, 0), ("proj", 0, 1), ("done", 0, 1)]
    assert nodes[-1]["layer"] is None and nodes[-1]["micro_batch"] is None
    assert all(a["where"].startswith("tests/dsl/test_builder.py:") for a in nodes)
    assert graph.stages["decode"].micro_batches == 2


def test_repeated_layers_share_templates(deployment):
    def wf(g):
        decode = g.stream("decode")
        with g.stage("decode", pools=["decode"]) as st:
            for _ in g.layers():
                g.gemm("proj", decode, m=st.mb.tokens, n=8, k=8)

    graph = run(wf, deployment)
    assert len(graph) == deployment.model.num_layers and len(graph.templates) == 1


def test_depend_orders_an_op_traced_earlier(deployment):
    def wf(g):
        decode, comm = g.stream("decode"), g.stream("decode", "comm")
        with g.stage("decode", pools=["decode"]) as st:
            a = g.gemm("a", decode, m=st.mb.tokens, n=8, k=8)
            b = g.gemm("b", comm, m=st.mb.tokens, n=8, k=8)
            g.depend(b, a)

    graph = run(wf, deployment)
    assert edges(graph) == {("mb0.b", "mb0.a")}
    assert graph.graph.edges[1, 0]["dep"] == "order"
    assert [graph.label(n) for n in graph.topological_order()] == ["mb0.b", "mb0.a"]


def test_built_in_workflow_nodes_point_into_workflows(trace_dict, tiny):
    _, graph = trace_dict(tiny["moe"], {"m": {"role": "colocated", "gpus": 4, "ep": 4}}, "ep_moe")
    wheres = {a["where"] for _, a in graph.graph.nodes(data=True)}
    assert all(w.startswith("workflows/") for w in wheres), sorted(wheres)[:3]
    # a block traced by a helper names the helper and the workflow line that called it, and
    # never whoever called trace() (here the test fixtures)
    assert any(w.startswith("workflows/ep_moe.py:") for w in wheres)
    helpers = [w for w in wheres if w.startswith("workflows/layers.py:")]
    assert helpers and all(" (from workflows/ep_moe.py:" in w for w in helpers)
    assert not any("tests/" in w for w in wheres)


def test_breaking_out_of_layers_does_not_tag_later_ops(deployment):
    def wf(g):
        decode = g.stream("decode")
        with g.stage("decode", pools=["decode"]) as st:
            for layer in g.layers():
                g.gemm("proj", decode, m=st.mb.tokens, n=8, k=8)
                if layer == 0:
                    break
            g.gemm("head", decode, m=st.mb.seqs, n=8, k=8)

    graph = run(wf, deployment)
    assert [(graph.node(n)["op"], graph.node(n)["layer"]) for n in graph.topological_order()] == [
        ("proj", 0), ("head", None)]
