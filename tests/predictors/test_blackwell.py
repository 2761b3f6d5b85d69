"""A Blackwell system end to end in the default run: b200_sxm's vLLM kernel tables fitted
(about 40 s of CPU on first use, then loaded from the cache), the example simulated on
it, its Blackwell precisions priced, and one of its silicon rows checked for coverage.

Every other system and engine fits, evaluates and simulates in ``test_every_system.py``
(``-m slow``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.config import load_hardware
from frontier_dag.predictors.fitted_set import fitted_set
from frontier_dag.predictors.sources import open_source

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "colocated_llama3_8b.yaml"


@pytest.fixture(scope="module")
def b200():
    fitted, _ = fitted_set(open_source("aiconfigurator", system="b200_sxm", backend="vllm"))
    return fitted


def test_b200_simulates_the_example(b200, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["simulate", str(EXAMPLE), "--set", "hardware=b200_sxm", "--set",
                                      "workload.num_requests=40", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_completed"] == 40 and summary["predictor_out_of_range"] == 0
    # GEMMs, attention and all-reduce from b200's tables; only the elementwise ops (no table) on the roofline
    sources, by_family = summary["predictor_sources"], summary["predictor_prices_by"]["main"]
    assert sources["rf"] == sum(n for family, n in by_family.items() if family != "elementwise") > 0
    assert sources.get("roofline", 0) == by_family["elementwise"]
    assert 0 < summary["tpot_ms"]["mean"] < 50


def test_b200_prices_its_precisions_from_its_tables(b200):
    hw = load_hardware("b200_sxm")
    gemm = b200.models["gemm"]
    big = {"m": [8192] * 4, "n": [8192] * 4, "k": [8192] * 4, "dtype": ["bf16", "fp8", "fp8_block", "fp4"]}
    latency, _, out_of_range = gemm.predict(big, hw)
    assert not out_of_range.any()
    bf16, fp8, _, fp4 = latency
    assert fp4 < 0.5 * min(bf16, fp8)  # the FP4 tensor cores (vLLM's per-tensor FP8 kernel is no faster than BF16 here)
    import pandas as pd

    from frontier_dag.predictors.aiconfigurator import find_table, package_data_root

    table = pd.read_parquet(find_table(package_data_root() / "b200_sxm", "gemm", "vllm", "gemm_perf.parquet"))
    measured = table.query("m == 8192 and n == 8192 and k == 8192 and gemm_dtype == 'nvfp4'")["latency"].iloc[0]
    assert fp4 == pytest.approx(measured * 1e3, rel=0.05)
    moe = b200.models["moe_grouped_gemm"]
    dtypes = ["bf16", "fp4", "w4a16_mxfp4", "w4a8_mxfp4_mxfp8"]
    loads = [np.full(16, 64, dtype=np.int64)] * 4  # 256 tokens, top-4, 16 local experts
    query = {"num_tokens": [256] * 4, "hidden": [2880] * 4, "inter": [2880] * 4, "num_experts": [128] * 4,
             "topk": [4] * 4, "ep": [8] * 4, "moe_tp": [1] * 4, "dtype": dtypes, "expert_tokens": loads}
    latency, _, out_of_range = moe.predict(query, hw)
    assert np.isfinite(latency).all() and (latency > 0).all()
    assert latency[dtypes.index("fp4")] < latency[dtypes.index("bf16")]


def test_b200_silicon_rows_convert_without_reporting_errors(b200, tmp_path):
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(cli, ["validate", "silicon", "--system", "b200_sxm", "--backend", "vllm",
                                      "--model", "Llama-3.1-70B", "--limit", "2", "--convert-only", "--no-progress",
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rows_total"] == 2 and report["rows_simulated"] == 2
    assert not any("mape" in key or "ape" in key for key in report)
    import pandas as pd

    columns = set(pd.read_csv(out).columns)
    assert not any("ttft" in c or "tpot" in c or c.endswith("_ape") for c in columns)
