"""Graphviz views: a box per stage naming its pools, the critical path in red, runs of
identical layers drawn once with their count, folded ranks, one stage, both directions, and
a 60-layer model's drawing on one screen."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from frontier_dag.analysis.iteration import analyze_iteration, representative_loads
from frontier_dag.cost.protocol import RooflineCostModel
from frontier_dag.errors import FrontierDagError
from frontier_dag.render.graphviz import CRITICAL, iteration_dot, write

HAS_DOT = shutil.which("dot") is not None
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def pd_ep(trace_dict, tiny):
    model = {**tiny["moe"], "num_layers": 4, "moe": {**tiny["moe"]["moe"], "num_experts": 16}}
    pools = {"pre": {"role": "prefill", "gpus": 2, "tp": 2}, "dec": {"role": "decode", "gpus": 8, "ep": 8}}
    deployment, graph = trace_dict(model, pools, "pd_ep_moe")
    loads = representative_loads(graph, deployment, batch_size=8)
    return deployment, graph, analyze_iteration(graph, deployment, RooflineCostModel(deployment.hardware), loads)


def test_stages_name_their_pools_and_the_critical_path_is_red(pd_ep):
    deployment, graph, report = pd_ep
    source = iteration_dot(graph, deployment, report, ranks=3).source
    for name, pool in deployment.pools.items():
        assert f"pool {name} ({pool.role})" in source
    assert "link prefill->decode" in source
    assert f'color="{CRITICAL}"' in source
    assert "+5 ranks" in source  # 8 EP ranks, the 3 slowest drawn


def test_identical_layers_are_drawn_once_with_their_count(pd_ep):
    deployment, graph, report = pd_ep
    source = iteration_dot(graph, deployment, report).source
    # layer 0 is dense, layers 1-3 MoE: two runs per stage
    assert "layer 0" in source and "layers 1-3 x3" in source
    assert source.count("qkv_proj") == 2 * 2  # once per run, in each of the two stages
    apart = iteration_dot(graph, deployment, report, layers=2).source
    assert "layer 1" in apart and "layers 2-3 x2" in apart
    assert apart.count("label=") > source.count("label=")


def test_one_stage_and_left_to_right(pd_ep):
    deployment, graph, report = pd_ep
    source = iteration_dot(graph, deployment, report, stage="decode", direction="LR").source
    assert "rankdir=LR" in source and "stage decode" in source
    assert "stage prefill" not in source and "pool pre (" not in source
    with pytest.raises(FrontierDagError, match="no such stage; its stages are prefill, kv_transfer, decode"):
        iteration_dot(graph, deployment, report, stage="nope")


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot is not installed")
@pytest.mark.parametrize(("example", "run"), [("pd_ep_moe_deepseek_v3", "layers 3-60 x58"),
                                              ("pd_llama3_70b", "layers 0-79 x80"),
                                              ("pd_per_layer_qwen3_32b", "layers 0-63 x64")])
def test_a_big_model_fits_one_screen(example, run, tmp_path):
    """DeepSeek-V3 (61 layers, PD with EP-MoE), Llama-3.1-70B (80) and Qwen3-32B (64): the
    default drawing of the whole iteration fits a 1920 x 1080 screen (it was 5,000 px tall)."""
    from PIL import Image

    from frontier_dag.cli.graph_commands import load_iteration

    deployment, graph, report = load_iteration(str(EXAMPLES / f"{example}.yaml"), None,
                                               ("predictor.source=roofline",), None, None)
    out = tmp_path / "iteration.png"
    assert write(iteration_dot(graph, deployment, report), out) == []
    width, height = Image.open(out).size
    assert width <= 1920 and height <= 1080, (width, height)
    assert run in out.with_suffix(".dot").read_text()


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
    assert "slack" in source  # the ping-pong's second micro-batch waits for the first
    assert "a2f" in source and "f2a" in source
    assert "pool f (ffn): 4 x h100_sxm, tp 4, ep 1, x1" in source  # an ffn pool's dense layers span its GPUs
    assert "pool a (attention): 2 x h100_sxm, tp 1, ep 1, dp 2, x1" in source
