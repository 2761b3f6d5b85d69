"""`frontier-dag profile OP --device cpu --quick`: the files it writes, merging, refusals, errors."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.cost.queries import (
    ATTENTION_FAMILIES,
    COLLECTIVE_FAMILIES,
    QUERY_COLUMNS,
    RAGGED_COLUMNS,
)

torch = pytest.importorskip("torch")

OPS_FAMILIES = {
    "attention": ATTENTION_FAMILIES, "gemm": ("gemm",), "grouped-gemm": ("moe_grouped_gemm",),
    "elementwise": ("elementwise",),
}


def _profile(*args: str):
    return CliRunner().invoke(cli, ["profile", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def quick_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    for op in OPS_FAMILIES:
        result = _profile(op, "--device", "cpu", "--quick", "--out", str(out))
        assert result.exit_code == 0, result.output
        assert f"{op} on " in result.output and "points in" in result.output
    return out


@pytest.mark.parametrize("op", list(OPS_FAMILIES))
def test_quick_cpu_run_writes_schema_tables(quick_dir, op):
    for family in OPS_FAMILIES[op]:
        table = pq.read_table(quick_dir / f"{family}.parquet")
        expected = (*QUERY_COLUMNS[family], "latency_us", "latency_std_us", "repeats", "method", "source")
        assert tuple(table.column_names) == expected
        assert table.num_rows >= 10
        for column in RAGGED_COLUMNS & set(table.column_names):
            assert table.schema.field(column).type == pa.list_(pa.int64())
        frame = table.to_pandas()
        assert (frame["latency_us"] > 0).all() and (frame["latency_std_us"] >= 0).all()
        assert (frame["repeats"] >= 3).all()
        assert set(frame["dtype"]) == {"bf16"}


def test_quick_cpu_run_records_its_metadata(quick_dir):
    meta = yaml.safe_load((quick_dir / "meta.yaml").read_text())
    for key in ("gpu", "system", "sm_count", "torch", "cuda", "date", "dtype", "tool", "tool_version", "device"):
        assert key in meta
    assert meta["device"] == "cpu" and meta["tool"] == "frontier-dag profile"
    assert meta["torch"] == str(torch.__version__) and meta["sm_count"] >= 1
    assert [run["op"] for run in meta["runs"]] == list(OPS_FAMILIES)
    assert meta["families"]["gemm"] == pq.read_metadata(quick_dir / "gemm.parquet").num_rows
    attention_run = meta["runs"][0]
    assert attention_run["quick"] and attention_run["points"] == sum(meta["families"][f] for f in ATTENTION_FAMILIES)
    assert any("sdpa_packed" in note for note in attention_run["notes"])
    assert not any("failed" in note for run in meta["runs"] for note in run["notes"])


def test_quick_attention_rows_mix_lengths(quick_dir):
    frame = pq.read_table(quick_dir / "attention_mixed.parquet").to_pandas()
    for q_lens in frame["q_lens"]:
        assert 1 in q_lens and max(q_lens) > 1


def test_a_second_run_appends_rows_and_records_the_run(tmp_path):
    for seed in ("0", "1"):
        assert _profile("gemm", "--device", "cpu", "--quick", "--out", str(tmp_path), "--seed", seed).exit_code == 0
    assert pq.read_metadata(tmp_path / "gemm.parquet").num_rows == 128
    meta = yaml.safe_load((tmp_path / "meta.yaml").read_text())
    assert [r["seed"] for r in meta["runs"]] == [0, 1] and meta["families"]["gemm"] == 128


def test_files_the_tool_did_not_write_are_refused_by_name(tmp_path):
    (tmp_path / "gemm.parquet").write_bytes(b"a user's file")
    result = _profile("gemm", "--device", "cpu", "--quick", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert f"{tmp_path / 'gemm.parquet'}" in result.output and "refusing" in result.output
    assert (tmp_path / "gemm.parquet").read_bytes() == b"a user's file"


def test_another_devices_profile_is_refused(tmp_path):
    assert _profile("elementwise", "--device", "cpu", "--quick", "--out", str(tmp_path)).exit_code == 0
    meta_path = tmp_path / "meta.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta_path.write_text(yaml.safe_dump({**meta, "gpu": "NVIDIA H100 80GB HBM3", "device": "cuda"}))
    result = _profile("elementwise", "--device", "cpu", "--quick", "--out", str(tmp_path))
    assert result.exit_code == 2 and str(meta_path) in result.output and "NVIDIA H100" in result.output


def test_cuda_without_a_gpu_says_how_to_run_on_the_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = _profile("attention", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "no CUDA GPU" in result.output and "--device cpu --quick" in result.output
    assert not any(tmp_path.iterdir())


def test_unsupported_dtype_and_budget_are_errors(tmp_path):
    result = _profile("attention", "--device", "cpu", "--quick", "--out", str(tmp_path), "--dtype", "fp8")
    assert result.exit_code == 2 and "--dtype fp8" in result.output and "bf16" in result.output
    result = _profile("gemm", "--device", "cpu", "--quick", "--out", str(tmp_path), "--budget-s", "0")
    assert result.exit_code == 2 and "budget" in result.output


def test_the_cpu_runs_only_quick_shapes(tmp_path):
    result = _profile("gemm", "--device", "cpu", "--out", str(tmp_path))
    assert result.exit_code == 2 and "--quick" in result.output


def test_a_real_run_stops_when_its_budget_is_spent(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from frontier_dag.profiling import design, runner

    # Real measurements on a clock that reads one second per point measured: wall time on
    # a loaded machine must not decide whether the budget was spent.
    measured = [0]
    make_timer = runner.make_timer

    def counting_timer(*args):
        timer = make_timer(*args)

        def timed(call):
            timing = timer(call)
            measured[0] += 1
            return timing
        return timed

    clock = SimpleNamespace(monotonic=lambda: float(measured[0]))
    monkeypatch.setattr(runner, "time", clock)
    monkeypatch.setattr(design, "time", clock)
    monkeypatch.setattr(runner, "make_timer", counting_timer)
    full = runner.profile("gemm", device="cpu", out=tmp_path / "full", quick=True, budget_s=1e6).report
    assert full.measured == runner.QUICK_POINTS
    budget = runner.QUICK_POINTS / 3
    run = runner.profile("gemm", device="cpu", out=tmp_path / "part", quick=True, budget_s=budget).report
    assert run.stopped_by == "budget"
    assert 0 < run.measured < runner.QUICK_POINTS
    assert run.elapsed_s <= budget + max(run.walls_s)


def test_missing_torch_is_a_clear_error(monkeypatch):
    from frontier_dag.errors import ProfilingError
    from frontier_dag.profiling import device

    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ProfilingError, match=r"pip install 'frontier-dag\[profile\]'"):
        device.require_torch()


@pytest.mark.timeout(300)  # processes that cannot meet fail the test, not the run
def test_collectives_run_over_gloo_between_cpu_processes(tmp_path):
    result = _profile("collective", "--device", "cpu", "--quick", "--out", str(tmp_path), "--budget-s", "5")
    assert result.exit_code == 0, result.output
    for family in COLLECTIVE_FAMILIES:
        frame = pq.read_table(tmp_path / f"{family}.parquet").to_pandas()
        assert len(frame) >= 5
        assert set(frame["impl"]) == {"gloo"} and set(frame["group_size"]) == {2}
        assert (frame["bytes"] > 0).all() and (frame["latency_us"] > 0).all()


def test_cli_and_profiling_plumbing_do_not_import_torch():
    code = ("import sys; import frontier_dag.cli.main, frontier_dag.cli.profile, frontier_dag.profiling.runner, "
            "frontier_dag.profiling.writer, frontier_dag.profiling.design, frontier_dag.profiling.batches; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
