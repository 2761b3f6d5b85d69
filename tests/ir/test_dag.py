"""Dag: networkx's DiGraph semantics and orders, without networkx."""

from __future__ import annotations

import random

import networkx as nx
import pytest

from frontier_dag.ir.dag import Dag


def _pair(seed: int, n: int = 40, p: float = 0.15) -> tuple[Dag, nx.DiGraph]:
    """The same random DAG built by the same calls in both (edges added in a shuffled order,
    some removed and added back, as the contention pass does)."""
    rng = random.Random(seed)
    ours, theirs = Dag(), nx.DiGraph()
    nodes = list(range(n))
    rng.shuffle(nodes)
    for v in nodes:
        for g in (ours, theirs):
            g.add_node(v, op=f"op{v}", layer=v % 3)
    edges = [(u, v) for u in range(n) for v in range(u + 1, n) if rng.random() < p]
    rng.shuffle(edges)
    for u, v in edges:
        dep = rng.choice(("data", "stream"))
        for g in (ours, theirs):
            g.add_edge(u, v, dep=dep)
    for u, v in edges[:: 7]:
        for g in (ours, theirs):
            g.remove_edge(u, v)
            g.add_edge(u, v, dep="order")
    return ours, theirs


def _same(ours: Dag, theirs: nx.DiGraph) -> None:
    assert list(ours.nodes(data=True)) == list(theirs.nodes(data=True))
    assert list(ours.edges(data=True)) == list(theirs.edges(data=True))
    assert list(ours.edges(data="dep")) == list(theirs.edges(data="dep"))
    assert {n: list(ours.predecessors(n)) for n in ours} == {n: list(theirs.predecessors(n)) for n in theirs}
    assert {n: list(ours.successors(n)) for n in ours} == {n: list(theirs.successors(n)) for n in theirs}
    assert ours.number_of_nodes() == theirs.number_of_nodes()
    assert ours.number_of_edges() == theirs.number_of_edges()


@pytest.mark.parametrize("seed", range(6))
def test_it_iterates_as_a_networkx_digraph_built_by_the_same_calls(seed):
    ours, theirs = _pair(seed)
    _same(ours, theirs)
    _same(ours.copy(), theirs.copy())
    _same(ours.copy(), ours.to_networkx())  # both copy: nodes, then edges by source
    assert ours.topological_order() == list(nx.lexicographical_topological_sort(theirs))


@pytest.mark.parametrize(("seed", "size"), [(0, 3), (1, 10), (2, 19), (3, 20), (4, 21), (5, 35), (6, 40)])
def test_a_subgraph_keeps_networkx_orders_on_both_sides_of_half(seed, size):
    ours, theirs = _pair(seed)
    keep = random.Random(seed).sample(range(40), size) + [99]  # a node not in the graph is ignored
    _same(ours.subgraph(keep).copy(), theirs.subgraph(keep).copy())
    _same(ours.subgraph(keep), theirs.subgraph(keep).copy())
    sub = ours.subgraph(keep)
    assert sub.topological_order() == list(nx.lexicographical_topological_sort(theirs.subgraph(keep)))


def test_a_subgraph_shares_attributes_and_a_copy_does_not():
    ours, _ = _pair(0)
    sub = ours.subgraph([0, 1, 2])
    sub.nodes[1]["scale"] = 0.5
    assert ours.nodes[1]["scale"] == 0.5
    copy = ours.copy()
    copy.nodes[2]["scale"] = 0.25
    assert "scale" not in ours.nodes[2]


def test_cycles_are_found_and_named():
    ours, _ = _pair(1)
    assert ours.is_acyclic() and ours.find_cycle() == []
    ours.add_edge(5, 9)
    ours.add_edge(9, 17)
    ours.add_edge(17, 5)
    assert not ours.is_acyclic()
    with pytest.raises(ValueError, match="cycle"):
        ours.topological_order()
    cycle = ours.find_cycle()
    assert all(v in ours.succ[u] for u, v in cycle)
    assert [v for _, v in cycle] == [u for u, _ in cycle[1:]] + [cycle[0][0]]
    assert not nx.is_directed_acyclic_graph(ours.to_networkx())


def test_views_read_like_networkx():
    g = Dag()
    g.add_edge("a", "b", dep="data")
    g.add_node("a", kind="compute")
    assert "a" in g and "c" not in g and len(g) == 2
    assert g.nodes["a"] == {"kind": "compute"} and list(g.nodes(data="kind")) == [("a", "compute"), ("b", None)]
    assert g.edges["a", "b"] == {"dep": "data"} and ("a", "b") in g.edges and len(g.edges) == 1
    assert g.pred["b"] == {"a": {"dep": "data"}}
    with pytest.raises(KeyError):
        g.remove_edge("b", "a")
    with pytest.raises(TypeError):
        g.edges("a")  # networkx's edges of a node: not taken, rather than read as data=
