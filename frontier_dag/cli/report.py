"""``frontier-dag report``: one self-contained HTML page for a run or a sweep."""

from __future__ import annotations

from pathlib import Path

import click

from frontier_dag.errors import FrontierDagError


def is_sweep(directory: Path) -> bool:
    return (directory / "points").is_dir() or (directory / "results.parquet").is_file()


@click.command()
@click.argument("target", metavar="RUN_DIR|SWEEP_DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The page to write (.html).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--what-if", "what_if", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              metavar="X", help="A run: rank the gains of making each category X times faster.")
@click.option("--percentile", type=click.Choice(["mean", "p50", "p90", "p99"]), default="p90", show_default=True,
              help="A sweep: the TTFT and TPOT statistic checked against the SLA.")
def report(target, out, overwrite, what_if, percentile) -> None:
    """Write one HTML page for a run directory (summary, latency, time series, critical path,
    bottleneck drawing, pools, config) or a sweep directory (Pareto frontier, points).
    The page needs no network access to open."""
    from frontier_dag.render.report import check_page_path, run_page, write_page

    directory = Path(target)
    check_page_path(Path(out), overwrite)  # before the page is computed (seconds to minutes)
    if is_sweep(directory):
        from frontier_dag.sweep.report import sweep_page

        html = sweep_page(directory, percentile=percentile)
    elif (directory / "summary.json").exists():
        html = run_page(directory, what_if=what_if)
    else:
        raise FrontierDagError(f"{directory}: neither a run directory (summary.json, ...: frontier-dag simulate CONFIG "
                               "--out RUN_DIR) nor a sweep directory (points/, results.parquet: frontier-dag sweep)")
    path = write_page(html, Path(out), overwrite=overwrite)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
