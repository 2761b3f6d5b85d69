"""``frontier-dag trace RUN_DIR --out trace.json``: a Chrome/Perfetto trace of a finished run."""

from __future__ import annotations

from pathlib import Path

import click

from frontier_dag.cli.options import check_out_file, overwrite_option
from frontier_dag.errors import FrontierDagError


def _window(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(x) for x in value.split(":"))
    except ValueError:
        raise FrontierDagError(f"--window {value}: expected START:END in seconds, e.g. --window 10:12") from None
    if hi <= lo:
        raise FrontierDagError(f"--window {value}: END must be after START")
    return lo, hi


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Trace file to write (.json).")
@click.option("--window", default=None, metavar="START:END", help="Only this span of simulated time, in seconds.")
@click.option("--max-slices", default=200_000, show_default=True, type=click.IntRange(min=1),
              help="Iterations drawn one by one; beyond, consecutive iterations of a replica merge.")
@click.option("--max-flows", default=20_000, show_default=True, type=click.IntRange(min=0),
              help="KV-transfer flows drawn (every k-th request beyond).")
@click.option("--detail/--no-detail", default=True, show_default=True,
              help="Add the slowest iteration of each pool rebuilt as its DAG (a track per stream and EP rank).")
@overwrite_option
def trace(run_dir, out, window, max_slices, max_flows, detail, overwrite) -> None:
    """Write a Chrome trace-event JSON of RUN_DIR for Perfetto (ui.perfetto.dev) or chrome://tracing:
    a track per replica with its iterations, KV transfers as flows, queue and KV-usage counters."""
    from frontier_dag.analysis.run_data import load_run
    from frontier_dag.render.trace import build_trace, write_trace

    check_out_file(out, overwrite)
    span = _window(window)
    run = load_run(run_dir)
    document = build_trace(run, detail=detail, window_s=span, max_slices=max_slices, max_flows=max_flows)
    write_trace(document, Path(out))
    for note in document["metadata"]["notes"]:
        click.secho(f"note: {note}", fg="yellow", err=True)
    click.echo(f"wrote {out} ({len(document['traceEvents']):,} events); open it in https://ui.perfetto.dev")
