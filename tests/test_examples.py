"""Every example config loads, traces and analyses (priced by the roofline, so the test
needs no fitted predictors), and the DSL guide's strategy does what docs/dsl.md says."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontier_dag.analysis.iteration import analyze_iteration, representative_loads
from frontier_dag.config.run import load_run_config
from frontier_dag.dsl import list_workflows
from frontier_dag.sim.assembly import assemble

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))
ROOFLINE = ["predictor.source=roofline"]


def analyse(path: Path, overrides=(), batch_size: int = 32):
    assembly = assemble(path, overrides=[*ROOFLINE, *overrides])
    deployment, graph = assembly.deployment, assembly.graph
    loads = representative_loads(graph, deployment, batch_size=batch_size)
    return deployment, graph, analyze_iteration(graph, deployment, assembly.cost_model, loads)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_example_loads_traces_and_analyses(path):
    deployment, graph, report = analyse(path)
    assert len(graph) > deployment.model.num_layers
    assert report.iteration_time_us > 0
    assert sum(report.attribution.values()) == pytest.approx(1.0)
    assert path.read_text().startswith("#"), "an example opens with a comment saying what it shows"


def test_examples_cover_every_built_in_workflow_and_real_presets():
    names = {load_run_config(p).workflow.name for p in CONFIGS}
    assert {w.name for w in list_workflows() if w.fn.__module__.startswith("frontier_dag.workflows.")} <= names
    kv_transfer = {load_run_config(p).workflow.params.get("kv_transfer") for p in CONFIGS}
    assert {"per_request", "per_layer"} <= kv_transfer
    for p in CONFIGS:
        if load_run_config(p).workflow.name in ("ep_moe", "pd_ep_moe", "af_ep_moe"):
            assert load_run_config(p).model in ("deepseek-v3", "qwen3-235b-a22b")


def test_guide_strategy_has_three_stages_joined_by_the_kv_transfer():
    path = EXAMPLES / "pd_af_pingpong.yaml"
    deployment, graph, report = analyse(path)
    assert list(graph.stages) == ["prefill", "kv_transfer", "decode"]
    assert graph.stages["decode"].pools == ("attention", "ffn")
    # every node names the guide's file (blocks from workflows/layers.py name the line calling them)
    assert all("examples/pd_af_pingpong.py:" in w for _, w in graph.graph.nodes(data="where"))
    # one request's path: the prefill, its KV over the link, then the decode
    resources = [row["resource"] for row in report.critical_path]
    assert resources[0] == "prefill" and "link:prefill->attention" in resources and resources[-1] == "attention"
    assert report.iteration_time_us == pytest.approx(sum(report.stage_times_us.values()))


def test_guide_strategy_overlaps_with_two_micro_batches():
    """A large decode batch is compute bound, so halving it halves each stage and the overlap
    pays off (a small one re-reads the weights per micro-batch and gains nothing)."""
    decode = {m: analyse(EXAMPLES / "pd_af_pingpong.yaml", [f"workflow.params.micro_batches={m}"], batch_size=1024)[2]
              .stage_times_us["decode"] for m in (1, 2)}
    assert decode[2] < 0.8 * decode[1]
