"""The command line through click's runner: workflows, critical-path, render, and errors."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from frontier_dag.cli.main import cli

ROW_KEYS = {"node", "op", "resource", "layer", "micro_batch", "start_us", "duration_us"}


@pytest.fixture
def config(tmp_path, tiny) -> Path:
    """A PD config on the tiny dense model, priced by the roofline."""
    data = {
        "model": tiny["dense"], "hardware": "h100_sxm",
        "cluster": {"pools": {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 2, "tp": 2}}},
        "workflow": {"name": "pd"}, "predictor": {"source": "roofline"},
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1}, "num_requests": 50},
    }
    path = tmp_path / "pd.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_clean_failure(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_workflows_json_lists_every_built_in():
    result = invoke("workflows", "--json")
    assert result.exit_code == 0
    items = json.loads(result.output)
    assert {item["name"] for item in items} >= {"colocated", "pd", "af_pingpong", "ep_moe", "pd_ep_moe", "af_ep_moe"}
    for item in items:
        assert set(item) == {"name", "description", "params"} and item["description"]
    af = next(item for item in items if item["name"] == "af_pingpong")
    assert af["params"]["micro_batches"]["default"] == 2


def test_workflows_text():
    result = invoke("workflows")
    assert result.exit_code == 0 and "micro_batches (int, default 2)" in result.output


def test_critical_path_json_keys(config):
    result = invoke("critical-path", config, "--json", "--batch-size", "8")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["iteration_time_us"] > 0
    assert report["critical_path"] and all(set(row) == ROW_KEYS for row in report["critical_path"])
    assert sum(report["attribution"].values()) == pytest.approx(1.0)
    assert set(report["stage_times_us"]) == {"prefill", "kv_transfer", "decode"}
    # the roofline prices everything, and nothing is outside a roofline's range
    assert set(report["prices"]["sources"]) == {"roofline"} and report["prices"]["out_of_range"] == 0


def test_critical_path_text_and_set_overrides(config):
    base = json.loads(invoke("critical-path", config, "--json").output)
    result = invoke("critical-path", config, "--set", "workflow.params.kv_transfer=per_layer")
    assert result.exit_code == 0 and "iteration time:" in result.output and "stage kv_transfer" not in result.output
    assert "operator prices: roofline 100% of" in result.output and "; 0 outside the profiled range" in result.output
    more = json.loads(invoke("critical-path", config, "--json", "--set", "scheduler.max_num_seqs=512").output)
    assert more["stage_times_us"]["decode"] > base["stage_times_us"]["decode"]


def test_critical_path_on_a_workflow_name_with_config(config, tiny, tmp_path):
    af = yaml.safe_load(config.read_text())
    af["cluster"] = {"pools": {"a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 1}}}
    path = tmp_path / "af.yaml"
    path.write_text(yaml.safe_dump(af))
    result = invoke("critical-path", "af_pingpong", "--config", path, "--json",
                    "--set", "workflow.params.micro_batches=3")
    assert result.exit_code == 0, result.output
    # stdout holds the JSON; stderr the warning that 3 micro-batches of this tiny batch are slower than one
    assert {row["micro_batch"] for row in json.loads(result.stdout)["critical_path"]} <= {0, 1, 2, None}


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")
def test_render_svg_parses_and_names_every_pool(config, tmp_path):
    out = tmp_path / "pd.svg"
    result = invoke("render", config, "--out", out, "--layers", "1")
    assert result.exit_code == 0, result.output
    text = " ".join(ET.parse(out).getroot().itertext())
    assert "pool prefill (prefill)" in text and "pool decode (decode)" in text


def test_render_without_dot_says_so_and_writes_the_dot_file(config, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "pd.svg"
    result = invoke("render", config, "--out", out)
    assert result.exit_code == 0
    assert "`dot` program is not installed" in result.output
    assert (tmp_path / "pd.dot").read_text().startswith("digraph") and not out.exists()


def test_render_dot_output(config, tmp_path):
    out = tmp_path / "graph.dot"
    assert invoke("render", config, "--out", out).exit_code == 0
    assert "cluster_stage_prefill" in out.read_text()


def test_render_one_stage_left_to_right(config, tmp_path):
    out = tmp_path / "decode.dot"
    assert invoke("render", config, "--out", out, "--stage", "decode", "--direction", "LR", "--layers", "1").exit_code == 0
    text = out.read_text()
    assert "rankdir=LR" in text and "cluster_stage_decode" in text and "cluster_stage_prefill" not in text
    assert "layer 0" in text and "layer 1" in text  # the tiny model's two layers: the first apart, then one run


@pytest.mark.parametrize(("args", "fragments"), [
    (("critical-path", "no-such.yaml"), ["error:", "no-such.yaml: not a config file"]),
    (("critical-path", "{config}", "--set", "cluster.pools.decode.tp=3", "--set", "cluster.pools.decode.gpus=3"),
     ["error:", "{config}: cluster.pools.decode.tp: tp=3 does not divide the 8 attention heads"]),
    (("critical-path", "{config}", "--set", "cluster.pools.decode.tp=3"),
     ["error:", "--set cluster.pools.decode.tp=3 (on {config}): cluster.pools.decode: gpus per replica (2) is not "
                "divisible by tp=3"]),
    (("critical-path", "{config}", "--set", "workflow.params.kv_transfer=sometimes"), ["error:", "{config}: workflow.params.kv_transfer"]),
    (("critical-path", "{config}", "--set", "sed=1"), ["error:", "--set sed=1 (on {config}): sed: unknown key"]),
    (("critical-path", "{config}", "--set", "predictor.source=nonsense"), ["error:", "unknown source 'nonsense'"]),
    (("critical-path", "{config}", "--set", "seed"), ["error:", "expected key.path=value"]),
    (("render", "{config}", "--out", "{tmp}/x.pdf"), ["error:", "must end in .svg, .png or .dot"]),
    (("render", "{config}", "--out", "{tmp}/x.svg", "--stage", "nope"),
     ["error:", "--stage nope: pd has no such stage; its stages are prefill, kv_transfer, decode"]),
    (("critical-path", "{tmp}"), ["error:"]),
])
def test_errors_exit_non_zero_without_a_traceback(config, tmp_path, args, fragments):
    def fill(text: str) -> str:
        return text.replace("{config}", str(config)).replace("{tmp}", str(tmp_path))

    result = invoke(*(fill(a) for a in args))
    assert result.exit_code == 2
    assert_clean_failure(result, *(fill(f) for f in fragments))


def test_usage_errors_exit_non_zero():
    assert_clean_failure(invoke("render"), "Missing argument")
    assert_clean_failure(invoke("no-such-command"), "No such command")
