"""The overlap report: busy share of each resource per stage, how long micro-batches run at
once, what one micro-batch would take; and the warnings when m > 1 overlaps nothing (from
the graph, at trace time: CLI and run summary) or is slower than m = 1 (for a batch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from frontier_dag.analysis.iteration import analyze_iteration, merge_loads
from frontier_dag.config.run import run_config_from_dict
from frontier_dag.cost.batch import MicroBatchLoad
from frontier_dag.dsl import trace_config
from tests.conftest import TINY_DENSE

MISTAKES = Path(__file__).parent.parent / "dsl" / "mistakes"
AF = {"attention": {"role": "attention", "gpus": 1}, "ffn": {"role": "ffn", "gpus": 1}}
N = 8  # decode sequences


def af_config(workflow: str, micro_batches: int = 2, path: Path | None = None, **extra):
    spec = {"name": workflow, "params": {"micro_batches": micro_batches}}
    if path is not None:
        spec["path"] = str(path)
    return run_config_from_dict({"model": {**TINY_DENSE, "num_layers": 4}, "hardware": "h100_sxm",
                                 "cluster": {"pools": AF}, "workflow": spec, "predictor": {"source": "roofline"},
                                 **extra})


def decode(seqs: int) -> MicroBatchLoad:
    return MicroBatchLoad(np.ones(seqs, dtype=np.int64), np.full(seqs, 100, dtype=np.int64))


@pytest.fixture
def cost(fake_cost_model):
    """A GEMM costs 3 µs plus 1 µs per token (smaller micro-batches pay the 3 µs more often);
    a transfer 2 µs per token."""
    return fake_cost_model(constant={"gemm": 3.0}, per_unit={"gemm": 1.0, "p2p": 2.0},
                           bytes_per_unit=TINY_DENSE["hidden_size"] * 2)


def report_of(config, cost, m=2):
    deployment, graph = trace_config(config)
    return graph, analyze_iteration(graph, deployment, cost, {"af": [decode(N // m)] * m}, overlap=True)


def test_a_ping_pong_overlaps_its_micro_batches_and_says_what_one_would_take(cost):
    graph, report = report_of(af_config("af_pingpong"), cost)
    o = report.overlap["af"]
    assert graph.warnings == [] and report.warnings == []
    assert o.micro_batches == 2 and o.time_us == pytest.approx(report.stage_times_us["af"])
    assert 0.3 < o.micro_batch_overlap < 1
    assert set(o.busy) == {"attention", "ffn", "link:attention->ffn", "link:ffn->attention"}
    assert all(0 < share <= 1 for share in o.busy.values())
    # m = 1: the af_pingpong config with one micro-batch, priced on the same sequences
    deployment, single = trace_config(af_config("af_pingpong", micro_batches=1))
    one = analyze_iteration(single, deployment, cost, {"af": [decode(N)]})
    assert o.m1_time_us == pytest.approx(one.stage_times_us["af"])
    assert o.time_us < o.m1_time_us
    assert json.loads(json.dumps(report.to_json()))["overlap"]["af"]["m1_time_us"] == pytest.approx(o.m1_time_us)


def test_micro_batches_that_can_never_overlap_are_a_warning_when_traced(cost):
    path = MISTAKES / "af_one_activation.py"
    graph, report = report_of(af_config("af_one_activation", path=path), cost)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.endswith("# <- mistake"))
    assert len(graph.warnings) == 1
    assert f"af_one_activation.py:{line}: stage 'af' splits its batch into 2 micro-batches but they never overlap" \
        in graph.warnings[0]
    assert report.overlap["af"].micro_batch_overlap == 0.0
    assert graph.warnings[0] in report.warnings


def test_m_above_one_slower_than_one_is_a_warning_of_the_report(cost):
    graph, report = report_of(af_config("af_micro_batch_outer_loop", path=MISTAKES / "af_micro_batch_outer_loop.py"),
                              cost)
    o = report.overlap["af"]
    assert graph.warnings == []  # micro-batch 1's first layer can overlap micro-batch 0's last FFN
    assert 0 < o.micro_batch_overlap < 0.2
    assert o.time_us > o.m1_time_us
    assert report.warnings == [f"stage 'af': 2 micro-batches take {o.time_us / 1000:.3f} ms, more than one would "
                               f"({o.m1_time_us / 1000:.3f} ms) for this batch; they run at once for "
                               f"{o.micro_batch_overlap:.0%} of the stage"]


def test_merged_loads_keep_every_sequence_and_routed_token():
    a, b = decode(3), decode(2)
    a.expert_loads, b.expert_loads = np.ones((2, 4, 2)), 2 * np.ones((2, 4, 2))
    merged = merge_loads([a, b])
    assert len(merged.q) == 5 and merged.expert_loads.sum() == 3 * 16


def test_the_warnings_reach_the_cli_and_the_run_summary(tmp_path):
    from frontier_dag.cli.main import cli

    config = tmp_path / "af.yaml"
    config.write_text(f"model: llama-3.1-8b\nhardware: h100_sxm\n"
                      "cluster: {pools: {attention: {role: attention, gpus: 1}, ffn: {role: ffn, gpus: 1}}}\n"
                      f"workflow: {{name: af_one_activation, path: {MISTAKES / 'af_one_activation.py'}, "
                      "params: {micro_batches: 2}}\npredictor: {source: roofline}\n"
                      "workload: {arrival: {kind: poisson, rate_per_s: 5}, num_requests: 4, "
                      "prompt_tokens: {kind: fixed, value: 64}, output_tokens: {kind: fixed, value: 4}}\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["critical-path", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "they never overlap" in result.stderr
    assert "they never overlap" in json.loads(result.stdout)["warnings"][0]
    result = runner.invoke(cli, ["simulate", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "they never overlap" in result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["warnings"].splitlines()) == 1 and "they never overlap" in summary["warnings"]
