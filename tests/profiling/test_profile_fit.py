"""The predictors read and fit what the profiler writes (quick CPU profile)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.config.hardware import load_hardware
from frontier_dag.cost.queries import ATTENTION_FAMILIES
from frontier_dag.predictors.schema import read_profile_dir

pytest.importorskip("torch")

FAMILIES = (*ATTENTION_FAMILIES, "gemm", "moe_grouped_gemm", "elementwise")


@pytest.fixture(scope="module")
def quick_dir(tmp_path_factory):
    from frontier_dag.profiling.runner import profile

    out = tmp_path_factory.mktemp("fit")
    for op in ("attention", "gemm", "grouped-gemm", "elementwise"):
        profile(op, device="cpu", out=out, quick=True)
    return out


def test_the_predictors_reader_takes_every_table(quick_dir):
    profiles = read_profile_dir(quick_dir)
    assert set(profiles.tables) == set(FAMILIES)
    assert profiles.hardware  # meta.yaml's system, else its gpu
    for table in profiles.tables.values():
        assert len(table) >= 10 and (table["latency_us"] > 0).all()
        assert set(table["method"]) <= {"sdpa_packed", "linear", "grouped_mm", "loop_of_gemms", "eager"}
    mixed = profiles.tables["attention_mixed"]
    assert all(isinstance(q, np.ndarray) and q.dtype == np.int64 for q in mixed["q_lens"])


def test_a_forest_fits_each_quick_table(quick_dir):
    fitting = pytest.importorskip("frontier_dag.predictors.fitting")
    profiles = read_profile_dir(quick_dir)
    # The CPU is no hardware preset; a GPU's only sets the roofline scale of the features.
    hw = load_hardware("h100_sxm")
    for family, table in profiles.tables.items():
        model = fitting.fit_family(family, table, hw)
        predicted = model.predict(fitting.table_query(family, table), hw)[0]
        error = np.abs(predicted / table["latency_us"].to_numpy() - 1)
        assert np.isfinite(predicted).all() and float(np.median(error)) < 0.25, family


def test_predictors_fit_command_reads_the_profile_dir(quick_dir):
    if "predictors" not in cli.list_commands(None):
        pytest.skip("`frontier-dag predictors` is not available yet")
    # A CPU profile names no hardware preset (meta.yaml system: null) and the predictors'
    # features need one (SM count, peaks): fit this copy as an H100's, as the test above does.
    fitted = quick_dir.parent / "fit-as-h100"
    shutil.copytree(quick_dir, fitted)
    meta = yaml.safe_load((fitted / "meta.yaml").read_text())
    assert meta["system"] is None
    (fitted / "meta.yaml").write_text(yaml.safe_dump({**meta, "system": "h100_sxm"}))
    result = CliRunner().invoke(cli, ["predictors", "fit", "--source", "profile-dir", "--path", str(fitted),
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert all(family in json.dumps(report) for family in FAMILIES)
