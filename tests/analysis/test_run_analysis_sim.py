"""Run-level analysis of tiny simulations: the recorded graph explains every recorded start,
paths add up to latencies, and what-ifs never slow a run down."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.analysis.request_breakdown import request_attribution
from frontier_dag.analysis.run_report import RunAnalysis
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.run import simulate, write_run
from tests.conftest import TINY_DENSE, FakeCostModel, make_config

FAST = FakeCostModel(constant={"gemm": 20.0, "attention": 10.0, "p2p": 5.0, "all": 2.0, "elementwise": 1.0},
                     per_unit={"gemm": 0.05, "attention": 0.02, "p2p": 1e-6})


OVERHEADS = {"request_us": 700.0, "handoff_us": 400.0, "step_us": 30.0, "step_per_sequence_us": 2.0}


def workload(n, prompt=64, output=8, rate=50.0, **more):
    return {"arrival": {"kind": "poisson", "rate_per_s": rate}, "num_requests": n,
            "prompt_tokens": {"kind": "fixed", "value": prompt}, "output_tokens": {"kind": "fixed", "value": output},
            **more}


CONFIGS = {
    "colocated": lambda: make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 2, "replicas": 2}}, "colocated",
                                     workload=workload(40, prompt=300, output=20, rate=400.0),
                                     scheduler={"max_num_seqs": 8, "max_num_batched_tokens": 512}),
    "pd_backpressure": lambda: make_config(
        TINY_DENSE, {"prefill": {"role": "prefill", "gpus": 1, "kv_capacity_tokens": 4000},
                     "decode": {"role": "decode", "gpus": 1, "kv_capacity_tokens": 3000}}, "pd",
        workload=workload(60, prompt=1000, output=30, rate=200.0)),
    "af": lambda: make_config(TINY_DENSE, {"attention": {"role": "attention", "gpus": 1}, "ffn": {"role": "ffn", "gpus": 1}},
                              "af_pingpong", {"micro_batches": 2}, workload=workload(30, output=10, rate=300.0)),
    "closed_loop": lambda: make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1}}, "colocated",
                                       workload={"clients": 4, "num_requests": 40, "think_time_s": 0.001,
                                                 "prompt_tokens": {"kind": "fixed", "value": 100},
                                                 "output_tokens": {"kind": "fixed", "value": 6}}),
    # the engine's time outside the kernels (engine_overheads): intake, handoff and host time per step
    "pd_overheads": lambda: make_config(
        TINY_DENSE, {"prefill": {"role": "prefill", "gpus": 1, "kv_capacity_tokens": 4000},
                     "decode": {"role": "decode", "gpus": 1, "kv_capacity_tokens": 3000}}, "pd",
        workload=workload(60, prompt=1000, output=30, rate=200.0), engine_overheads=OVERHEADS),
    "closed_loop_overheads": lambda: make_config(
        TINY_DENSE, {"main": {"role": "colocated", "gpus": 1}}, "colocated",
        workload={"clients": 4, "num_requests": 40, "think_time_s": 0.001,
                  "prompt_tokens": {"kind": "fixed", "value": 100}, "output_tokens": {"kind": "fixed", "value": 6}},
        engine_overheads=OVERHEADS),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def analysed(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "run"
    write_run(simulate(assemble(CONFIGS[request.param](), cost_model=FAST)), out)
    return request.param, RunAnalysis(out)


def test_the_graph_explains_every_recorded_start(analysed):
    name, analysis = analysed
    g = analysis.graph
    assert g.mismatched == 0
    assert g.unexplained == 0
    assert (g.nodes.finish_iter >= 0).all() and (g.nodes.prefill_iter >= 0).all()
    finish = g.base.finish_many(np.arange(g.ni))[:, 0]
    assert np.abs(finish - (g.start0[:g.ni] + g.dur0[:g.ni])).max() < 1e-3
    fin = g.base.milestones(np.arange(g.nr), "finish")[:, 0]
    assert fin == pytest.approx(analysis.run.requests["finish_s"].to_numpy() * 1e6, abs=1e-3)
    if name.startswith("pd_"):
        waited = analysis.run.requests["transfer_wait_s"].to_numpy() > 0
        assert waited.any() and (g.nodes.memory_node[waited] >= 0).all()


def test_paths_add_up_to_latencies(analysed):
    _, analysis = analysed
    rq = analysis.run.requests
    for r in range(0, len(rq), 7):
        path = analysis.path(r)
        assert sum(path.attribution_us.values()) == pytest.approx(rq["e2e_ms"].iat[r] * 1e3, rel=1e-9)
        own = request_attribution(analysis.run, analysis.times, r)
        assert own == pytest.approx(path.attribution_us, abs=1e-3)
    run_path = analysis.path()
    assert run_path.request == int(np.nanargmax(rq["finish_s"].to_numpy()))
    assert sum(run_path.attribution.values()) == pytest.approx(1.0)


def test_backpressure_shows_in_the_tail(analysed):
    name, analysis = analysed
    if not name.startswith("pd_"):
        pytest.skip("backpressure needs PD")
    tail = analysis.tail()
    # with an engine overhead model the client's first token comes from the decode server: the
    # wait for its blocks is part of TTFT, not TPOT
    metric = "ttft" if name == "pd_overheads" else "tpot"
    assert tail[f"{metric}_p99"]["attribution"]["backpressure"] > 0
    if name == "pd_overheads":
        assert tail["ttft_p99"]["attribution"]["host_overhead"] > 0
        assert tail["tpot_p99"]["attribution"]["backpressure"] == 0


def test_what_if_never_slows_the_run_down(analysed):
    _, analysis = analysed
    result = analysis.what_if(2.0, analysis.path())
    for row in result["scenarios"]:
        assert row["throughput_gain"] >= -1e-9
        assert row["p99_e2e_reduction"] >= -1e-9
        assert 0.0 <= row["batch_change"] <= 1.0
    best = result["scenarios"][0]
    assert best["p99_e2e_reduction"] > 0


def test_a_run_recorded_without_attribution_says_so(tmp_path):
    write_run(simulate(assemble(CONFIGS["af"](), cost_model=FAST), attribute=False), tmp_path / "run")
    analysis = RunAnalysis(tmp_path / "run")
    assert not analysis.run.attributed
    path = analysis.path()
    assert path.attribution["unattributed"] > 0.5
    assert sum(path.attribution.values()) == pytest.approx(1.0)
