"""``frontier-dag validate silicon``: replay measured serving runs and report the errors."""

from __future__ import annotations

import json
from pathlib import Path

import click

from frontier_dag.cli.options import check_out_file, json_option, overwrite_option


@click.group()
def validate() -> None:
    """Compare simulations with measured end-to-end runs."""


@validate.command()
@click.option("--system", required=True, help="GPU system of the rows, e.g. h100_sxm, h200_sxm.")
@click.option("--backend", type=click.Choice(["vllm", "sglang", "trtllm"]), help="Only rows of this engine.")
@click.option("--model", help="Only rows whose model path contains this (case-insensitive).")
@click.option("--mode", type=click.Choice(["agg", "disagg"]), help="Only aggregated or disaggregated rows.")
@click.option("--limit", type=int, help="Only the first N rows (after the filters).")
@click.option("--per-partition", type=click.IntRange(min=1), metavar="N",
              help="Only the N rows of each system, engine, mode and model with the fewest tokens to simulate "
                   "(concurrency x (ISL + OSL)): a quick look at every partition.")
@click.option("--pick", type=click.Choice(["cheapest", "concurrency"]), default="cheapest", show_default=True,
              help="Which N rows --per-partition keeps: the cheapest, or the cheapest at each of N concurrencies "
                   "spread from the partition's lowest to its highest (what a calibration needs).")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False),
              help="A silicon CSV (default: systems/silicon_sample.csv of aiconfigurator-core).")
@click.option("--workers", type=int, default=2, show_default=True, help="Processes simulating rows in parallel.")
@click.option("--rounds", type=int, default=None, help="Requests per row as rounds of the concurrency (default 4).")
@click.option("--benchmark-rounds", type=click.IntRange(min=1), default=None,
              help="Rounds of the concurrency the measured benchmark sent (default 50, as aiconfigurator's "
                   "benchmark script); the simulated rounds after the first stand for those not simulated.")
@click.option("--phase", type=click.Choice(["burst", "spread", "dataset"]), default="burst", show_default=True,
              help="Clients' first requests all at once (burst, as the benchmarks start), or spread over one "
                   "simulated request duration with the first round left out (a diagnostic), or as the benchmark "
                   "runs: a warm-up, then prompts from a reused dataset of 100 with the prefix cache on "
                   "(dataset; docs/validation.md).")
@click.option("--baseline", type=click.Choice(["aiconfigurator"]),
              help="Also estimate every row with this peer (aiconfigurator's own estimator; needs "
                   "pip install 'frontier-dag[baseline]') and report its errors beside the simulation's.")
@click.option("--coverage-only", is_flag=True,
              help="Report only which rows were simulated (rows, simulated, share, and why not), no latency or "
                   "error: for the systems kept as an untouched check of the method (all but h100_sxm and h200_sxm).")
@click.option("--convert-only", is_flag=True,
              help="Do not simulate: convert each row to its config, trace it and price one representative "
                   "iteration with its predictors (minutes for a whole system); implies --coverage-only.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False),
              help="Also simulate every row with its engine's entry of this overheads file (frontier-dag calibrate; "
                   "fit it on other rows: another system's) and report its errors beside the uncalibrated ones.")
@click.option("--hold-out", "hold_out", type=click.Choice(["model"]),
              help="Also simulate each model's rows with overheads fitted on the other models' rows of its engine "
                   "(leave one model out; slow: one fit per model and engine) and report them beside the others.")
@click.option("--iterations", type=click.IntRange(min=1), default=6, show_default=True,
              help="The most fitting steps of each --hold-out fit (as frontier-dag calibrate --iterations).")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Write one line per row to this CSV.")
