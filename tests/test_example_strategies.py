"""The three strategies a newcomer wrote from docs/dsl.md, as examples: a mixed pool
(hybrid_pd_llama3_70b), attention offload with the attention and compute pools on
different GPUs (pd_af_hetero_qwen3_32b) and PD + EP-MoE with two-batch overlap
(pd_ep_moe_tbo; its overlap bound is tests/test_example_tbo.py). Each simulates, analyses
and renders from its run directory moved elsewhere, and keeps what it promises: both entry
pools take the requests the rule sends them, each pool is priced on its own GPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import frontier_dag as fd
from frontier_dag.sim.assembly import assemble

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROOFLINE = "predictor.source=roofline"
STRATEGIES = {"hybrid_pd_llama3_70b": 40, "pd_af_hetero_qwen3_32b": 20, "pd_ep_moe_tbo": 8}


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
    """``moved_run(name)``: the example simulated (priced by the roofline, a few requests),
    its run directory moved away from the example's files (once per module)."""
    done = {}

    def run(name: str):
        if name not in done:
            base = tmp_path_factory.mktemp(name)
            result = fd.simulate(EXAMPLES / f"{name}.yaml", set=[ROOFLINE, f"workload.num_requests={STRATEGIES[name]}"],
                                 out=base / "run")
            shutil.move(base / "run", base / "moved")
            done[name] = result, base / "moved"
        return done[name]

    return run


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_strategy_analyses_and_renders_from_its_moved_run_directory(name, moved_run, tmp_path):
    result, run_dir = moved_run(name)
    assert result.summary["num_completed"] == STRATEGIES[name]
    run = fd.load_run(run_dir)
    for key in ("num_completed", "ttft_ms", "tpot_ms", "output_tokens_per_s", "utilization", "pools", "warnings"):
        assert run.summary[key] == result.summary[key]
    path = run.critical_path()
    assert path["critical_path"] and sum(path["attribution"].values()) == pytest.approx(1.0)
    assert run.render_bottlenecks(tmp_path / "b.svg").stat().st_size > 0
    assert fd.trace(run, tmp_path / "trace.json").stat().st_size > 0


def test_the_mixed_pool_sends_each_request_where_its_rule_says(moved_run):
    result, _ = moved_run("hybrid_pd_llama3_70b")
    req, s = result.requests, result.summary
    short = req["prompt_tokens"].to_numpy() < 1024
    assert (req["prefill_pool"].astype(str).to_numpy() == np.where(short, "decode", "prefill")).all()
    assert 0 < short.sum() < len(req)  # both pools take new requests
    assert s["utilization"]["prefill"] > 0 and s["utilization"]["decode"] > 0
    assert s["entry"]["requests"] == {"decode": int(short.sum()), "prefill": int((~short).sum())}


def test_the_offload_prices_each_pool_on_its_gpu_and_costs_both_kinds(moved_run):
    result, _ = moved_run("pd_af_hetero_qwen3_32b")
    s = result.summary
    assert {p: (v["gpu"], v["gpus"]) for p, v in s["pools"].items()} == {
        "prefill": ("h200_sxm", 2), "attention": ("a100_sxm", 4), "ffn": ("h200_sxm", 2)}
    per_hour = 2 * 3.8 + 4 * 1.3 + 2 * 3.8
    assert s["cost"]["per_hour"] == pytest.approx(per_hour)
    assert s["cost"]["output_tokens_per_unit"] == pytest.approx(s["output_tokens_per_s"] * 3600 / per_hour)


def test_the_offload_graph_runs_attention_on_the_a100s_and_crosses_the_network():
    graph = assemble(EXAMPLES / "pd_af_hetero_qwen3_32b.yaml", overrides=[ROOFLINE]).graph
    kinds = {}
    for _, a in graph.graph.nodes(data=True):
        t = graph.templates[a["template"]]
        pool = graph.resources[a["resource"]].pool
        kinds.setdefault((pool, t.family == "p2p"), set()).add((t.gpu, t.field("placement")))
    # compute: the attention pool's on the A100 (its own tables), the others' on the H200 (None)
    assert kinds[("attention", False)] == {("a100_sxm", None), ("a100_sxm", "intra_node")}
    assert {gpu for gpu, _ in kinds[("ffn", False)] | kinds[("prefill", False)]} == {None}
    # every transfer to or from the A100s crosses the network at the A100 end's pace
    assert kinds[("attention", True)] == kinds[("ffn", True)] == kinds[("prefill", True)] == {("a100_sxm", "inter_node")}


def test_a_mixed_pool_requests_path_runs_where_it_entered(moved_run):
    result, run_dir = moved_run("hybrid_pd_llama3_70b")
    run, entered = fd.load_run(run_dir), result.requests["prefill_pool"].astype(str)
    short, long = int(entered.index[entered == "decode"][0]), int(entered.index[entered == "prefill"][0])
    pools = {r: {row["pool"] for row in run.critical_path(request=r)["critical_path"]} for r in (short, long)}
    assert pools[short] == {"decode"}  # prefilled and decoded on the decode pool, its KV never moved
    assert {"prefill", "prefill->decode", "decode"} >= pools[long] >= {"prefill->decode", "decode"}
