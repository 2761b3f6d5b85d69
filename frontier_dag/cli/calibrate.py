"""``frontier-dag calibrate``: fit an engine's overheads to measured rows by simulating them."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from frontier_dag.cli.options import check_out_file, json_option, overwrite_option


@click.command()
@click.argument("rows_csv", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--system", help="Only rows of this GPU system (needed without ROWS_CSV: the package's rows of it).")
@click.option("--backend", type=click.Choice(["vllm", "sglang", "trtllm"]), help="Only rows of this engine.")
@click.option("--model", help="Only rows whose model path contains this (case-insensitive).")
@click.option("--exclude-model", "exclude", multiple=True,
              help="Leave out rows whose model path contains this (repeatable): to predict that model unseen.")
@click.option("--mode", type=click.Choice(["agg", "disagg"]), help="Only aggregated or disaggregated rows.")
@click.option("--per-partition", type=click.IntRange(min=1), metavar="N",
              help="Only the N rows of each system, engine, mode and model with the fewest tokens to simulate.")
@click.option("--pick", type=click.Choice(["cheapest", "concurrency"]), default="cheapest", show_default=True,
              help="Which N rows --per-partition keeps: the cheapest, or the cheapest at each of N concurrencies "
                   "spread from the partition's lowest to its highest (what a calibration needs).")
@click.option("--by", type=click.Choice(["engine", "version"]), default="engine", show_default=True,
              help="One entry per engine (vllm), or per engine version (vllm 0.12.0).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The overheads file to write (YAML), for a config's engine_overheads key.")
@overwrite_option
@click.option("--workers", type=int, default=2, show_default=True, help="Processes simulating rows in parallel.")
@click.option("--rounds", type=int, default=None, help="Requests per row as rounds of the concurrency (default 4).")
@click.option("--phase", type=click.Choice(["burst", "spread", "dataset"]), default="burst", show_default=True,
              help="How the simulated clients start (as validate silicon --phase); use the file with the same.")
@click.option("--iterations", type=click.IntRange(min=1), default=6, show_default=True,
              help="The most fitting steps per entry (each simulates the rows a few times).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Say how each step went.")
@json_option
def calibrate(rows_csv, system, backend, model, exclude, mode, per_partition, pick, by, out, overwrite, workers, rounds,
              phase, iterations, progress, as_json) -> None:
    """Fit the engine's time outside the kernels to measured rows: a per-request constant,
    a prefill-to-decode handoff and host time per step (a constant and a term per sequence),
    per engine, by simulating the rows (docs/validation.md, "Calibration"). ROWS_CSV has the
    columns of aiconfigurator-core's silicon sample (docs/validation.md, "Rows"); without
    it, the package's rows of --system."""
    from frontier_dag.errors import ConfigError
    from frontier_dag.validation.calibrate import calibrate as fit
    from frontier_dag.validation.convert import ROUNDS
    from frontier_dag.validation.models import is_moe
    from frontier_dag.validation.silicon import PICKS, read_rows

    if rows_csv is None and system is None:
        raise ConfigError("calibrate: give the measured rows (ROWS_CSV) or --system for the package's rows of a system")
    check_out_file(out, overwrite, inputs=(Path(rows_csv),) if rows_csv else ())
    rows = read_rows(rows_csv, system=system, backend=backend, model=model, mode=mode, is_moe=is_moe)
    rows = [r for r in rows if not any(x.lower() in r.model_path.lower() for x in exclude)]
    if per_partition:
        rows = PICKS[pick](rows, per_partition)
    if not rows:
        raise ConfigError("calibrate: no rows match the filters")
    say = (lambda line: click.echo(line, err=True)) if progress and not as_json else None
    command = shlex.join(["frontier-dag", "calibrate", *sys.argv[2:]]) if sys.argv[1:2] == ["calibrate"] else ""
    overheads, fits = fit(rows, by=by, command=command, progress=say, workers=workers, rounds=rounds or ROUNDS,
                          phase=phase, iterations=iterations)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(overheads.to_yaml())
    if as_json:
        click.echo(json.dumps({"out": out, "engines": {f.key: {"overheads": f.overheads.model_dump(), **f.summary()}
                                                          for f in fits}}, indent=2))
        return
    click.echo(f"{'entry':<26}{'rows':>5}{'request ms':>11}{'handoff ms':>11}{'step us':>9}{'us/seq':>8}"
               f"{'TTFT MAPE':>18}{'TPOT MAPE':>18}")
    for f in fits:
        o = f.overheads
        handoff = f"{o.handoff_us / 1e3:>11.1f}" if "handoff_us" in f.free else f"{'-':>11}"
        click.echo(f"{f.key:<26}{f.rows:>5}{o.request_us / 1e3:>11.1f}{handoff}{o.step_us:>9.0f}"
                   f"{o.step_per_sequence_us:>8.1f}{_change(f, 'ttft'):>18}{_change(f, 'tpot'):>18}")
    for f in fits:
        for warning in f.warnings:
            click.secho(f"warning: {warning}", fg="yellow", err=True)
    click.echo(f"wrote {out} (errors on the rows fitted on; hold-out figures: frontier-dag validate silicon "
               f"--calibration {out})")


def _change(fit, metric: str) -> str:
    return f"{fit.before[f'{metric}_mape']:.1%} -> {fit.after[f'{metric}_mape']:.1%}"
