"""The run-level commands through click's runner: simulate --plots, critical-path RUN_DIR,
render RUN_DIR --bottlenecks and trace."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from tests.analysis.handbuilt import pd_backpressure_run

ROW_KEYS = {"node", "op", "resource", "layer", "micro_batch", "start_us", "duration_us"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny PD simulation priced by the roofline, with its plots."""
    from tests.conftest import TINY_DENSE

    tmp = tmp_path_factory.mktemp("cli")
    data = {
        "model": TINY_DENSE, "hardware": "h100_sxm",
        "cluster": {"pools": {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}}},
        "workflow": {"name": "pd"}, "predictor": {"source": "roofline"},
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": 50}, "num_requests": 30,
                     "prompt_tokens": {"kind": "fixed", "value": 200}, "output_tokens": {"kind": "fixed", "value": 10}},
    }
    config = tmp / "pd.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp / "run"
    result = invoke("simulate", config, "--out", out, "--no-progress", "--plots")
    assert result.exit_code == 0, result.output
    return out


def test_simulate_plots(run_dir):
    for name in ("latency_cdf", "throughput_queue", "kv_usage", "attribution"):
        for fmt in ("png", "svg"):
            assert (run_dir / "plots" / f"{name}.{fmt}").stat().st_size > 0


def test_critical_path_of_a_run_json(run_dir):
    result = invoke("critical-path", run_dir, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["scope"] == "run"
    assert report["critical_path"] and all(set(r) >= ROW_KEYS for r in report["critical_path"])
    assert sum(report["attribution"].values()) == pytest.approx(1.0)
    assert sum(r["duration_us"] for r in report["critical_path"]) == pytest.approx(report["length_us"])
    assert set(report["tail"]) == {"ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99"}
    ranks = [row["rank"] for row in report["what_if"]["scenarios"]]
    assert ranks == sorted(ranks) and report["what_if"]["factor"] == 2.0


def test_critical_path_of_one_request_and_what_if_factor(run_dir):
    result = invoke("critical-path", run_dir, "--request", "3", "--what-if", "4", "--json")
    report = json.loads(result.output)
    assert report["scope"] == "request" and report["request"] == 3
    assert report["length_us"] == pytest.approx(report["request_latency_ms"]["e2e"] * 1e3)
    assert report["what_if"]["factor"] == 4.0
    text = invoke("critical-path", run_dir, "--request", "3").output
    assert "critical path of request 3" in text and "what-if, each 2x faster" in text


def test_critical_path_text_of_a_run(tmp_path):
    result = invoke("critical-path", pd_backpressure_run(tmp_path))
    assert result.exit_code == 0
    assert "critical path of the run: 2.90 ms" in result.output
    assert "backpressure" in result.output and "request 1 waits for decode KV blocks" in result.output


@pytest.mark.parametrize(("args", "fragment"), [
    (("--request", "999"), "the run has requests 0 to 29"),
    (("--what-if", "0"), "--what-if"),
    (("--what-if", "nan"), "nan is not a number"),
    (("--what-if", "inf"), "--what-if"),
])
def test_critical_path_errors(run_dir, args, fragment):
    result = invoke("critical-path", run_dir, *args)
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output


def test_render_bottlenecks(run_dir, tmp_path):
    out = tmp_path / "b.svg"
    result = invoke("render", run_dir, "--bottlenecks", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.with_suffix(".dot").exists()
    if shutil.which("dot"):
        assert "pool decode" in out.read_text()


def test_render_bottlenecks_needs_a_run_directory(tmp_path):
    config = tmp_path / "x.yaml"
    config.write_text("model: tiny\n")
    result = invoke("render", config, "--bottlenecks", "--out", tmp_path / "b.svg")
    assert result.exit_code == 2 and "must be a run directory" in result.output


def test_trace(run_dir, tmp_path):
    out = tmp_path / "trace.json"
    result = invoke("trace", run_dir, "--out", out, "--max-slices", "20")
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["traceEvents"] and "merged" in result.output
    result = invoke("trace", run_dir, "--out", tmp_path / "window.json", "--window", "2:1")
    assert result.exit_code == 2 and "END must be after START" in result.output
