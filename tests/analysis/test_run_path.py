"""Run-level critical paths on hand-built runs whose paths and attributions are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.analysis.run_path import RUN_CATEGORIES
from frontier_dag.analysis.run_report import RunAnalysis, run_report
from frontier_dag.errors import FrontierDagError
from tests.analysis.handbuilt import af_run, colocated_run, pd_backpressure_run

ROW_KEYS = {"node", "op", "resource", "layer", "micro_batch", "start_us", "duration_us"}


def nonzero(d: dict[str, float]) -> dict[str, float]:
    return {k: pytest.approx(v, abs=1e-6) for k, v in d.items() if abs(v) > 1e-9}


def test_colocated_run_path_is_the_last_requests_queue_prefill_and_decode(tmp_path):
    analysis = RunAnalysis(colocated_run(tmp_path))
    assert analysis.graph.unexplained == 0 and analysis.graph.mismatched == 0
    path = analysis.path()
    assert path.request == 1 and path.start_us == pytest.approx(500) and path.end_us == pytest.approx(2100)
    assert [(r["op"], r["start_us"], r["duration_us"], r["iterations"]) for r in path.rows] == [
        ("queueing", pytest.approx(500), pytest.approx(500), 1),
        ("iterations", pytest.approx(1000), pytest.approx(500), 1),
        ("iterations", pytest.approx(1500), pytest.approx(600), 2),
    ]
    assert nonzero(path.attribution_us) == {"queueing": 500, "dense_gemm": 700, "attention": 100, "collectives": 100,
                                            "elementwise": 200}
    assert all(set(r) >= ROW_KEYS for r in path.rows)
    assert set(path.by_pool_us) == {"main"}


def test_pd_backpressure_path_attribution_is_exact(tmp_path):
    analysis = RunAnalysis(pd_backpressure_run(tmp_path))
    g = analysis.graph
    assert g.unexplained == 0 and g.mismatched == 0
    assert g.nodes.memory_node[1] == 3  # D1 freed the blocks r1's transfer waited for (rows sorted by chain)
    path = analysis.path()
    assert path.request == 1 and path.length_us == pytest.approx(2900)
    assert [r["op"] for r in path.rows] == ["queueing", "iterations", "backpressure", "kv_transfer", "iterations"]
    assert path.rows[2]["ended_by"] == "decode[0] iteration freeing KV blocks"
    assert nonzero(path.attribution_us) == {"queueing": 800, "dense_gemm": 800, "backpressure": 400, "kv_transfer": 300,
                                            "collectives": 600}
    by_pool = {p: nonzero(c) for p, c in path.by_pool_us.items()}
    assert by_pool == {"prefill": {"queueing": 800, "dense_gemm": 800}, "decode": {"backpressure": 400, "collectives": 600},
                       "prefill->decode": {"kv_transfer": 300}}
    first = analysis.path(0)
    assert nonzero(first.attribution_us) == {"dense_gemm": 1500, "kv_transfer": 200, "attention": 500}


def test_af_path_keeps_pipeline_bubbles_and_splits_the_stage_among_its_pools(tmp_path):
    analysis = RunAnalysis(af_run(tmp_path))
    path = analysis.path()
    assert nonzero(path.attribution_us) == {"attention": 500, "dense_gemm": 1300, "transfers": 500,
                                            "waits_and_bubbles": 200}
    assert path.attribution["waits_and_bubbles"] == pytest.approx(200 / 2500)
    by_pool = analysis.by_pool(path)
    assert {"attention", "ffn"} <= set(by_pool) <= {"attention", "ffn", "attention->ffn", "ffn->attention"}
    assert sum(sum(c.values()) for c in by_pool.values()) == pytest.approx(1.0)
    assert by_pool["attention"]["attention"] == pytest.approx(500 / 2500)  # attention ops run on the attention pool
    assert "attention" not in by_pool["ffn"]


@pytest.mark.parametrize("build", [colocated_run, pd_backpressure_run, af_run])
def test_every_requests_path_adds_up_to_its_latency(tmp_path, build):
    analysis = RunAnalysis(build(tmp_path))
    rq = analysis.run.requests
    for r in range(len(rq)):
        path = analysis.path(r)
        total = sum(path.attribution_us.values())
        assert total == pytest.approx(rq["e2e_ms"].iat[r] * 1e3)
        assert sum(row["duration_us"] for row in path.rows) == pytest.approx(total)
        assert set(path.attribution_us) == set(RUN_CATEGORIES)
        assert sum(path.attribution.values()) == pytest.approx(1.0)


def test_the_recorded_graph_reproduces_the_recorded_times(tmp_path):
    for build in (colocated_run, pd_backpressure_run, af_run):
        g = RunAnalysis(build(tmp_path / build.__name__)).graph
        finish = g.base.finish_many(np.arange(g.ni))[:, 0]
        assert finish == pytest.approx(g.start0[:g.ni] + g.dur0[:g.ni])
        rq = g.run.requests
        assert g.base.milestones(np.arange(g.nr), "finish")[:, 0] == pytest.approx(rq["finish_s"].to_numpy() * 1e6)


def test_tail_attribution_groups(tmp_path):
    tail = RunAnalysis(pd_backpressure_run(tmp_path)).tail()
    assert set(tail) == {"ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99"}
    p99 = tail["ttft_p99"]
    assert p99["requests"] == 1 and p99["dominant"] in ("queueing", "dense_gemm")
    assert nonzero(p99["attribution"]) == {"queueing": 0.5, "dense_gemm": 0.5}  # r1: 800 queued, 800 prefilling
    tpot = tail["tpot_p99"]  # r1 again (1300 µs over one token): backpressure, transfer, decode
    assert nonzero(tpot["attribution"]) == {"backpressure": 400 / 1300, "kv_transfer": 300 / 1300, "collectives": 600 / 1300}
    for group in tail.values():
        assert sum(group["attribution"].values()) == pytest.approx(1.0)


def test_report_json_and_errors(tmp_path):
    import json

    run_dir = pd_backpressure_run(tmp_path)
    report = run_report(run_dir)
    json.dumps(report)
    assert {"critical_path", "attribution", "attribution_by_pool", "tail", "what_if", "length_us"} <= set(report)
    assert sum(report["attribution"].values()) == pytest.approx(1.0)
    with pytest.raises(FrontierDagError, match="requests 0 to 1"):
        run_report(run_dir, request=5)
    with pytest.raises(FrontierDagError, match="not a run directory"):
        run_report(tmp_path / "nothing")


def test_a_run_without_recorded_dependencies_is_refused(tmp_path):
    import pandas as pd

    run = pd_backpressure_run(tmp_path)
    iterations = pd.read_parquet(run / "iterations.parquet").drop(columns=["waited_for_kind", "waited_for"])
    iterations.to_parquet(run / "iterations.parquet", index=False)
    with pytest.raises(FrontierDagError, match="lacks the recorded dependencies .*simulate the config again"):
        RunAnalysis(run)