@overwrite_option
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@json_option
def silicon(system, backend, model, mode, limit, per_partition, pick, csv_path, workers, rounds, benchmark_rounds, phase,
            baseline, calibration, hold_out, iterations, coverage_only, convert_only, out, overwrite, progress, as_json) -> None:
    """Simulate the measured runs of SYSTEM (aiconfigurator-core's silicon sample) and report
    the mean and median absolute percentage errors of TTFT and TPOT, overall and per
    system, backend, mode and model, the rows that could not be simulated, and the noise floor
    (configurations measured twice); ``--coverage-only``: only which rows were simulated. With
    --baseline, the peer's estimate of the same rows beside them; with --calibration or
    --hold-out, calibrated estimates (docs/validation.md)."""
    from frontier_dag.errors import ConfigError
    from frontier_dag.validation.convert import BENCHMARK_ROUNDS, ROUNDS
    from frontier_dag.validation.coverage import convert_rows, coverage_record
    from frontier_dag.validation.models import is_moe
    from frontier_dag.validation.noise import format_noise, noise_floor
    from frontier_dag.validation.report import (
        format_coverage,
        format_reasons,
        format_table,
        summarize_records,
    )
    from frontier_dag.validation.runner import run_rows
    from frontier_dag.validation.silicon import PICKS, read_rows

    if (baseline or calibration or hold_out) and (coverage_only or convert_only):
        raise click.UsageError("--baseline, --calibration and --hold-out report errors against the measured rows; "
                               "--coverage-only and --convert-only report none: use one or the other")
    if out:
        check_out_file(out, overwrite, inputs=(Path(csv_path),) if csv_path else ())
    overheads = None
    if calibration:
        from frontier_dag.config.overheads import read_overheads_file

        overheads = read_overheads_file(calibration)
    baseline_version = None
    if baseline:  # before any row is simulated: a missing package is an error, not hours later
        from frontier_dag.validation import baseline as peer

        baseline_version = peer.require(baseline)
    rows = read_rows(csv_path, system=system, backend=backend, model=model, mode=mode, limit=limit, is_moe=is_moe)
    if per_partition:
        rows = PICKS[pick](rows, per_partition)
    if not rows:
        import pandas as pd

        from frontier_dag.config.suggest import did_you_mean
        from frontier_dag.validation.silicon import default_csv

        systems = sorted(pd.read_csv(csv_path or default_csv(), usecols=["system"])["system"].astype(str).unique())
        hint = did_you_mean(system, systems) if system not in systems else ""
        raise ConfigError(f"no silicon rows match --system {system}"
                          + (f" --backend {backend}" if backend else "") + (f" --model {model}" if model else "")
                          + (hint or f"; the rows are of {', '.join(systems)}"))
    peer_records: dict[int, dict] = {}
    if baseline:
        from tqdm import tqdm

        with tqdm(total=len(rows), unit="row", desc=baseline, dynamic_ncols=True, leave=False,
                  disable=not progress or as_json) as peer_bar:
            peer_records = peer.estimate_rows(rows, is_moe, progress=lambda _: peer_bar.update(1))
    bar = None
    if progress and not as_json:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), unit="row", desc=f"validate {system}", dynamic_ncols=True, leave=False)

    coverage_only = coverage_only or convert_only
    keep = coverage_record if coverage_only else dict
    done: list[dict] = []

    def tick(record: dict) -> None:
        if bar is not None:
            bar.update(1)
        record.update(peer_records.get(record["index"], {}))
        done.append(keep(record))
        if out and len(done) % 50 == 0:  # a long run can be read while it goes on
            _write(done, out)

    if convert_only:
        records = convert_rows(rows, progress=tick)
    else:
        records = run_rows(rows, workers=workers, rounds=rounds or ROUNDS, phase=phase, progress=tick,
                           benchmark_rounds=benchmark_rounds or BENCHMARK_ROUNDS)
    if bar is not None:
        bar.close()
    for record in records:
        record.update(peer_records.get(record["index"], {}))
    run = {"workers": workers, "rounds": rounds or ROUNDS, "benchmark_rounds": benchmark_rounds or BENCHMARK_ROUNDS,
           "phase": phase}
    estimates = []
    if calibration or hold_out:
        from frontier_dag.validation import holdout

        extra: dict[int, dict] = {}
        if calibration:
            estimates.append(holdout.CALIBRATED)
            extra = holdout.with_calibration(rows, overheads, calibration, **run)
        if hold_out:
            estimates.append(holdout.MODEL_HELD_OUT)
            say = (lambda line: click.echo(line, err=True)) if progress and not as_json else None
            lomo = holdout.leave_one_model_out(rows, iterations=iterations, progress=say, **run)
            extra = {i: {**extra.get(i, {}), **lomo.get(i, {})} for i in {*extra, *lomo}}
        for record in records:
            record.update(extra.get(record["index"], {}))
    records = [keep(r) for r in records]
    report = summarize_records(records, errors=not coverage_only)
    if not coverage_only:  # measured against measured: not for the systems kept untouched
        report["noise_floor"] = noise_floor(read_rows(csv_path, system=system, backend=backend, model=model,
                                                      mode=mode, is_moe=is_moe))
    if baseline:
        estimates.append(peer.AICONFIGURATOR)
        report["baseline"] = peer.describe(baseline_version, rows)
    if estimates:
        from frontier_dag.validation.compare import SIMULATION, compare

        estimates = [SIMULATION, *estimates]
        report["comparison"] = compare(records, estimates)
    if out:
        _write(records, out)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(format_coverage(report) if coverage_only else format_table(report))
    click.echo(format_reasons(report, done="converted" if convert_only else "simulated"))
    if not coverage_only:
        click.echo(format_noise(report["noise_floor"]))
    if estimates:
        from frontier_dag.validation.compare import format_comparison, format_not_covered

        named = {"frontier_dag": "frontier-dag", "calibrated": f"frontier-dag calibrated with {calibration}",
                 "model_held_out": "frontier-dag calibrated on the other models of the engine",
                 "aiconfigurator": f"{baseline} {baseline_version} (its {peer.DATA_VERSION} data)" if baseline else ""}
        click.echo("\n" + " beside ".join(named[est.key] for est in estimates[:0:-1])
                   + " beside frontier-dag on the same rows; errors on the rows all estimate ('both'):")
        click.echo("  " + ", ".join(f"{est.short}: {named[est.key]}" for est in estimates))
        click.echo(format_comparison(report["comparison"], estimates))
        for est in estimates[1:]:
            label = baseline if est.key == "aiconfigurator" else est.short
            click.echo(format_not_covered(report["comparison"], est, label))
    if out:
        click.echo(f"wrote {out}")


def _write(records: list[dict], out: str) -> None:
    import pandas as pd

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_csv(out, index=False)
