"""The Python API: docs/api.md's walk-through runs as written, and the API gives the CLI's
numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import frontier_dag as fd
from frontier_dag.cli.main import cli
from frontier_dag.config.run import load_run_config
from frontier_dag.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
ROOFLINE = {"predictor.source": "roofline"}


def test_the_walk_through_in_docs_api_md_runs(monkeypatch):
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "api.md").read_text(), re.M | re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)  # noqa: S102 - the doc's own code
    assert namespace["run"].summary["num_completed"] == 200


def test_simulate_gives_the_cli_numbers_and_writes_the_same_run(tmp_path):
    config = ROOT / "examples" / "colocated_llama3_8b.yaml"
    sets = {**ROOFLINE, "workload.num_requests": 60}
    run = fd.simulate(config, set=sets, out=tmp_path / "api")
    result = CliRunner().invoke(cli, ["simulate", str(config), "--out", str(tmp_path / "cli"), "--json", "--no-progress",
                                      *[arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]])
    assert result.exit_code == 0, result.output
    cli_summary = json.loads(result.output)
    for key in ("wall_time_s",):
        cli_summary.pop(key), run.summary.pop(key)
    assert json.loads(json.dumps(run.summary, default=float)) == cli_summary
    assert (tmp_path / "api" / "summary.json").is_file() and run.directory == tmp_path / "api"


def test_configs_as_mappings_and_run_configs_and_string_overrides():
    data = load_run_config(ROOT / "examples" / "colocated_llama3_8b.yaml").model_dump(mode="json", exclude_none=True)
    data["predictor"] = {"source": "roofline"}
    from_dict = fd.critical_path(data, set={"scheduler.max_num_seqs": 16})
    from_config = fd.critical_path(load_run_config(ROOT / "examples" / "colocated_llama3_8b.yaml"),
                                   set=["predictor.source=roofline", "scheduler.max_num_seqs=16"])
    assert from_dict["iteration_time_us"] == from_config["iteration_time_us"] > 0
    larger = fd.critical_path(data, set={"scheduler.max_num_seqs": 256})
    assert larger["iteration_time_us"] > from_dict["iteration_time_us"]


def test_a_bad_override_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="scheduler.max_num_seqs"):
        fd.simulate(ROOT / "examples" / "colocated_llama3_8b.yaml", set={"scheduler.max_num_seqs": -3})


def test_the_package_exports_the_api_lazily():
    assert set(fd.API) <= set(dir(fd)) | set(fd.__all__)
    assert fd.simulate.__module__ == "frontier_dag.api"
    with pytest.raises(AttributeError):
        fd.nonsense  # noqa: B018


def test_a_run_beyond_the_models_context_is_simulated_and_says_so():
    config = ROOT / "examples" / "colocated_llama3_8b.yaml"
    sets = {**ROOFLINE, "workload": {"num_requests": 5, "arrival": {"kind": "poisson", "rate_per_s": 5.0},
                                     "prompt_tokens": {"kind": "fixed", "value": 140_000},
                                     "output_tokens": {"kind": "fixed", "value": 4}}}
    with pytest.warns(fd.FrontierDagWarning, match="beyond llama-3.1-8b's context of 131,072 tokens"):
        run = fd.simulate(config, set=sets)
    assert run.summary["num_completed"] == 5
    assert "simulates them as if the context were longer" in run.summary["warnings"]
    assert "beyond llama-3.1-8b's context" in fd.critical_path(config, set=sets)["warnings"][0]
