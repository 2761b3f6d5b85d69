"""``frontier-dag sweep`` and ``frontier-dag pareto``: design-space sweeps and their frontiers."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import click

from frontier_dag.cli.options import check_out_file, json_option, overwrite_option, set_option
from frontier_dag.errors import FrontierDagError


@click.command()
@click.argument("sweep_file", metavar="SWEEP.yaml", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Sweep directory to write.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run points on local processes or on a Ray cluster.")
@click.option("--address", default=None, help="Ray cluster to join (auto, ray://HOST:10001); default a local instance.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Points run at once (default: the CPUs here, or the Ray cluster's).")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out, skipping the points it holds (the same "
              "sweep file and --set overrides only).")
@click.option("--extend", is_flag=True, help="Like --resume, for a changed sweep file: run its points that --out does "
              "not hold and record the new sweep beside the old.")
@click.option("--retry-failed", is_flag=True, help="With --resume, run the failed points again.")
@click.option("--dry-run", is_flag=True, help="Count the points to run, prune and skip; simulate nothing.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@json_option
@set_option
def sweep(sweep_file, out, backend, address, workers, resume, extend, retry_failed, dry_run, progress, as_json,
          overrides) -> None:
    """Simulate every point of SWEEP.yaml (a base config and axes) and record each one's
    summary in DIR/results.parquet as it finishes. --set applies to the base config."""
    from frontier_dag.sweep import load_sweep, run_sweep

    if retry_failed and not (resume or extend):
        raise FrontierDagError("--retry-failed goes with --resume")
    spec = load_sweep(sweep_file, overrides)
    again = f"frontier-dag sweep {sweep_file} --out {out} --{'extend' if extend else 'resume'}"
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None  # a kill stops the points as Ctrl-C
    try:
        report = run_sweep(spec, Path(out), backend=backend, workers=workers, address=address, resume=resume,
                           extend=extend, retry_failed=retry_failed, progress=progress and not as_json,
                           dry_run=dry_run)
    except KeyboardInterrupt:
        click.echo(f"interrupted; continue with: {again}", err=True)
        sys.exit(130)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(format_report(report, dry_run))
    if report.interrupted:
        click.echo(f"interrupted; continue with: {again}", err=True)
        sys.exit(130)
    if as_json:
        for line in format_problems(report):
            click.echo(line, err=True)
    new = report.points - report.resumed
    if dry_run and report.untraced:
        raise FrontierDagError(f"the workflow of {report.untraced} point(s) does not trace (see above); fix the "
                               "sweep file")
    if new and (report.to_run if dry_run else report.ran) == 0:
        raise FrontierDagError(f"none of the {new} point(s) {'would run' if dry_run else 'ran'} (see the reasons "
                               "above); fix the sweep file")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def format_report(report, dry_run: bool = False) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report.counts.items())) or "nothing new"
    lines = [f"{report.points} points ({report.grid} combinations, {report.excluded} excluded by constraints, "
             f"{report.duplicates} duplicates); {report.resumed} already in {report.out}"]
    if dry_run:
        lines.append(f"would simulate {report.to_run}; before simulating: {counts}")
        return "\n".join(lines + format_problems(report))
    lines.append(f"this run: {counts} in {report.wall_s:,.1f} s")
    lines += format_problems(report)
    if not report.interrupted:
        lines.append(f"wrote {report.out}/results.parquet; frontier: frontier-dag pareto {report.out} --out pareto.svg")
    return "\n".join(lines)


def format_problems(report) -> list[str]:
    """Why points did not run, grouped by reason (the most frequent first)."""
    lines = []
    for group in report.problems:
        reason = group["reason"].splitlines()[0] if group["reason"] else ""
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
        n = group["points"]
        lines.append(f"  {group['status']} ({n} point{'s' if n > 1 else ''}): {reason}")
    return lines


@click.command()
@click.argument("sweep_dir", metavar="DIR", type=click.Path(exists=True))
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Figure to write: .svg or .png (never replaces a file unless --overwrite).")
@overwrite_option
@click.option("--percentile", type=click.Choice(["mean", "p50", "p90", "p99"]), default="p90", show_default=True,
              help="TTFT and TPOT statistic checked against the SLA and plotted.")
@click.option("--ttft-ms", type=float, default=None, help="TTFT SLA (default: the points' slo.ttft_ms).")
@click.option("--tpot-ms", type=float, default=None, help="TPOT SLA (default: the points' slo.tpot_ms).")
@click.option("--by", default=None, help="Column naming the strategies (default: the sweep's strategy axis).")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Rows of the table.")
@json_option
def pareto(sweep_dir, out, overwrite, percentile, ttft_ms, tpot_ms, by, top, as_json) -> None:
    """Pareto frontiers of a sweep: output tokens/s per GPU against tokens/s per user
    (1000 / TPOT), per strategy, under the SLA; prints the top configurations."""
    from frontier_dag.sweep import pareto as frontier
    from frontier_dag.sweep.store import load_results, read_spec

    target = Path(out) if out else None
    if target is not None:
        if target.suffix.lower() not in (".svg", ".png"):
            raise FrontierDagError(f"--out {out}: the figure must end in .svg or .png")
        check_out_file(target, overwrite, inputs=(Path(sweep_dir),))
    directory = Path(sweep_dir)
    results = load_results(directory)
    spec = read_spec(directory) if directory.is_dir() else {}
    front = frontier.compute(results, percentile=percentile, ttft_ms=ttft_ms, tpot_ms=tpot_ms, by=by or "strategy",
                             order=_strategy_order(spec) if by in (None, "strategy") else None)
    if target is not None:
        from frontier_dag.sweep.plot import draw

        draw(front, target, title=_title(spec, front))
    if as_json:
        click.echo(json.dumps(frontier.report(front, top), indent=2))
    else:
        click.echo(frontier.format_table(front, top))
        for strategy, row in frontier.report(front, top)["best"].items():
            click.echo(f"best {strategy}: {row['tokens_per_s_per_gpu']:,.1f} tokens/s/GPU at "
                       f"{row['tokens_per_s_per_user']:,.1f} tokens/s/user ({row['label']})")
    if target is not None:
        click.echo(f"wrote {target}", err=True)


def _strategy_order(spec: dict) -> list[str]:
    """The strategy axis's values, in the sweep file's order."""
    axis = (spec.get("axes") or {}).get(spec.get("strategy") or "")
    if isinstance(axis, dict) and isinstance(axis.get("choices"), dict):
        return [str(k) for k in axis["choices"]]
    return [str(v) for v in axis] if isinstance(axis, list) else []


def _title(spec: dict, front) -> str:
    base = spec.get("base") or {}
    model = base.get("model") if isinstance(base.get("model"), str) else (base.get("model") or {}).get("name", "")
    hardware = base.get("hardware") if isinstance(base.get("hardware"), str) else ""
    parts = [p for p in (spec.get("name"), model, hardware) if p]
    return " | ".join(str(p) for p in parts) or "Pareto frontier per strategy"
