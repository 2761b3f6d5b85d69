"""The model cache (invalidated by data and by settings), the registry entry point and
the ``predictors`` commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.config import load_hardware
from frontier_dag.config.run import PredictorConfig
from frontier_dag.predictors import cache
from frontier_dag.predictors.fitted_set import fitted_set
from frontier_dag.predictors.fitting import FitSettings
from frontier_dag.predictors.registry import cost_model_for
from frontier_dag.predictors.schema import read_profile_dir, write_profile
from frontier_dag.predictors.sources import open_source

SMALL = FitSettings(n_estimators=8)


def copy_fixture(fixtures, tmp_path):
    target = tmp_path / "profiles"
    shutil.copytree(fixtures / "tiny_profile", target)
    return target


def test_the_cache_key_covers_what_a_model_means():
    """The features (their compiled loops, names and codes), the fitting and the forest's
    layout are hashed into the key; the modules left out only use fitted models."""
    package = Path(cache.__file__).parent
    keyed = {f.name for f in package.glob("*.py")} - cache.RUNTIME_MODULES
    assert {"features.py", "fitting.py", "forest.py"} <= keyed
    for name in cache.RUNTIME_MODULES:
        source = (package / name).read_text()
        assert "njit" not in source and "names(" not in source, name


def test_cache_hit_and_invalidation(fixtures, tmp_path, cache_dir):
    path = copy_fixture(fixtures, tmp_path)
    first, cached = fitted_set(open_source("profile-dir", path=path), SMALL)
    assert not cached and len(list(cache_dir.glob("*.pkl"))) == 1
    second, cached = fitted_set(open_source("profile-dir", path=path), SMALL)
    assert cached and second.data_hash == first.data_hash
    # other settings: a new fit
    _, cached = fitted_set(open_source("profile-dir", path=path), FitSettings(n_estimators=9))
    assert not cached
    # the data changes (one latency doubled): a new fit, whose predictions follow the data
    table = read_profile_dir(path).tables["all_reduce"]
    table.loc[:, "latency_us"] *= 2
    write_profile(path, "all_reduce", table)
    third, cached = fitted_set(open_source("profile-dir", path=path), SMALL)
    assert not cached and third.data_hash != first.data_hash
    query = {"bytes": [2.0**20], "group_size": [8], "placement": ["intra_node"], "impl": ["nccl"]}
    hw = load_hardware("h200_sxm")
    ratio = third.models["all_reduce"].predict(query, hw)[0] / first.models["all_reduce"].predict(query, hw)[0]
    assert 1.8 < ratio[0] < 2.2


def test_registry_builds_the_cost_model(fixtures, tmp_path, cache_dir):
    path = copy_fixture(fixtures, tmp_path)
    model = cost_model_for(PredictorConfig(source=str(path)), load_hardware("h200_sxm"))
    p = model.predict("all_reduce", {"bytes": [1e6], "group_size": [4], "placement": ["intra_node"], "impl": ["nccl"]})
    assert p.source == "rf" and p.latency_us[0] > 8


def test_fit_and_evaluate_commands(fixtures, tmp_path, cache_dir):
    path = copy_fixture(fixtures, tmp_path)
    runner = CliRunner()
    fit = runner.invoke(cli, ["predictors", "fit", "--source", "profile-dir", "--path", str(path), "--json"])
    assert fit.exit_code == 0, fit.output
    report = json.loads(fit.output)
    assert report["hardware"] == "h200_sxm" and not report["cached"] and set(report["families"]) == {
        "gemm", "attention_decode", "all_reduce"}
    gemm = report["families"]["gemm"]
    assert {"n_train", "n_test", "within_5pct", "within_10pct", "median_ape", "p90_ape"} <= set(gemm)
    assert gemm["within_10pct"] >= 0.8 and gemm["n_train"] > gemm["n_test"] > 0
    evaluate = runner.invoke(cli, ["predictors", "evaluate", "--source", "profile-dir", "--path", str(path),
                                   "--split", "grouped", "--family", "all_reduce", "--json"])
    assert evaluate.exit_code == 0, evaluate.output
    scores = json.loads(evaluate.output)["all_reduce"]
    assert {"n_train", "n_test", "within_5pct", "within_10pct", "median_ape", "p90_ape"} <= set(scores)
    table = runner.invoke(cli, ["predictors", "evaluate", "--source", "profile-dir", "--path", str(path),
                                "--family", "all_reduce"])
    assert table.exit_code == 0 and "all_reduce" in table.output and "<10%" in table.output


def test_command_errors_are_one_line(tmp_path):
    pd.DataFrame().to_csv(tmp_path / "notes.csv")
    result = CliRunner().invoke(cli, ["predictors", "fit", "--source", "vidur-csv", "--path", str(tmp_path)])
    assert result.exit_code == 2 and "holds no vidur-csv files" in result.output and "Traceback" not in result.output


def test_evaluate_breaks_the_held_out_rows_down(fixtures, tmp_path, cache_dir):
    path = copy_fixture(fixtures, tmp_path)
    result = CliRunner().invoke(cli, ["predictors", "evaluate", "--source", "profile-dir", "--path", str(path),
                                      "--family", "gemm", "--by", "dtype", "--json"])
    assert result.exit_code == 0, result.output
    gemm = json.loads(result.output)["gemm"]
    assert sum(p["n_test"] for p in gemm["parts"].values()) == gemm["n_test"]
    assert all({"within_10pct", "median_ape"} <= set(p) for p in gemm["parts"].values())
    table = CliRunner().invoke(cli, ["predictors", "evaluate", "--source", "profile-dir", "--path", str(path),
                                     "--family", "gemm", "--by", "dtype"])
    assert table.exit_code == 0 and "  dtype=" in table.output
    kv = CliRunner().invoke(cli, ["predictors", "evaluate", "--source", "profile-dir", "--path", str(path),
                                  "--family", "attention_decode", "--by", "kv_dtype", "--json"])
    assert kv.exit_code == 0, kv.output
    decode = json.loads(kv.output)["attention_decode"]
    assert set(decode["parts"]) == {"bf16"} and decode["parts"]["bf16"]["n_test"] == decode["n_test"]


def test_breakdown_by_kv_dtype_reads_the_kv_cache_column():
    import pandas as pd

    from frontier_dag.predictors.evaluation import _breakdown_key

    rows = pd.DataFrame({"dtype": ["bf16", "bf16"], "kv_dtype": ["fp8", "bf16"]})
    assert list(_breakdown_key(rows, "kv_dtype")) == ["fp8", "bf16"]
    assert list(_breakdown_key(rows, "dtype")) == ["bf16", "bf16"]
    assert list(_breakdown_key(rows[["dtype"]], "kv_dtype")) == ["-", "-"]  # a family without a KV cache
