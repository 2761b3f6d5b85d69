"""A sweep directory's state and a sweep file's sizes, as a hostile-but-realistic user meets
them: a resume with another sweep file, two resumes at once, damaged point files, a sweep
where nothing can run, misspelt keys, typo-sized ranges and expressions, and a driver
killed while its workers run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.errors import ConfigError, FrontierDagError
from frontier_dag.sweep import expand, load_results, run_sweep, store, sweep_from_dict
from tests.sweep.test_sweep_run import BASE

SMALL = {"name": "small", "base": BASE, "axes": {"workload.clients": [2, 4]}}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write(tmp_path: Path, data: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("state") / "small"
    report = run_sweep(sweep_from_dict(SMALL, source="small.yaml"), out, workers=1, progress=False)
    assert report.counts == {"ok": 2}
    return out


# -- resume --------------------------------------------------------------------------------------

def test_resume_refuses_another_sweep_file(done, tmp_path):
    out = tmp_path / "out"
    import shutil

    shutil.copytree(done, out)
    before = (out / "sweep.yaml").read_text()
    edited = {**SMALL, "axes": {"workload.clients": [2, 4, 8]}}
    with pytest.raises(FrontierDagError, match=r"not the sweep recorded in .*sweep.yaml \(they differ at axes"
                                               r"\.workload\.clients\); .* pass --extend"):
        run_sweep(sweep_from_dict(edited, source="edited.yaml"), out, resume=True, progress=False)
    assert (out / "sweep.yaml").read_text() == before  # nothing replaced
    # --set on the base config is a different sweep too
    with pytest.raises(FrontierDagError, match="they differ at base.seed"):
        run_sweep(sweep_from_dict(SMALL, ["seed=5"], source="small.yaml"), out, resume=True, progress=False)
    # the same sweep resumes; --extend adds the changed one and runs only its new point
    assert run_sweep(sweep_from_dict(SMALL, source="small.yaml"), out, resume=True, progress=False).resumed == 2
    report = run_sweep(sweep_from_dict(edited, source="edited.yaml"), out, extend=True, workers=1, progress=False)
    assert report.resumed == 2 and report.counts == {"ok": 1}
    first = (out / "sweep.yaml").read_text().splitlines()[0]
    assert first == f"# extends sweeps: {store.sweep_id(sweep_from_dict(SMALL, source='small.yaml').to_dict())}"
    assert len(load_results(out)) == 3  # every point, of both sweeps, reads back


def test_a_second_sweep_on_the_directory_is_refused_while_one_runs(done):
    busy = f"is being written by another sweep \\(process {os.getpid()}\\)"
    with store.locked(done), pytest.raises(FrontierDagError, match=busy):
        run_sweep(sweep_from_dict(SMALL, source="small.yaml"), done, resume=True, progress=False)
    assert run_sweep(sweep_from_dict(SMALL, source="small.yaml"), done, resume=True, progress=False).resumed == 2


# -- damaged files --------------------------------------------------------------------------------

def _copy(done, tmp_path) -> Path:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(done, out)
    return out


@pytest.mark.parametrize("damage", ["truncated", "foreign", "renamed"])
def test_pareto_names_a_damaged_point_file(done, tmp_path, damage):
    out = _copy(done, tmp_path)
    point = sorted((out / "points").glob("*.json"))[0]
    record = json.loads(point.read_text())
    if damage == "truncated":
        point.write_text(point.read_text()[:40])
    elif damage == "foreign":
        point.write_text(json.dumps({**record, "sweep_id": "0123456789abcdef"}))
    else:
        (out / "points" / "aaaaaaaaaaaa.json").write_text(point.read_text())
    result = invoke("pareto", out)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.startswith("error: ") and "is unreadable" in result.output
    assert {"truncated": "JSONDecodeError", "foreign": "a point of sweep 0123456789abcdef",
            "renamed": "not the record of point aaaaaaaaaaaa"}[damage] in result.output
    assert "--resume" in result.output  # how to run the point again
    resumed = invoke("sweep", write(tmp_path, SMALL), "--out", out, "--resume", "--no-progress")
    assert resumed.exit_code == 2 and "is unreadable" in resumed.output


@pytest.mark.parametrize("content", [b"PAR1 truncated", b"not parquet at all"])
def test_pareto_names_a_damaged_results_file(tmp_path, content):
    path = tmp_path / "results.parquet"
    path.write_bytes(content)
    result = invoke("pareto", path)
    assert result.exit_code == 2 and f"{path} is unreadable" in result.output and "Traceback" not in result.output


def test_pareto_names_a_damaged_sweep_file(done, tmp_path):
    out = _copy(done, tmp_path)
    (out / "sweep.yaml").write_text("axes: [unclosed\n")
    result = invoke("pareto", out)
    assert result.exit_code == 2 and "sweep.yaml is unreadable" in result.output


# -- nothing can run, and why ---------------------------------------------------------------------

def test_a_sweep_where_no_point_runs_exits_2_with_the_reasons_grouped(tmp_path):
    sweep = {**SMALL, "axes": {"workload.clients": [2, 4, 8], "cluster.pools.main.ep": [3]}}
    result = invoke("sweep", write(tmp_path, sweep), "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 2, result.output
    assert "invalid (3 points): cluster.pools.main: ep=3 does not divide the gpus per replica (2)" in result.output
    assert "error: none of the 3 point(s) ran" in result.output
    dry = invoke("sweep", write(tmp_path, sweep), "--out", tmp_path / "dry", "--dry-run")
    assert dry.exit_code == 2 and "none of the 3 point(s) would run" in dry.output


def test_a_misspelt_workflow_parameter_fails_the_dry_run(tmp_path):
    sweep = {**SMALL, "base": {**BASE, "workflow": {"name": "ep_moe", "params": {"routng": {"kind": "uniform"}}}}}
    result = invoke("sweep", write(tmp_path, sweep), "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 2, result.output
    assert "invalid (2 points): workflow: " in result.output and "workflow.params.routng: unknown parameter" in result.output


@pytest.mark.parametrize(("axes", "message"), [
    ({"workload.clinets": [2, 4]}, "axes.workload.clinets: workload has no key 'clinets' (did you mean workload.clients?)"),
    ({"cluster.pools.main.gpu": [2]}, "cluster.pools.main has no key 'gpu' (did you mean cluster.pools.main.gpus?)"),
    ({"strategy": {"choices": {"a": {"scheduler.max_num_seq": 4}}}}, "scheduler has no key 'max_num_seq'"),
])
def test_a_misspelt_key_is_an_error_up_front(tmp_path, axes, message):
    started = time.perf_counter()
    result = invoke("sweep", write(tmp_path, {**SMALL, "axes": axes}), "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 2 and message in result.output, result.output
    assert time.perf_counter() - started < 5 and not (tmp_path / "out").exists()


# -- sizes with a typo's magnitude ----------------------------------------------------------------

@pytest.mark.parametrize(("axis", "message"), [
    ({"from": 1, "to": 1_000_000_000, "step": 1}, "the range has 1,000,000,000 values"),
    ({"from": 1, "to": 1_000_000, "factor": 1.0000001}, "the range has 138,155,"),
    ({"from": 1, "to": 1e308, "factor": 1.0001}, "7,092,317 values"),
])
def test_a_typo_sized_range_is_refused_before_it_is_built(axis, message):
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        sweep_from_dict({**SMALL, "axes": {"workload.clients": axis}}, source="s.yaml")
    assert time.perf_counter() - started < 1.0


def test_combinations_are_counted_before_expanding():
    axes = {f"v{i}": {"from": 1, "to": 100, "step": 1} for i in range(4)}  # 100 ** 4 = 10^8 combinations
    sweep = sweep_from_dict({**SMALL, "axes": axes}, source="s.yaml")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="100,000,000 combinations"):
        expand(sweep)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(("expression", "message"), [
    ("=9 ** 9 ** 9", "9 \\*\\* 387420489 is larger than 2\\*\\*64"),
    ("='x' * 10 ** 9", "repeating a str 1,000,000,000 times"),
    ("=10 ** 18 * 10 ** 18", "has 120 bits, more than 64"),
])
def test_a_typo_sized_expression_is_refused_at_once(expression, message):
    sweep = sweep_from_dict({**SMALL, "set": {"workload.num_requests": expression}}, source="s.yaml")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=f"s.yaml: set.workload.num_requests .*{message}"):
        expand(sweep)
    assert time.perf_counter() - started < 1.0


# -- processes ------------------------------------------------------------------------------------

DRIVER = """
import sys, time
from frontier_dag.sweep.backends import run_local
from tests.sweep.test_sweep_run import BASE
config = {**BASE, "workload": {**BASE["workload"], "num_requests": 10_000_000, "clients": 64}}
task = {"point_id": "slow", "config": config, "source": "slow", "base_dir": None, "early_stop": None}
for _ in run_local([task], workers=1):
    pass
