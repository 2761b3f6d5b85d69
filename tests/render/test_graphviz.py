"""Graphviz views: pools as clusters, the critical path in red, folded layers and ranks."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from frontier_dag.analysis.iteration import analyze_iteration, representative_loads
from frontier_dag.cost.protocol import RooflineCostModel
from frontier_dag.errors import FrontierDagError
from frontier_dag.render.graphviz import CRITICAL, iteration_dot, write

HAS_DOT = shutil.which("dot") is not None


@pytest.fixture
def pd_ep(trace_dict, tiny):
    model = {**tiny["moe"], "num_layers": 4, "moe": {**tiny["moe"]["moe"], "num_experts": 16}}
    pools = {"pre": {"role": "prefill", "gpus": 2, "tp": 2}, "dec": {"role": "decode", "gpus": 8, "ep": 8}}
    deployment, graph = trace_dict(model, pools, "pd_ep_moe")
    loads = representative_loads(graph, deployment, batch_size=8)
    return deployment, graph, analyze_iteration(graph, deployment, RooflineCostModel(deployment.hardware), loads)


def test_pools_are_clusters_and_the_critical_path_is_red(pd_ep):
    deployment, graph, report = pd_ep
    source = iteration_dot(graph, deployment, report, layers=2, ranks=3).source
    for name, pool in deployment.pools.items():
        assert f"pool {name} ({pool.role})" in source
    assert "link prefill->decode" in source
    assert f'color="{CRITICAL}"' in source
    assert "layers 2-3 x2" in source  # layers from 2 on fold into one box per stream
    assert "+5 more ranks" in source  # 8 EP ranks, the 3 slowest drawn
    assert "decode.ep_rank[*] layers 2-3 x2" in source and "decode.ep_rank[5] layers" not in source
    assert "slack" in source


def test_more_layers_draw_more_nodes(pd_ep):
    deployment, graph, report = pd_ep
    small = iteration_dot(graph, deployment, report, layers=1).source.count("label=")
    large = iteration_dot(graph, deployment, report, layers=4).source.count("label=")
    assert large > small


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot is not installed")
def test_svg_parses_and_names_every_pool(pd_ep, tmp_path):
    deployment, graph, report = pd_ep
    out = tmp_path / "iteration.svg"
    assert write(iteration_dot(graph, deployment, report), out) == []
    root = ET.parse(out).getroot()
    text = " ".join(t for t in root.itertext())
    for name in deployment.pools:
        assert f"pool {name}" in text
    assert (tmp_path / "iteration.dot").is_file()


def test_without_dot_the_dot_file_is_still_written(pd_ep, tmp_path, monkeypatch):
    deployment, graph, report = pd_ep
    monkeypatch.setattr(shutil, "which", lambda name: None)
    notes = write(iteration_dot(graph, deployment, report), tmp_path / "iteration.png")
    assert len(notes) == 1 and "`dot` program is not installed" in notes[0]
    assert (tmp_path / "iteration.dot").read_text().startswith("digraph")
    assert not (tmp_path / "iteration.png").exists()


def test_unknown_suffix_is_an_error(pd_ep, tmp_path):
    deployment, graph, report = pd_ep
    with pytest.raises(FrontierDagError, match="must end in .svg, .png or .dot"):
        write(iteration_dot(graph, deployment, report), tmp_path / "iteration.pdf")


def test_an_ffn_pool_shows_no_attention_dp(trace_dict, tiny):
    pools = {"a": {"role": "attention", "gpus": 2}, "f": {"role": "ffn", "gpus": 4}}
    deployment, graph = trace_dict(tiny["dense"], pools, "af_pingpong")
    report = analyze_iteration(graph, deployment, RooflineCostModel(deployment.hardware),
                               representative_loads(graph, deployment, batch_size=8))
    source = iteration_dot(graph, deployment, report).source
    assert "pool f (ffn): 4 x h100_sxm, tp 1, ep 1, x1" in source
    assert "pool a (attention): 2 x h100_sxm, tp 1, ep 1, dp 2, x1" in source
