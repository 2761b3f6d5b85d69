"""Compile once, evaluate many: the series-parallel program and the critical path agree
with plain longest-path references on random DAGs, series-parallel or not."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from frontier_dag.errors import GraphError
from frontier_dag.ir.compile import CompiledStage, compile_stages
from frontier_dag.ir.graph import EventGraph, Resource, Stage, Template
from frontier_dag.ir.levels import Levels
from frontier_dag.ir.reduce import reduce_series_parallel


def longest_path(pred_lists: list[list[int]], weights: np.ndarray) -> float:
    """The plainest reference: finish(v) = w(v) + max finish of its predecessors."""
    finish: list[float] = []
    for v, preds in enumerate(pred_lists):
        finish.append(float(weights[v]) + max((finish[u] for u in preds), default=0.0))
    return max(finish, default=0.0)


def event_graph(pred_lists: list[list[int]], node_template: list[int], stages: int = 1) -> EventGraph:
    """An EventGraph over the DAG (node ids in topological order); node v belongs to stage
    ``v % stages`` so that multi-stage graphs get cross-stage edges."""
    graph = EventGraph("random")
    graph.resources["gpu"] = Resource("gpu", "gpu", "colocated")
    for s in range(stages):
        graph.stages[f"s{s}"] = Stage(f"s{s}", ("colocated",))
    graph.templates = [Template("gemm", (("id", t),)) for t in range(max(node_template, default=0) + 1)]
    for v, t in enumerate(node_template):
        graph.graph.add_node(v, kind="compute", op=f"op{v}", resource="gpu", stage=f"s{v % stages}", layer=None,
                             micro_batch=None, template=t, where=f"test.py:{v}")
    for v, preds in enumerate(pred_lists):
        for u in preds:
            graph.graph.add_edge(u, v, dep="data")
    return graph.validate()


@st.composite
def dags(draw, max_nodes: int = 18):
    """Random DAGs: node i may depend on any earlier node; templates may repeat."""
    n = draw(st.integers(1, max_nodes))
    pairs = [(u, v) for v in range(n) for u in range(v)]
    edges = draw(st.sets(st.sampled_from(pairs), max_size=3 * n)) if pairs else set()
    pred_lists = [sorted(u for u, w in edges if w == v) for v in range(n)]
    num_templates = draw(st.integers(1, n))
    node_template = draw(st.lists(st.integers(0, num_templates - 1), min_size=n, max_size=n))
    return pred_lists, node_template


def random_costs(seed: int, k: int, templates: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    costs = rng.exponential(10.0, size=(k, templates))
    costs[rng.random((k, templates)) < 0.15] = 0.0  # zero-cost ops (syncs, empty batches)
    return costs


@settings(max_examples=200, deadline=None)
@given(dags(), st.integers(0, 2**32 - 1))
def test_reduced_program_equals_references(dag, seed):
    pred_lists, node_template = dag
    node_template = np.array(node_template)
    templates = int(node_template.max()) + 1
    program = reduce_series_parallel(pred_lists, node_template, templates)
    levels = Levels.build(len(pred_lists), pred_lists)
    for k in (1, 3):  # k == 1 runs the compiled residual pass, k > 1 the vectorised steps
        costs = random_costs(seed + k, k, templates)
        got = program.evaluate(costs)
        assert got.shape == (k,)
        for i in range(k):
            weights = costs[i, node_template]
            expected = longest_path(pred_lists, weights)
            assert got[i] == pytest.approx(expected, rel=1e-9, abs=1e-9)
            assert levels.finish(weights[None, :])[0].max() == pytest.approx(expected, rel=1e-9, abs=1e-9)
            # the simulator's single-iteration path, and the fixed weighted sum where there is one
            assert program.evaluate_one(costs[i]) == pytest.approx(expected, rel=1e-9, abs=1e-9)
            linear = program.linear_coefficients()
            if linear is not None:
                assert costs[i] @ linear == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(dags(), st.integers(0, 2**32 - 1))
def test_scaled_nodes_weigh_their_multiple_of_the_template_cost(dag, seed):
    """A node with a scale (the contention pass's SM-share nodes) weighs that multiple of its
    template's cost, in the reduced program, the levelled reference and the critical path;
    the gradient still splits the time exactly among the templates (Euler)."""
    pred_lists, node_template = dag
    rng = np.random.default_rng(seed)
    scale = rng.choice([1.0, 0.15, 0.5, 2.0], size=len(pred_lists))
    graph = event_graph(pred_lists, node_template)
    for v, c in enumerate(scale):
        if c != 1.0:
            graph.graph.nodes[v]["scale"] = float(c)
    compiled = CompiledStage(graph.validate(), None)
    costs = random_costs(seed, 2, len(compiled.templates))
    for i in range(2):
        weights = costs[i, compiled.node_template] * compiled.node_scale
        expected = longest_path(compiled.pred_lists, weights)
        assert compiled.iteration_time(costs)[i] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert compiled.finish_times(costs)[i].max(initial=0.0) == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert compiled.iteration_time_one(costs[i]) == pytest.approx(expected, rel=1e-9, abs=1e-9)
        total, grad = compiled.program.gradient(costs[i])
        assert total == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert grad @ costs[i] == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(dags(), st.integers(0, 2**32 - 1))
@example(([[], [], [0, 1], [1], [2, 3], [2]], [0, 1, 2, 3, 0, 1]), 7)  # an N: never reduces
def test_compiled_residual_gives_the_generated_function_bit_for_bit(dag, seed):
    pred_lists, node_template = dag
    node_template = np.array(node_template)
    templates = int(node_template.max()) + 1
    compiled = reduce_series_parallel(pred_lists, node_template, templates)
    assume(compiled.residual is not None)  # a DAG that does not reduce to one combination
    fallback = reduce_series_parallel(pred_lists, node_template, templates)
    fallback._compiled = (None, *fallback._residual_kernels()[1:])  # as where numba is missing
    costs = random_costs(seed, 1, templates)[0]
    assert compiled.evaluate_one(costs) == fallback.evaluate_one(costs)
    total, grad = compiled.gradient(costs)
    expected_total, expected_grad = fallback.gradient(costs)
    assert total == expected_total and np.array_equal(grad, expected_grad)


@settings(max_examples=100, deadline=None)
@given(dags(), st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_compiled_stage_iteration_time_equals_levelised_reference(dag, seed, stages):
    pred_lists, node_template = dag
    graph = event_graph(pred_lists, node_template, stages)
    whole = CompiledStage(graph, None)
    costs = random_costs(seed, 4, len(whole.templates))
    reference = whole.finish_times(costs).max(axis=1)
    np.testing.assert_allclose(whole.iteration_time(costs), reference, rtol=1e-9, atol=1e-9)
    for name, compiled in compile_stages(graph).items():
        assert set(graph.graph.nodes[n]["stage"] for n in compiled.nodes.tolist()) <= {name}
        c = random_costs(seed + 1, 2, len(compiled.templates))
        np.testing.assert_allclose(compiled.iteration_time(c), compiled.finish_times(c).max(axis=1, initial=0.0),
                                   rtol=1e-9, atol=1e-9)


@settings(max_examples=150, deadline=None)
@given(dags(), st.integers(0, 2**32 - 1))
def test_slack_is_zero_on_the_critical_path_and_means_what_it_says(dag, seed):
    pred_lists, _ = dag
    n = len(pred_lists)
    graph = event_graph(pred_lists, list(range(n)))  # a template per node: nodes priced independently
    compiled = CompiledStage(graph, None)
    costs = random_costs(seed, 1, n)[0]
    path, start, slack = compiled.critical_path(costs)
    weights = compiled.node_weights(costs)[0]
    total = compiled.iteration_time(costs)[0]
    # the path is a chain of edges from a source whose weights add up to the iteration time
    assert compiled.pred_lists[path[0]] == []
    for u, v in zip(path, path[1:], strict=False):
        assert u in compiled.pred_lists[v]
    assert sum(weights[v] for v in path) == pytest.approx(total, rel=1e-9, abs=1e-9)
    assert np.all(slack[path] <= 1e-9 * max(total, 1.0))
    assert np.all(slack >= 0)
    assert np.all(start >= -1e-12)
    # growing a node by its slack keeps the iteration time; growing it by more lengthens it
    v = int(np.random.default_rng(seed).integers(n))
    template = compiled.node_template[v]
    grown = costs.copy()
    grown[template] += slack[v]
    assert compiled.iteration_time(grown)[0] == pytest.approx(total, rel=1e-9, abs=1e-9)
    grown[template] += 1.0
    assert compiled.iteration_time(grown)[0] == pytest.approx(total + 1.0, rel=1e-9, abs=1e-9)


def test_non_series_parallel_graph_keeps_a_residual():
    # the "N" graph a->c, a->d, b->d does not reduce; neither does a ping-pong grid
    pred_lists = [[], [], [0], [0, 1]]
    program = reduce_series_parallel(pred_lists, np.arange(4), 4)
    assert program.residual is not None
    assert program.evaluate(np.array([[1.0, 5.0, 2.0, 1.0]]))[0] == 6.0
    assert program.evaluate(np.array([[4.0, 1.0, 3.0, 1.0], [0.0, 0.0, 0.0, 0.0]])).tolist() == [7.0, 0.0]


def test_series_parallel_graph_reduces_to_one_combination():
    # a -> {b, c} -> d, twice in a row with the same templates: one linear combination
    pred_lists = [[], [0], [0], [1, 2], [3], [3], [4, 5]]
    program = reduce_series_parallel(pred_lists, np.array([0, 1, 2, 3, 1, 2, 3]), 4)
    assert program.residual is None
    # a + max(b, c) + d + max(b, c) + d with a=1, b=5, c=2, d=1
    assert program.evaluate(np.array([[1.0, 5.0, 2.0, 1.0]]))[0] == 13.0


def test_empty_graph_costs_nothing():
    assert reduce_series_parallel([], np.array([], dtype=int), 0).evaluate(np.zeros((2, 0))).tolist() == [0.0, 0.0]


def test_compiled_stage_rejects_an_unknown_stage():
    graph = event_graph([[], [0]], [0, 1])
    with pytest.raises(GraphError, match="no stage 'decode'"):
        CompiledStage(graph, "decode")


def test_weights_are_on_nodes_not_edges():
    # networkx's dag_longest_path reads edge weights; ours must read node weights
    graph = event_graph([[], [0], [0], [1, 2]], [0, 1, 2, 3])
    compiled = CompiledStage(graph, None)
    costs = np.array([1.0, 10.0, 2.0, 1.0])
    path, _, _ = compiled.critical_path(costs)
    assert [int(compiled.nodes[v]) for v in path] == [0, 1, 3]
    assert nx.is_directed_acyclic_graph(graph.graph.to_networkx())


def test_a_chain_is_a_fixed_weighted_sum():
    program = reduce_series_parallel([[], [0], [1]], np.array([0, 1, 0]), 2)
    assert program.linear_coefficients().tolist() == [2.0, 1.0]
    assert program.evaluate_one(np.array([3.0, 4.0])) == 10.0
    # a max of branches is not linear
    assert reduce_series_parallel([[], [0], [0], [1, 2]], np.arange(4), 4).linear_coefficients() is None