"""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _workers_of(driver: subprocess.Popen, timeout_s: float = 60) -> list[int]:
    """The driver's pool workers (children running multiprocessing's spawn entry), once started."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        time.sleep(0.5)
        workers = [c for c in _children(driver.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        if workers:
            return workers
    raise AssertionError("the driver started no worker")


def _assert_gone(workers: list[int], timeout_s: float = 10) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "a worker outlived its driver"


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")


@needs_proc
def test_workers_die_with_a_killed_driver():
    """SIGKILL leaves the driver no chance to stop its workers: they stop themselves."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=Path(__file__).parents[2])
    workers: list[int] = []
    try:
        workers = _workers_of(driver)
        time.sleep(1.0)  # the worker is simulating
        driver.kill()
        driver.wait(timeout=30)
        _assert_gone(workers)
    finally:
        for pid in [driver.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@needs_proc
def test_sigterm_stops_a_sweep_as_ctrl_c_does(tmp_path):
    """The command stops its points, keeps what finished, says how to resume, exits 130."""
    slow = {**SMALL, "base": {**BASE, "workload": {**BASE["workload"], "num_requests": 2_000_000, "clients": 64}},
            "axes": {"workload.clients": [64]}}
    out = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "-m", "frontier_dag.cli.main", "sweep", str(write(tmp_path, slow)),
                               "--out", str(out), "--workers", "1", "--no-progress"],
                              cwd=Path(__file__).parents[2], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    workers: list[int] = []
    try:
        workers = _workers_of(driver)
        time.sleep(1.0)
        driver.terminate()
        output, _ = driver.communicate(timeout=60)
        assert driver.returncode == 130, output.decode()
        assert b"interrupted; continue with: frontier-dag sweep" in output and b"--resume" in output
        _assert_gone(workers)
        assert (out / "results.parquet").is_file() and (out / "sweep.yaml").is_file()
    finally:
        for pid in [driver.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
