"""Calibration (``frontier-dag calibrate``, ``validate silicon --calibration`` and
``--hold-out model``) and the noise floor of rows measured twice.

The fixture's rows are made here: Qwen3-32B on TensorRT-LLM, two H100s per worker, short
prompts and outputs (a second or less each to simulate), aggregated at 1 and 16 clients
and disaggregated (one prefill and one decode worker) at 4, with the "measured" TTFT and
TPOT simulated with known overheads. Calibration must find those overheads again.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.config.overheads import PARAMETERS, EngineOverheads, read_overheads_file
from frontier_dag.validation import holdout
from frontier_dag.validation.noise import noise_floor, repeated
from frontier_dag.validation.runner import simulate_row
from frontier_dag.validation.silicon import parse_row

TRUTH = EngineOverheads(request_us=40000.0, handoff_us=30000.0, step_us=600.0, step_per_sequence_us=20.0)
BASE = {"backend": "trtllm", "backend_version": "1.0.0rc3", "model_path": "Qwen/Qwen3-32B", "system": "h100_sxm",
        "mode": "agg", "isl": 512, "osl": 32, "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8", "tp_size": 2,
        "pp_size": 1, "moe_tp_size": 1, "moe_ep_size": 1}
PD = {**BASE, "mode": "disagg", "prefill_tp_size": 2, "decode_tp_size": 2, "prefill_num_workers": 1,
      "decode_num_workers": 1}
ROWS = [{**BASE, "id": "agg_c1", "silicon_data_source": "silicon_concurrency=1"},
        {**BASE, "id": "agg_c16", "silicon_data_source": "silicon_concurrency=16"},
        {**PD, "id": "pd_c4", "silicon_data_source": "silicon_concurrency=4"}]


@pytest.fixture(scope="module")
def measured_csv(tmp_path_factory):
    """The fixture rows with TTFT and TPOT simulated with ``TRUTH`` (2 rounds)."""
    records = []
    for i, rec in enumerate(ROWS):
        sim = simulate_row(parse_row(i, {**rec, "silicon_ttft_ms": 1.0, "silicon_tpot_ms": 1.0}, moe=False),
                           rounds=2, overheads=TRUTH)
        assert sim["status"] == "ok", sim["reason"]
        records.append({**rec, "silicon_ttft_ms": sim["sim_ttft_ms"], "silicon_tpot_ms": sim["sim_tpot_ms"]})
    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def test_calibration_recovers_the_overheads_the_rows_were_simulated_with(measured_csv, tmp_path):
    out = tmp_path / "engine.yaml"
    result = CliRunner().invoke(cli, ["calibrate", str(measured_csv), "--out", str(out), "--workers", "1",
                                      "--rounds", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    fitted = read_overheads_file(out)
    entry = fitted.engines["trtllm"]
    for name in PARAMETERS:
        assert getattr(entry, name) == pytest.approx(getattr(TRUTH, name), rel=0.05), (name, entry)
    assert fitted.fitted["trtllm"]["rows"] == 3
    assert fitted.fitted["trtllm"]["after"]["ttft_mape"] < 0.01
    assert "trtllm" in result.output and "wrote" in result.output

    # the file as a config's key, and beside the uncalibrated simulation in validate silicon
    report = CliRunner().invoke(cli, ["validate", "silicon", "--csv", str(measured_csv), "--system", "h100_sxm",
                                      "--calibration", str(out), "--workers", "1", "--rounds", "2", "--json",
                                      "--no-progress"])
    assert report.exit_code == 0, report.output
    shared = json.loads(report.output)["comparison"]["all"]["shared"]
    assert shared["rows"] == 3
    assert shared["calibrated"]["ttft_mape"] < 0.01 and shared["calibrated"]["tpot_mape"] < 0.01
    assert shared["frontier_dag"]["ttft_mape"] > 0.2  # the kernels alone miss the overheads
    # leave one model out: the fixture has one model, so nothing to fit on (said per row)
    lomo = CliRunner().invoke(cli, ["validate", "silicon", "--csv", str(measured_csv), "--system", "h100_sxm",
                                    "--hold-out", "model", "--iterations", "1", "--workers", "1", "--rounds", "2",
                                    "--no-progress", "--out", str(tmp_path / "rows.csv")])
    assert lomo.exit_code == 0, lomo.output
    written = pd.read_csv(tmp_path / "rows.csv")
    assert set(written["lomo_status"]) == {"no_entry"}
    assert written["lomo_reason"].str.contains("no other model of trtllm on h100_sxm").all()
    # an existing file is not overwritten
    again = CliRunner().invoke(cli, ["calibrate", str(measured_csv), "--out", str(out), "--workers", "1"])
    assert again.exit_code == 2 and "exists" in again.output


def test_calibrate_needs_rows():
    result = CliRunner().invoke(cli, ["calibrate", "--out", "x.yaml"])
    assert result.exit_code == 2 and "ROWS_CSV" in result.output and "--system" in result.output


def test_leaving_one_model_out_fits_on_the_other_models_of_the_engine(monkeypatch):
    """Which rows each held-out model's overheads are fitted on, and what a model alone in its
    engine gets; the fit and the simulation are stood in for."""
    rows = [parse_row(i, {**BASE, "id": f"r{i}", "model_path": model, "backend": backend,
                          "silicon_data_source": "silicon_concurrency=2", "silicon_ttft_ms": 10.0,
                          "silicon_tpot_ms": 1.0}, moe=False)
            for i, (model, backend) in enumerate([("a", "vllm"), ("b", "vllm"), ("b", "vllm"), ("c", "sglang")])]
    fitted_on = {}

    def fake_fit(train, key, **_):
        fitted_on[key] = sorted(r.index for r in train)
        return SimpleNamespace(overheads=EngineOverheads(request_us=float(len(train))))

    def fake_run(jobs, **_):
        return [{"status": "ok", "reason": "", "sim_ttft_ms": o.request_us, "sim_tpot_ms": 1.0,
                 "ttft_ape": 0.0, "tpot_ape": 0.0} for _, o in jobs]

    monkeypatch.setattr(holdout, "fit_overheads", fake_fit)
    monkeypatch.setattr(holdout, "run_jobs", fake_run)
    out = holdout.leave_one_model_out(rows)
    assert fitted_on == {"vllm without a": [1, 2], "vllm without b": [0]}
    assert out[0]["lomo_sim_ttft_ms"] == 2.0 and out[1]["lomo_sim_ttft_ms"] == 1.0
    assert out[3]["lomo_status"] == "no_entry" and "no other model of sglang" in out[3]["lomo_reason"]


def test_noise_floor_of_rows_measured_twice():
    def row(i, ttft, tpot, concurrency=4, version="1.0.0rc3"):
        return parse_row(i, {**BASE, "id": f"r{i}", "backend_version": version,
                             "silicon_data_source": f"silicon_concurrency={concurrency}",
                             "silicon_ttft_ms": ttft, "silicon_tpot_ms": tpot}, moe=False)

    rows = [row(0, 100.0, 10.0), row(1, 300.0, 10.0),  # measured twice: TTFT 100 and 300 ms
            row(2, 50.0, 5.0, concurrency=8), row(3, 50.0, 5.0, concurrency=8),  # one measurement copied
            row(4, 80.0, 8.0, version="1.2")]  # another version: another configuration
    assert [[r.index for r in g] for g in repeated(rows)] == [[0, 1]]
    floor = noise_floor(rows)
    # the mean (200 ms) is 100% off the first and 33% off the second
    assert floor["configurations"] == 1 and floor["rows"] == 2
    assert floor["ttft_mape"] == pytest.approx((1.0 + 1 / 3) / 2)
    assert floor["tpot_mape"] == 0.0
    assert floor["partitions"]["backend"]["trtllm"]["ttft_max_ape"] == pytest.approx(1.0)


def test_a_calibration_file_reads_back(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"engines": {"vllm": TRUTH.model_dump()}, "fitted": {"vllm": {"rows": 3}}}))
    assert read_overheads_file(path).entry("vllm", "0.12.0") == TRUTH


def test_rows_that_cannot_be_simulated_give_a_clear_error(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame([{**ROWS[0], "silicon_data_source": "", "silicon_ttft_ms": 100.0, "silicon_tpot_ms": 10.0}]) \
        .to_csv(path, index=False)
    result = CliRunner().invoke(cli, ["calibrate", str(path), "--out", str(tmp_path / "e.yaml"), "--workers", "1",
                                      "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "none of the rows can be simulated" in result.output
    assert not (tmp_path / "e.yaml").exists()


def test_a_simulation_asked_for_twice_runs_once(monkeypatch):
    """The calibration asks for the same (row, overheads) more than once (the rows without
    overheads that validate silicon has simulated, each leave-one-model-out fit's first
    Jacobian): it is simulated once and the record handed back again, as a copy."""
    from frontier_dag.validation import runner

    calls = []

    def fake(row, rounds, phase, benchmark_rounds, overheads):
        calls.append((row.id, overheads))
        return {"status": "ok", "id": row.id, "sim_ttft_ms": 1.0 + (overheads.request_us if overheads else 0.0)}

    monkeypatch.setattr(runner, "simulate_row", fake)
    monkeypatch.setattr(runner, "_DONE", {})
    rows = [parse_row(i, {**BASE, "id": f"r{i}", "silicon_data_source": "silicon_concurrency=2",
                          "silicon_ttft_ms": 10.0, "silicon_tpot_ms": 1.0}, moe=False) for i in range(2)]
    moved = EngineOverheads(request_us=5.0)
    first = runner.run_jobs([(rows[0], None), (rows[1], moved)], workers=1)
    first[0]["changed"] = True  # a caller's change does not reach the memo
    again = runner.run_jobs([(rows[1], moved), (rows[0], None), (rows[0], moved)], workers=1, rounds=4)
    assert [r["sim_ttft_ms"] for r in again] == [6.0, 1.0, 6.0] and "changed" not in again[1]
    assert calls == [("r0", None), ("r1", moved), ("r0", moved)]
    runner.run_jobs([(rows[0], None)], workers=1, rounds=2)  # other rounds: another simulation
    assert len(calls) == 4


def test_a_fit_simulates_its_rows_with_the_clients_phase(monkeypatch):
    """``calibrate --phase spread`` fits with the clients spread, every simulation of the fit."""
    from frontier_dag.validation import calibrate as fitting

    phases = []

    def fake_run(jobs, *, phase, **_):
        phases.append(phase)
        return [{"status": "ok", "sim_ttft_ms": 10.0 + (o.request_us * 1e-3 if o else 0.0), "sim_tpot_ms": 1.0}
                for _, o in jobs]

    monkeypatch.setattr(fitting, "run_jobs", fake_run)
    rows = [parse_row(0, {**BASE, "id": "r0", "silicon_data_source": "silicon_concurrency=2",
                          "silicon_ttft_ms": 50.0, "silicon_tpot_ms": 1.0}, moe=False)]
    fit = fitting.fit_overheads(rows, "trtllm", phase="spread", iterations=3)
    assert set(phases) == {"spread"} and len(phases) >= 2
    assert fit.overheads.request_us == pytest.approx(40000.0, rel=0.01)  # TTFT linear in it: found at once


def test_validate_picks_rows_across_concurrencies(measured_csv):
    """``--per-partition 1 --pick concurrency``: each partition at its lowest concurrency;
    ``--per-partition 2``: the aggregated partition at 1 and 16 clients."""
    def rows(*args):
        result = CliRunner().invoke(cli, ["validate", "silicon", "--csv", str(measured_csv), "--system", "h100_sxm",
                                          "--convert-only", "--json", "--no-progress", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["rows_total"]

    assert rows("--per-partition", "1", "--pick", "concurrency") == 2
    assert rows("--per-partition", "2", "--pick", "concurrency") == 3


def test_a_fit_says_when_it_cannot_carry_to_other_rows():
    """Fewer rows than parameters, or a per-request constant or handoff of seconds (what a fit
    on two disaggregated rows gave: 5.0 s per request, 7.1 s handoff), are warned about, in
    the file's record of the fit too; a fit on enough rows with plausible values is not."""
    from frontier_dag.validation.calibrate import Fit

    mapes = {"ttft_mape": 0.1, "tpot_mape": 0.1}
    free = ("request_us", "handoff_us", "step_us", "step_per_sequence_us")
    few = Fit("trtllm", EngineOverheads(request_us=4_992_708.6, handoff_us=7_130_623.3, step_per_sequence_us=151.3),
              2, mapes, mapes, 9, free)
    assert len(few.warnings) == 3
    assert "4 parameters fitted on 2 row(s)" in few.warnings[0] and "--per-partition" in few.warnings[0]
    assert "request_us 5.0 s" in few.warnings[1] and "handoff_us 7.1 s" in few.warnings[2]
    assert few.summary()["warnings"] == few.warnings
    fine = Fit("vllm", EngineOverheads(request_us=30_000.0, step_us=150.0), 8, mapes, mapes, 9, free[:1] + free[2:])
    assert fine.warnings == [] and "warnings" not in fine.summary()
