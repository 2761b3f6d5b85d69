"""Views of a finished run: the Chrome trace, the bottleneck drawing and the plots."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections import defaultdict

import pytest

from frontier_dag.analysis.run_data import load_run
from frontier_dag.render.trace import build_trace, write_trace
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.run import simulate, write_run
from tests.analysis.handbuilt import af_run, pd_backpressure_run, pd_decode_bound_run
from tests.conftest import TINY_DENSE, TINY_MOE, FakeCostModel, make_config

FAST = FakeCostModel(constant={"gemm": 20.0, "attention": 10.0, "p2p": 5.0, "moe": 10.0, "all": 2.0},
                     per_unit={"gemm": 0.05, "attention": 0.02, "moe": 0.05, "p2p": 1e-6})
REQUIRED = {"X": {"name", "ph", "ts", "dur", "pid", "tid"}, "C": {"name", "ph", "ts", "pid", "args"},
            "M": {"name", "ph", "pid", "args"}, "s": {"name", "cat", "ph", "id", "ts", "pid", "tid"},
            "t": {"name", "cat", "ph", "id", "ts", "pid", "tid"}, "f": {"name", "cat", "ph", "id", "ts", "pid", "tid"}}


def check_trace_format(document: dict) -> dict[str, int]:
    """The trace-event format as Perfetto and chrome://tracing read it."""
    json.loads(json.dumps(document))  # plain JSON
    assert isinstance(document["traceEvents"], list)
    counts: dict[str, int] = defaultdict(int)
    flows: dict[int, list[dict]] = defaultdict(list)
    slices: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for e in document["traceEvents"]:
        assert e["ph"] in REQUIRED, e
        missing = REQUIRED[e["ph"]] - set(e)
        assert not missing, (missing, e)
        counts[e["ph"]] += 1
        if "ts" in e:
            assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        if e["ph"] == "X":
            assert e["dur"] >= 0
            slices[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
        if e["ph"] == "C":
            assert all(isinstance(v, (int, float)) for v in e["args"].values())
        if e["ph"] in "stf":
            flows[e["id"]].append(e)
    for fid, events in flows.items():
        phases = [e["ph"] for e in events]
        assert phases.count("s") == 1 and phases.count("f") == 1, (fid, phases)
        ts = [e["ts"] for e in events]
        assert ts == sorted(ts), f"flow {fid} goes back in time"
        for e in events:  # each end binds to a slice on its track
            assert any(a <= e["ts"] <= b for a, b in slices[(e["pid"], e["tid"])]), e
    return dict(counts)


@pytest.fixture(scope="module")
def pd_sim_run(tmp_path_factory):
    cfg = make_config(TINY_DENSE, {"prefill": {"role": "prefill", "gpus": 1, "kv_capacity_tokens": 4000},
                                   "decode": {"role": "decode", "gpus": 1, "kv_capacity_tokens": 3000}}, "pd",
                      workload={"arrival": {"kind": "poisson", "rate_per_s": 200.0}, "num_requests": 40,
                                "prompt_tokens": {"kind": "fixed", "value": 1000},
                                "output_tokens": {"kind": "fixed", "value": 20}})
    out = tmp_path_factory.mktemp("pd") / "run"
    write_run(simulate(assemble(cfg, cost_model=FAST)), out)
    return out


def test_trace_of_a_pd_run(pd_sim_run, tmp_path):
    run = load_run(pd_sim_run)
    document = build_trace(run)
    counts = check_trace_format(document)
    assert counts["X"] >= len(run.iterations) + len(run.requests)  # iterations, transfers, rebuilt ops
    assert counts["s"] == counts["f"] == len(run.requests)
    names = {e["args"]["name"] for e in document["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert any(n.startswith("pool prefill") for n in names) and any(n.startswith("pool decode") for n in names)
    assert any(n.startswith("link ") for n in names) and any(n.startswith("slowest") for n in names)
    counters = {e["name"] for e in document["traceEvents"] if e["ph"] == "C"}
    assert any(c.startswith("queue:") for c in counters) and any(c.startswith("KV usage") for c in counters)
    first = next(e for e in document["traceEvents"] if e["ph"] == "X" and e["cat"] == "iteration")
    assert {"num_seqs", "prefill_tokens", "decode_seqs", "kv_usage", "cause"} <= set(first["args"])
    write_trace(document, tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]


def test_large_runs_merge_slices_and_sample_flows(pd_sim_run):
    run = load_run(pd_sim_run)
    document = build_trace(run, detail=False, max_slices=10, max_flows=5, max_counter_points=7)
    counts = check_trace_format(document)
    iteration_slices = [e for e in document["traceEvents"] if e["ph"] == "X" and e["cat"] == "iteration"]
    assert len(iteration_slices) <= 10 + len(run.chains)
    assert sum(e["args"].get("merged", 1) for e in iteration_slices) == len(run.iterations)
    assert counts["s"] <= 5 + 1
    assert document["metadata"]["notes"]
    window = build_trace(run, detail=False, window_s=(0.0, 0.01))
    check_trace_format(window)


def test_trace_of_an_ep_moe_run_draws_a_track_per_rank(tmp_path):
    cfg = make_config(TINY_MOE, {"main": {"role": "colocated", "gpus": 4, "ep": 4}}, "ep_moe",
                      workload={"arrival": {"kind": "poisson", "rate_per_s": 100.0}, "num_requests": 6,
                                "prompt_tokens": {"kind": "fixed", "value": 64},
                                "output_tokens": {"kind": "fixed", "value": 4}})
    write_run(simulate(assemble(cfg, cost_model=FAST)), tmp_path / "run")
    document = build_trace(load_run(tmp_path / "run"))
    check_trace_format(document)
    threads = {e["args"]["name"] for e in document["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sum("ep_rank[" in t for t in threads) == 4


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("build", [pd_backpressure_run, af_run])
def test_bottleneck_svg_parses_and_names_every_pool(tmp_path, build):
    from frontier_dag.render.bottlenecks import render_bottlenecks

    run_dir = build(tmp_path)
    assert render_bottlenecks(run_dir, tmp_path / "b.svg") == []
    text = " ".join(t for t in ET.parse(tmp_path / "b.svg").getroot().itertext())
    for pool in load_run(run_dir).config.cluster.pools:
        assert f"pool {pool}" in text
    assert "representative iteration of the bottleneck pool" in text and "critical path" in text


def test_bottleneck_dot_marks_the_critical_edges(tmp_path):
    from frontier_dag.render.bottlenecks import render_bottlenecks

    run_dir = pd_backpressure_run(tmp_path)
    render_bottlenecks(run_dir, tmp_path / "b.dot")
    source = (tmp_path / "b.dot").read_text()
    assert "s_arrivals -> s_queue" in source
    heavy = [line for line in source.splitlines() if "s_backpressure ->" in line or "-> s_backpressure" in line]
    assert heavy and all("penwidth" in line for line in heavy)  # r1 waited for decode blocks on the path


def test_plots_are_written_as_png_and_svg(pd_sim_run):
    from frontier_dag.render.plots import draw_run_plots

    paths = draw_run_plots(pd_sim_run)
    names = {p.stem for p in paths}
    assert names == {"latency_cdf", "throughput_queue", "kv_usage", "attribution"}
    assert {p.suffix for p in paths} == {".png", ".svg"}
    for p in paths:
        assert p.stat().st_size > 1000
        if p.suffix == ".svg":
            ET.parse(p)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_the_bottleneck_drawing_shows_the_bottleneck_pools_median_iteration(tmp_path):
    from frontier_dag.render.bottlenecks import render_bottlenecks

    run_dir = pd_decode_bound_run(tmp_path)  # its slowest iteration is a prefill; decode bounds it
    render_bottlenecks(run_dir, tmp_path / "b.svg")
    text = " ".join(t.strip() for t in ET.parse(tmp_path / "b.svg").getroot().itertext() if t.strip())
    assert "representative iteration of the bottleneck pool decode" in text
    assert "the median of its 5 iterations" in text and "recorded 400.0 µs" in text
    assert "decode[0]" in text and "0 prefill tokens" in text  # not the slowest, a prefill of 64 tokens


def test_transfers_are_labelled_with_the_workflows_own_names(tmp_path):
    """A custom AF workflow whose transfers are not called a2f/f2a: the stage view names them."""
    from pathlib import Path

    from frontier_dag.analysis.run_report import RunAnalysis
    from frontier_dag.render.bottlenecks import bottleneck_dot

    source = (Path(__file__).resolve().parents[2] / "examples" / "pd_af_pingpong.py").read_text()
    source = source.replace('"a2f", a2f', '"ship_hidden", a2f').replace('"f2a", f2a', '"ship_back", f2a')
    (tmp_path / "custom.py").write_text(source.replace('"pd_af_pingpong"', '"custom_af"'))
    cfg = make_config(TINY_DENSE, {"prefill": {"role": "prefill", "gpus": 1}, "attention": {"role": "attention", "gpus": 1},
                                   "ffn": {"role": "ffn", "gpus": 1}}, "custom_af",
                      workload={"arrival": {"kind": "poisson", "rate_per_s": 100.0}, "num_requests": 6,
                                "prompt_tokens": {"kind": "fixed", "value": 64},
                                "output_tokens": {"kind": "fixed", "value": 4}})
    cfg.workflow.path = str(tmp_path / "custom.py")
    write_run(simulate(assemble(cfg, cost_model=FAST)), tmp_path / "run")
    dot = bottleneck_dot(RunAnalysis(tmp_path / "run"), cost_model=FAST).source
    assert "ship_back / ship_hidden" in dot and "A2F" not in dot
    assert "KV transfer (kv_cache)" in dot
