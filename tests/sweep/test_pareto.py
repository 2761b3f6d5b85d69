"""Pareto frontiers on hand-made points: dominance, the TTFT SLA filter, the best point per
strategy under the TPOT SLA, the top table, and the pareto command's image and JSON."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.sweep.pareto import compute, format_table, pareto_mask


@pytest.mark.parametrize(("x", "y", "front"), [
    ([1, 2, 3], [3, 2, 1], [1, 1, 1]),  # a trade-off: all on the frontier
    ([1, 2, 3], [1, 2, 3], [0, 0, 1]),  # one point beats the others on both
    ([1, 1, 2], [5, 4, 4], [1, 0, 1]),  # same x, lower y: dominated
    ([2, 2, 1], [3, 3, 3], [1, 1, 0]),  # equal points both kept; same y at lower x dominated
    ([], [], []),
])
def test_pareto_mask(x, y, front):
    assert pareto_mask(np.array(x), np.array(y)).tolist() == [bool(f) for f in front]


def test_pareto_mask_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 8, 200).astype(float), rng.integers(0, 8, 200).astype(float)
    brute = [not any((x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))) for i in range(len(x))]
    assert pareto_mask(x, y).tolist() == brute


def point(pid, strategy, per_gpu, tpot, ttft, clients, status="ok"):
    return {"point_id": pid, "status": status, "strategy": strategy, "gpus": 16,
            "axis.strategy": strategy, "axis.workload.clients": clients,
            "output_tokens_per_s_per_gpu": per_gpu, "tpot_ms.p90": tpot, "ttft_ms.p90": ttft,
            "tpot_ms.mean": tpot, "ttft_ms.mean": ttft, "slo.ttft_ms": 1000.0, "slo.tpot_ms": 50.0}


#: tokens/s/user = 1000 / TPOT: the TPOT SLA of 50 ms is 20 tokens/s/user.
POINTS = pd.DataFrame([
    point("a1", "pd", 100, 10, 200, 8),      # 100 tok/s/user
    point("a2", "pd", 300, 25, 400, 32),     # 40
    point("a3", "pd", 250, 40, 500, 64),     # 25: dominated by a2
    point("a4", "pd", 900, 100, 600, 256),   # 10: on the frontier, but breaks the TPOT SLA
    point("a5", "pd", 2000, 20, 5000, 512),  # would dominate, but breaks the TTFT SLA
    point("b1", "colocated", 150, 8, 100, 8),
    point("b2", "colocated", 200, 40, 300, 32),
    point("b3", "colocated", 150, 40, 300, 16),  # dominated by b2 (same x)
    point("c1", "af", 5000, 5, 10, 1, status="failed"),
])


def test_frontier_per_strategy_under_the_sla():
    front = compute(POINTS, order=["colocated", "pd"])
    assert front.ttft_ms == 1000 and front.tpot_ms == 50
    assert front.strategies == ["colocated", "pd"]  # failed points are left out
    assert front.frontier("pd")["point_id"].tolist() == ["a4", "a2", "a1"]  # by tokens/s/user
    assert front.frontier("colocated")["point_id"].tolist() == ["b2", "b1"]
    best = front.best().set_index("group")["point_id"].to_dict()
    assert best == {"pd": "a2", "colocated": "b2"}
    assert front.top(3)["point_id"].tolist() == ["a2", "a3", "b2"]
    assert front.axes == ["axis.workload.clients"]


def test_sla_from_the_command_line_and_the_percentile():
    front = compute(POINTS, ttft_ms=10_000, tpot_ms=200)
    assert front.best().set_index("group").loc["pd", "point_id"] == "a5"
    assert compute(POINTS, percentile="mean").frontier("pd")["point_id"].tolist() == ["a4", "a2", "a1"]


def with_steady(frame: pd.DataFrame, per_gpu: dict[str, float], ttft: dict[str, float]) -> pd.DataFrame:
    """The points with steady-window figures: the whole-run ones except where given."""
    out = frame.copy()
    for column in ("output_tokens_per_s_per_gpu", "tpot_ms.p90", "ttft_ms.p90", "tpot_ms.mean", "ttft_ms.mean"):
        out[f"steady.{column}"] = out[column]
    ids = out["point_id"]
    out.loc[ids.isin(list(per_gpu)), "steady.output_tokens_per_s_per_gpu"] = ids.map(per_gpu)
    out.loc[ids.isin(list(ttft)), "steady.ttft_ms.p90"] = ids.map(ttft)
    return out


def test_the_frontier_compares_steady_window_figures():
    # steady figures differ from the whole run's (warm-up and drain left out): a3's drain hid
    # its throughput, a5's synchronised start its TTFT
    front = compute(with_steady(POINTS, {"a3": 500.0}, {"a5": 800.0}))
    assert front.figures == "steady window" and front.whole_run == 0
    assert front.frontier("pd")["point_id"].tolist() == ["a5", "a1"]
    assert front.best().set_index("group").loc["pd", "point_id"] == "a5"
    assert "figures: steady window" in format_table(front)
    # a sweep resumed across versions: points without steady figures use their whole-run ones, said
    mixed = with_steady(POINTS, {}, {})
    mixed.loc[mixed["point_id"].isin(["b1", "b2"]), [c for c in mixed.columns if c.startswith("steady.")]] = np.nan
    front = compute(mixed)
    assert front.whole_run == 2 and "whole run for 2 points" in front.figures
    assert front.frontier("colocated")["point_id"].tolist() == ["b2", "b1"]
    assert compute(POINTS).figures.startswith("whole run")


@pytest.fixture
def sweep_dir(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    POINTS.to_parquet(folder / "results.parquet", index=False)
    return folder


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_pareto_command_draws_and_prints(sweep_dir, tmp_path, suffix):
    target = tmp_path / f"front{suffix}"
    result = CliRunner().invoke(cli, ["pareto", str(sweep_dir), "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert target.stat().st_size > 1000
    if suffix == ".svg":
        ET.parse(target)
    lines = result.output.splitlines()
    assert "TTFT p90 <= 1000 ms, TPOT p90 <= 50 ms" in lines[0] and "6 meet it" in lines[0]
    assert "a2" in lines[2] and "clients=32" in lines[2]
    again = CliRunner().invoke(cli, ["pareto", str(sweep_dir), "--out", str(target)])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_pareto_json(sweep_dir):
    result = CliRunner().invoke(cli, ["pareto", str(sweep_dir), "--json", "--top", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["sla"] == {"ttft_ms": 1000.0, "tpot_ms": 50.0, "percentile": "p90", "min_tokens_per_s_per_user": 20.0}
    assert [p["point_id"] for p in report["frontier"]["pd"]] == ["a4", "a2", "a1"]
    assert report["best"]["pd"]["tokens_per_s_per_user"] == pytest.approx(40.0)
    assert report["best"]["pd"]["axes"] == {"strategy": "pd", "workload.clients": 32}
    assert [p["point_id"] for p in report["top"]] == ["a2", "a3"]


def test_pareto_errors(sweep_dir, tmp_path):
    bad = CliRunner().invoke(cli, ["pareto", str(sweep_dir), "--out", str(tmp_path / "x.pdf")])
    assert bad.exit_code == 2 and ".svg or .png" in bad.output
    empty = tmp_path / "empty"
    empty.mkdir()
    none = CliRunner().invoke(cli, ["pareto", str(empty)])
    assert none.exit_code == 2 and "no sweep results" in none.output
    by = CliRunner().invoke(cli, ["pareto", str(sweep_dir), "--by", "nope"])
    assert by.exit_code == 2 and "axis.workload.clients" in by.output
