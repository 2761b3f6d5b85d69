"""Running a small sweep: results recorded per point, a failing point recorded without
stopping the others, pruning before simulating, resume after an interruption, early
stopping, the directory rules, and the same results on a local Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.errors import FrontierDagError
from frontier_dag.sweep import load_results, run_sweep, sweep_from_dict
from frontier_dag.sweep.worker import run_point
from tests.conftest import TINY_MOE

BASE = {
    "model": TINY_MOE, "hardware": "h100_sxm",
    "cluster": {"pools": {"main": {"role": "colocated", "gpus": 2, "ep": 2}}},
    "workflow": {"name": "ep_moe"}, "predictor": {"source": "roofline"},
    "workload": {"clients": 4, "prompt_tokens": {"kind": "fixed", "value": 256},
                 "output_tokens": {"kind": "fixed", "value": 8}, "num_requests": 24},
    "slo": {"ttft_ms": 1000, "tpot_ms": 50},
}
SWEEP = {
    "name": "tiny",
    "base": BASE,
    "axes": {
        "budget": [2, 4],
        "strategy": {"choices": {
            "colocated": {"cluster.pools": {"main": {"role": "colocated", "gpus": "=budget", "ep": "=budget"}}},
            "pd": {"cluster.pools": {"prefill": {"role": "prefill", "gpus": "=budget // 2"},
                                     "decode": {"role": "decode", "gpus": "=budget // 2", "ep": "=budget // 2"}},
                   "workflow": {"name": "pd_ep_moe"}},
            "broken": {"workflow.name": "no_such_workflow"},
            "unpriced": {"predictor.source": "no_such_source"},
            "no_weights": {"scheduler.gpu_memory_utilization": 0.000001},
            "no_kv": {"cluster.pools.main.kv_capacity_tokens": 100},
            "bad_ep": {"cluster.pools.main.ep": 3},
        }},
    },
}
STATUS = {"colocated": "ok", "pd": "ok", "broken": "invalid", "unpriced": "failed", "no_weights": "pruned",
          "no_kv": "pruned", "bad_ep": "invalid"}
#: Columns that differ between two runs of the same point.
TIMINGS = ["wall_s", "cpu_s", "wall_time_s", "traceback"]


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in TIMINGS if c in frame.columns]).reset_index(drop=True)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "local"
    report = run_sweep(sweep_from_dict(SWEEP, source="tiny.yaml"), out, workers=2, progress=False)
    return out, report


def test_every_point_is_recorded_with_its_status(local):
    out, report = local
    assert report.points == 9 and report.duplicates == 5 and not report.interrupted
    assert report.counts == {"ok": 4, "failed": 1, "pruned": 2, "invalid": 2}
    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == 9 and len(list((out / "points").glob("*.json"))) == 9
    assert dict(zip(frame["strategy"], frame["status"], strict=True)) == STATUS
    ok = frame[frame["status"] == "ok"]
    assert ok["num_completed"].eq(24).all() and ok["output_tokens_per_s_per_gpu"].gt(0).all()
    assert sorted(ok["gpus"]) == [2, 2, 4, 4] and set(ok["axis.budget"]) == {2, 4}
    assert {"ttft_ms.p90", "tpot_ms.p90", "slo.ttft_ms", "axis.strategy", "config"} <= set(frame.columns)
    # a point's config reproduces it
    assert json.loads(ok["config"].iloc[0])["predictor"] == {"source": "roofline"}


def test_failures_and_pruning_say_why(local):
    frame = pd.read_parquet(local[0] / "results.parquet").set_index("strategy")
    assert frame.loc["broken", "reason"].startswith("workflow: ") and "no_such_workflow" in frame.loc["broken", "reason"]
    assert "unknown source 'no_such_source'" in frame.loc["unpriced", "reason"]
    assert frame.loc["no_weights", "reason"].startswith("weights: pool main needs")
    assert frame.loc["no_kv", "reason"].startswith("kv: pool main holds 100 KV tokens")
    assert "264" in frame.loc["no_kv", "reason"]  # the longest request: 256 + 8
    assert "ep=3" in frame.loc["bad_ep", "reason"]
    assert frame.loc[["no_weights", "no_kv", "bad_ep", "broken"], "num_completed"].isna().all()  # never simulated


def test_resume_after_an_interruption_runs_only_the_rest(local, tmp_path):
    out = tmp_path / "resumed"
    sweep = sweep_from_dict(SWEEP, source="tiny.yaml")

    def stop_after_first_simulation(record):
        if record["status"] == "ok":
            raise KeyboardInterrupt

    first = run_sweep(sweep, out, workers=2, progress=False, on_record=stop_after_first_simulation)
    assert first.interrupted and first.counts["ok"] == 1
    assert len(pd.read_parquet(out / "results.parquet")) == 1 + 4  # the one run and the four never simulated
    with pytest.raises(FrontierDagError, match="--resume"):
        run_sweep(sweep, out, progress=False)
    second = run_sweep(sweep, out, workers=2, progress=False, resume=True)
    assert second.resumed == 5 and second.to_run == 4 and not second.interrupted
    pd.testing.assert_frame_equal(comparable(load_results(out)), comparable(load_results(local[0])))
    again = run_sweep(sweep, out, progress=False, resume=True)
    assert again.resumed == 9 and again.to_run == 0 and again.counts == {}
    retried = run_sweep(sweep, out, progress=False, resume=True, retry_failed=True)
    assert retried.to_run == 1 and retried.counts == {"failed": 1}


def test_never_writes_into_a_directory_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FrontierDagError, match="not a sweep's"):
        run_sweep(sweep_from_dict(SWEEP, source="tiny.yaml"), tmp_path, progress=False, resume=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def task(config, early_stop=None):
    return {"point_id": "x", "config": config, "source": "test", "base_dir": None, "early_stop": early_stop}


def test_early_stop_runs_a_first_slice_only():
    strict = {**BASE, "slo": {"ttft_ms": 0.001, "tpot_ms": 50}}
    result = run_point(task(strict, {"requests": 8, "margin": 2}))
    assert result["status"] == "early_stopped" and result["summary"]["num_requests"] == 8
    assert "p90 TTFT of the first 8 of 24 measured requests" in result["reason"]
    relaxed = run_point(task(BASE, {"requests": 0.5}))
    assert relaxed["status"] == "ok" and relaxed["summary"]["num_requests"] == 24
    plain = run_point(task(BASE))["summary"]
    assert {**plain, "wall_time_s": 0} == {**relaxed["summary"], "wall_time_s": 0}


def test_a_failing_point_returns_its_error():
    result = run_point(task({**BASE, "workflow": {"name": "no_such_workflow"}}))
    assert result["status"] == "failed" and result["summary"] is None
    assert "no_such_workflow" in result["reason"] and result["traceback"]


def test_cli_dry_run_and_json(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    result = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run",
                                                      "--json"])
    report = json.loads(result.stdout)
    assert report["points"] == 9 and report["to_run"] == 5
    assert report["counts"] == {"pruned": 2, "invalid": 2}
    assert not (tmp_path / "out").exists()
    # the dry run traces each workflow: one that does not fails it, and says why
    assert result.exit_code == 2 and "the workflow of 1 point(s) does not trace" in result.stderr
    assert "invalid (1 point): workflow: " in result.stderr and "no_such_workflow" in result.stderr
    bad = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(tmp_path / "o"), "--backend", "local",
                                   "--address", "auto"])
    assert bad.exit_code == 2 and "--address is for --backend ray" in bad.output


@pytest.mark.timeout(300)  # processes that cannot meet fail the test, not the run
def test_ray_gives_the_same_results(local, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    report = run_sweep(sweep_from_dict(SWEEP, source="tiny.yaml"), out, backend="ray", workers=2, progress=False)
    assert report.counts == local[1].counts
    pd.testing.assert_frame_equal(comparable(load_results(out)), comparable(load_results(local[0])))


def test_results_parquet_is_what_the_records_say(local):
    out = local[0]
    pd.testing.assert_frame_equal(comparable(pd.read_parquet(out / "results.parquet")),
                                  comparable(load_results(out)))
    spec = yaml.safe_load((out / "sweep.yaml").read_text())
    assert spec["base"]["model"] == TINY_MOE and spec["strategy"] == "strategy"
    assert Path(out / "points").is_dir()
