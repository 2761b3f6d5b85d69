"""Every GPU system of aiconfigurator-core's kernel tables, for every engine it has tables
for: the predictors fit, evaluate on the grouped split and simulate the example. About
two to four minutes per system and engine on two cores (28 pairs), so ``-m slow``:

    python -m pytest tests/predictors/test_every_system.py -m slow -n 2

The systems the package lists without tables simulate with the roofline and say why
their tables cannot be fitted. b200_sxm's vLLM set runs in the default tests
(``test_blackwell.py``); the accuracy figures of docs/predictors.md come from
``benchmarks/system_accuracy.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.predictors.catalog import catalog

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "colocated_llama3_8b.yaml"
SYSTEMS = catalog()
PAIRS = [(s.name, e.engine) for s in SYSTEMS for e in s.engines if e.families]
WITHOUT_TABLES = [s.name for s in SYSTEMS if not s.has_tables]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def simulate(tmp_path, *overrides: str) -> dict:
    out = tmp_path / "run"
    sets = [item for o in ("workload.num_requests=20", *overrides) for item in ("--set", o)]
    result = invoke("simulate", str(EXAMPLE), *sets, "--no-progress", "--out", str(out))
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text())


def test_the_catalog_has_every_system():
    assert len(SYSTEMS) == 14 and len(PAIRS) == 28 and len(WITHOUT_TABLES) == 4


@pytest.mark.slow
@pytest.mark.parametrize(("system", "engine"), PAIRS, ids=[f"{s}-{e}" for s, e in PAIRS])
def test_system_fits_evaluates_and_simulates(system, engine, tmp_path):
    fit = invoke("predictors", "fit", "--source", "aiconfigurator", "--system", system, "--backend", engine, "--json")
    assert fit.exit_code == 0, fit.output
    families = json.loads(fit.output)["families"]
    assert {"attention_prefill", "attention_decode", "gemm", "all_reduce"} <= set(families)
    evaluate = invoke("predictors", "evaluate", "--source", "aiconfigurator", "--system", system, "--backend", engine,
                      "--split", "grouped", "--json")
    assert evaluate.exit_code == 0, evaluate.output
    scores = json.loads(evaluate.output)
    assert scores and all(s["n_test"] > 0 and math.isfinite(s["median_ape"]) for s in scores.values())
    summary = simulate(tmp_path, f"hardware={system}", f"predictor.backend={engine}")
    assert summary["num_completed"] == 20 and summary["predictor_sources"].get("rf", 0) > 0


@pytest.mark.slow
@pytest.mark.parametrize("system", WITHOUT_TABLES)
def test_system_without_tables_simulates_on_the_roofline(system, tmp_path):
    fit = invoke("predictors", "fit", "--source", "aiconfigurator", "--system", system)
    assert fit.exit_code == 2 and "ships no tables" in fit.output
    summary = simulate(tmp_path, f"hardware={system}", "predictor.source=roofline")
    assert summary["num_completed"] == 20 and set(summary["predictor_sources"]) == {"roofline"}
