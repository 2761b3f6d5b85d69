"""Run directories: written whole or not at all, one run id across the files, and every
reader turning a damaged or foreign file into an error that names it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.errors import RunDataError, SimulationError
from frontier_dag.sim.run_dir import DATA_FILES, read_run, write_run
from tests.conftest import TINY_DENSE

CONFIG = {
    "model": TINY_DENSE, "hardware": "h100_sxm",
    "cluster": {"pools": {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}}},
    "workflow": {"name": "pd"}, "predictor": {"source": "roofline"},
    "workload": {"arrival": {"kind": "poisson", "rate_per_s": 50}, "num_requests": 20,
                 "prompt_tokens": {"kind": "fixed", "value": 200}, "output_tokens": {"kind": "fixed", "value": 8}},
}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two runs of the same config with seeds 0 and 1."""
    tmp = tmp_path_factory.mktemp("runs")
    config = tmp / "pd.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = {}
    for seed in (0, 1):
        out[seed] = tmp / f"seed{seed}"
        result = invoke("simulate", config, "--out", out[seed], "--no-progress", "--set", f"seed={seed}")
        assert result.exit_code == 0, result.output
    out["config"] = config
    return out


def test_every_file_carries_the_run_id(runs):
    files = read_run(runs[0])
    assert files.run_id and files.run_id == files.summary["run_id"]
    assert (runs[0] / "config.yaml").read_text().startswith(f"# frontier-dag run {files.run_id}\n")
    assert read_run(runs[1]).run_id != files.run_id


def test_the_same_config_and_seed_write_the_same_id(runs, tmp_path):
    result = invoke("simulate", runs["config"], "--out", tmp_path / "again", "--no-progress")
    assert result.exit_code == 0, result.output
    assert read_run(tmp_path / "again").run_id == read_run(runs[0]).run_id


def _damaged(runs, tmp_path, damage) -> Path:
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    damage(run)
    return run


def _truncate(name, size):
    def damage(run):
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[:size])
    return damage


DAMAGES = {
    "truncated requests": (_truncate("requests.parquet", 2000), "requests.parquet is unreadable"),
    "truncated iterations": (_truncate("iterations.parquet", 100), "iterations.parquet is unreadable"),
    "truncated summary": (_truncate("summary.json", 200), "summary.json is unreadable"),
    "summary not an object": (lambda run: (run / "summary.json").write_text("[1, 2]"), "summary.json is unreadable"),
    "config not YAML": (lambda run: (run / "config.yaml").write_text(
        (run / "config.yaml").read_text().split("\n")[0] + "\nmodel: [1\n"), "config.yaml is unreadable"),
    "iterations as requests": (lambda run: shutil.copy(run / "iterations.parquet", run / "requests.parquet"),
                               "requests.parquet is unreadable \\(not a run's table: no column request_id"),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_damaged_file_is_named(runs, tmp_path, case):
    damage, message = DAMAGES[case]
    run = _damaged(runs, tmp_path, damage)
    with pytest.raises(RunDataError, match=message):
        read_run(run)


@pytest.mark.parametrize("name", DATA_FILES)
def test_a_file_of_another_run_is_refused(runs, tmp_path, name):
    run = _damaged(runs, tmp_path, lambda run: shutil.copy(runs[1] / name, run / name))
    with pytest.raises(RunDataError, match=f"files come from different runs: {name} \\(run "):
        read_run(run)


@pytest.mark.parametrize("command", [("critical-path", "{run}"), ("render", "{run}", "--bottlenecks", "--out", "{tmp}/b.svg"),
                                     ("trace", "{run}", "--out", "{tmp}/t.json")])
@pytest.mark.parametrize("case", ["truncated requests", "truncated summary", "foreign summary"])
def test_commands_print_an_error_for_a_damaged_run(runs, tmp_path, command, case):
    if case == "foreign summary":
        run = _damaged(runs, tmp_path, lambda run: shutil.copy(runs[1] / "summary.json", run / "summary.json"))
    else:
        run = _damaged(runs, tmp_path, DAMAGES[case][0])
    result = invoke(*(part.format(run=run, tmp=tmp_path) for part in command))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "re-run `frontier-dag simulate" in result.output
    assert "Traceback" not in result.output


def test_iterations_of_pools_the_config_lacks_are_refused(runs, tmp_path):
    import pyarrow.parquet as pq

    def rename_pool(run):
        table = pq.read_table(run / "iterations.parquet")
        frame = table.to_pandas()
        frame["pool"] = frame["pool"].astype(str).replace({"decode": "other"})
        import pyarrow as pa

        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(table.schema.metadata),
                       run / "iterations.parquet")

    result = invoke("critical-path", _damaged(runs, tmp_path, rename_pool))
    assert result.exit_code == 2 and "iterations of pools other" in result.output


def test_overwrite_replaces_the_whole_run(runs, tmp_path):
    """--overwrite swaps the directory: plots of the previous run do not survive a re-run
    without --plots, and no temporary directory is left beside it."""
    run = tmp_path / "run"
    assert invoke("simulate", runs["config"], "--out", run, "--no-progress", "--plots").exit_code == 0
    assert (run / "plots" / "latency_cdf.svg").is_file()
    result = invoke("simulate", runs["config"], "--out", run, "--no-progress", "--overwrite", "--set", "seed=1")
    assert result.exit_code == 0, result.output
    assert not (run / "plots").exists()
    assert read_run(run).run_id == read_run(runs[1]).run_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failed_write_leaves_the_previous_run_whole(runs, tmp_path):
    from frontier_dag.sim.assembly import assemble
    from frontier_dag.sim.run import simulate

    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    before = {n: (run / n).read_bytes() for n in DATA_FILES}
    result = simulate(assemble(runs["config"], overrides=["seed=1"]))

    def crash(directory):
        assert (directory / "summary.json").is_file()  # the new run is complete in its own directory
        raise KeyboardInterrupt  # killed while drawing plots

    with pytest.raises(KeyboardInterrupt):
        write_run(result, run, overwrite=True, extras=crash)
    assert {n: (run / n).read_bytes() for n in DATA_FILES} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with pytest.raises(SimulationError, match="already holds a run"):
        write_run(result, run)


@pytest.mark.parametrize("target", ["summary.json", "requests.parquet", "config.yaml"])
def test_trace_never_replaces_a_file_of_the_run(runs, tmp_path, target):
    run = _damaged(runs, tmp_path, lambda run: None)
    before = (run / target).read_bytes()
    for extra in ((), ("--overwrite",)):
        result = invoke("trace", run, "--out", run / target, *extra)
        assert result.exit_code == 2 and f"would replace {target} of the run" in result.output
    assert (run / target).read_bytes() == before


def test_outputs_are_kept_unless_overwrite(runs, tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text("mine")
    result = invoke("trace", runs[0], "--out", mine)
    assert result.exit_code == 2 and "exists; choose another file or pass --overwrite" in result.output
    assert mine.read_text() == "mine"
    assert invoke("trace", runs[0], "--out", mine, "--overwrite").exit_code == 0
    assert json.loads(mine.read_text())["traceEvents"]
    # render writes FILE.dot beside the image: an existing one is kept too, and so is its input
    (tmp_path / "view.dot").write_text("mine")
    result = invoke("render", runs["config"], "--out", tmp_path / "view.svg")
    assert result.exit_code == 2 and "view.dot exists" in result.output
    assert (tmp_path / "view.dot").read_text() == "mine"
    result = invoke("render", runs["config"], "--out", runs["config"], "--overwrite")
    assert result.exit_code == 2 and "which this command reads" in result.output
