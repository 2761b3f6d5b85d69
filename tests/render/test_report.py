"""``frontier-dag report``: one self-contained HTML page per run and per sweep, opened in
headless Chromium (skipped where Chromium is not installed) without console errors."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.render.report import run_page
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.run import simulate, write_run
from frontier_dag.sweep.report import sweep_page
from tests.conftest import TINY_DENSE, make_config
from tests.sweep.test_pareto import POINTS, with_steady

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RUN_SECTIONS = ("glance", "summary", "latency", "time", "critical-path", "bottlenecks", "pools", "config")


@pytest.fixture(scope="module")
def pd_run(tmp_path_factory):
    cfg = make_config(TINY_DENSE, {"prefill": {"role": "prefill", "gpus": 1},
                                   "decode": {"role": "decode", "gpus": 1, "kv_capacity_tokens": 3000}}, "pd",
                      workload={"clients": 12, "num_requests": 80,
                                "prompt_tokens": {"kind": "lognormal", "mean": 300, "cv": 0.5},
                                "output_tokens": {"kind": "lognormal", "mean": 40, "cv": 0.5}})
    out = tmp_path_factory.mktemp("report") / "run"
    write_run(simulate(assemble(cfg)), out)
    return out


@pytest.fixture
def sweep_dir(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    points = with_steady(POINTS, {"a3": 500.0}, {}).assign(reason=None)
    points.loc[points["status"] == "failed", "reason"] = "SimulationError: decode pool deadlocked"
    points.to_parquet(folder / "results.parquet", index=False)
    return folder


def check_self_contained(html: str) -> None:
    """Nothing fetched from elsewhere, no scripts, and every embedded image decodes."""
    from PIL import Image

    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html), "a resource outside the page"
    assert "url(" not in html and "@import" not in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert images
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()


def open_in_chromium(html_path, tmp_path) -> str:
    """The DOM Chromium built from the page; fails on any console message (the page has no
    scripts, so any is an error) or a crash."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", html_path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    return result.stdout


def test_a_run_page_holds_every_section_and_nothing_from_elsewhere(pd_run):
    html = run_page(pd_run)
    check_self_contained(html)
    for anchor in RUN_SECTIONS:
        assert f'<section id="{anchor}">' in html
    summary = json.loads((pd_run / "summary.json").read_text())
    assert f"{summary['steady']['output_tokens_per_s_per_gpu']:,.1f}" in html  # the steady figure, at a glance
    assert "Steady window" in html and summary["steady"]["how"] in html
    assert "what if each were 2x faster" in html and "pool:decode" in html
    assert "model:" in html and "workflow:" in html  # the config
    if shutil.which("dot"):
        assert html.count("<svg") >= 2  # the stages and the bottleneck pool's iteration, drawn inline
        assert "representative iteration of the bottleneck pool" in html


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_the_run_page_renders_in_headless_chromium(pd_run, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(pd_run), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0 and "wrote" in result.output
    dom = open_in_chromium(out, tmp_path)
    assert "At a glance" in dom and "Bottleneck drawing" in dom and "<img" in dom


def test_a_sweep_page_has_the_frontier_the_points_and_the_failures(sweep_dir):
    html = sweep_page(sweep_dir)
    check_self_contained(html)
    for anchor in ("frontier", "points", "unfinished"):
        assert f'<section id="{anchor}">' in html
    assert "Figures: steady window" in html
    assert "SimulationError: decode pool deadlocked" in html and "--retry-failed" in html
    table = html.split('<section id="points">')[1]
    assert table.index("a3") < table.index("a2")  # a3's steady throughput (500) puts it above a2 (300)
    ok = POINTS[POINTS["status"] == "ok"]
    assert all(pid in table for pid in ok["point_id"])


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_the_sweep_page_renders_in_headless_chromium(sweep_dir, tmp_path):
    out = tmp_path / "sweep.html"
    assert CliRunner().invoke(cli, ["report", str(sweep_dir), "--out", str(out)]).exit_code == 0
    dom = open_in_chromium(out, tmp_path)
    assert "Pareto frontier" in dom and "Points that did not finish" in dom


def test_report_refuses_to_overwrite_and_bad_targets(pd_run, tmp_path):
    out = tmp_path / "r.html"
    out.write_text("mine")
    runner = CliRunner()
    result = runner.invoke(cli, ["report", str(pd_run), "--out", str(out)])
    assert result.exit_code == 2 and "exists; choose another file or pass --overwrite" in result.output
    assert out.read_text() == "mine"
    result = runner.invoke(cli, ["report", str(pd_run), "--out", str(tmp_path / "r.txt")])
    assert result.exit_code == 2 and "give a name ending in .html" in result.output
    result = runner.invoke(cli, ["report", str(tmp_path), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "neither a run directory" in result.output
    assert "Traceback" not in result.output
    assert runner.invoke(cli, ["report", str(pd_run), "--out", str(out), "--overwrite"]).exit_code == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_points_without_steady_figures_say_so(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    POINTS.assign(reason=None).to_parquet(folder / "results.parquet", index=False)
    assert "Figures: whole run (the points predate steady-window figures)" in sweep_page(folder)
