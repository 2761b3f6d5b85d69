"""EventGraph: validation names the offending node and its DSL line; the dump is stable."""

from __future__ import annotations

import pytest

from frontier_dag.errors import GraphError
from frontier_dag.ir.graph import EventGraph, Resource, Stage, Template


def small_graph() -> EventGraph:
    graph = EventGraph("small", params={"m": 2})
    graph.resources["decode"] = Resource("decode", "gpu", "decode")
    graph.stages["decode"] = Stage("decode", ("decode",), serves="decode")
    graph.templates = [Template("gemm", (("m", 4), ("n", 8))), Template("sync")]
    for n, (op, t) in enumerate((("a", 0), ("b", 0), ("c", 1))):
        graph.graph.add_node(n, kind="compute" if t == 0 else "sync", op=op, resource="decode", stage="decode",
                             layer=n if t == 0 else None, micro_batch=0, template=t, where=f"wf.py:{10 + n}")
    graph.graph.add_edge(0, 1)
    graph.graph.add_edge(1, 2)
    return graph


def test_a_valid_graph_validates():
    assert small_graph().validate().name == "small"


@pytest.mark.parametrize(("attr", "value", "message"), [
    ("resource", "decode.ep_rank[9]", "wf.py:11: node L1.mb0.b runs on unknown resource 'decode.ep_rank[9]'"),
    ("kind", "magic", "wf.py:11: node L1.mb0.b has kind 'magic'"),
    ("template", 7, "wf.py:11: node L1.mb0.b has no cost template"),
    ("stage", "prefill", "wf.py:11: node L1.mb0.b belongs to unknown stage 'prefill'"),
])
def test_validate_names_the_node_and_its_line(attr, value, message):
    graph = small_graph()
    graph.graph.nodes[1][attr] = value
    with pytest.raises(GraphError) as err:
        graph.validate()
    assert message in str(err.value)


def test_validate_reports_a_cycle_with_its_lines():
    graph = small_graph()
    graph.graph.add_edge(2, 0)
    with pytest.raises(GraphError, match=r"dependency cycle: .*\(wf\.py:10\).*\(wf\.py:11\)"):
        graph.validate()


def test_validate_reports_a_missing_attribute():
    graph = small_graph()
    del graph.graph.nodes[2]["where"]
    with pytest.raises(GraphError, match="node 2 lacks attribute"):
        graph.validate()


def test_dump_is_stable_and_lists_predecessors():
    text = small_graph().dump()
    assert text == small_graph().dump()
    assert text.splitlines() == [
        "workflow small [('m', 2)]",
        "resource decode kind=gpu pool=decode",
        "stage decode pools=decode micro_batches=1 serves=decode",
        "template t0 gemm(m=4, n=8)",
        "template t1 sync()",
        "n0 decode L0.mb0.a compute on=decode t0",
        "n1 decode L1.mb0.b compute on=decode t0 <- n0",
        "n2 decode mb0.c sync on=decode t1 <- n1",
    ]
    assert small_graph().dump(locations=True).splitlines()[-1].endswith("@wf.py:12")


def test_subgraph_keeps_one_stage():
    graph = small_graph()
    graph.stages["prefill"] = Stage("prefill", ("decode",))
    sub = graph.subgraph("decode")
    assert list(sub.stages) == ["decode"] and len(sub) == 3
    with pytest.raises(GraphError, match="no stage 'nope'"):
        graph.subgraph("nope")
