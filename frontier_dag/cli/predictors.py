"""``frontier-dag predictors fit|evaluate``: operator predictors fitted to kernel profiles."""

from __future__ import annotations

import json
import time

import click

from frontier_dag.cli.options import json_option

SOURCES = ("aiconfigurator", "frontier-csv", "vidur-csv", "profile-dir")


def source_options(command):
    """--source, --system, --backend, --path, --files: which profiles to use."""
    options = [
        click.option("--source", type=click.Choice(SOURCES), default="aiconfigurator", show_default=True,
                     help="Where the profiles come from."),
        click.option("--system", help="aiconfigurator system, e.g. h200_sxm (--source aiconfigurator); with --source profile-dir, the system the profiles stand for when meta.yaml names none (a CPU profile)."),
        click.option("--backend", default="vllm", show_default=True, help="aiconfigurator backend: vllm, trtllm, sglang."),
        click.option("--path", type=click.Path(exists=True), help="Folder (or one file) of profiles for the other sources."),
        click.option("--files", "pattern", metavar="GLOB", help="Only CSV files whose path matches GLOB, e.g. attention_combined.csv."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _open(source, system, backend, path, pattern):
    from frontier_dag.predictors.sources import open_source

    return open_source(source, system=system, backend=backend, path=path, pattern=pattern)


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Rows as aligned text; columns are (key, header, format)."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([format(row[key], fmt) if row.get(key) is not None else "-" for key, _, fmt in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
             for line in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


@click.group()
def predictors() -> None:
    """Fit and evaluate operator-time predictors (random forests on kernel profiles)."""


@predictors.command()
@source_options
@click.option("--refit", is_flag=True, help="Ignore the cache and fit again (the result is cached).")
@json_option
def fit(source, system, backend, path, pattern, refit, as_json) -> None:
    """Fit one predictor per operator family, cache them, and report held-out accuracy."""
    from frontier_dag.predictors import cache
    from frontier_dag.predictors.fitted_set import cache_key_for, fitted_set
    from frontier_dag.predictors.fitting import DEFAULT_SETTINGS

    src = _open(source, system, backend, path, pattern)
    started = time.perf_counter()
    if refit:
        cache.check_writable()
        fitted, cached = fitted_set(src, use_cache=False)
        cache.store(cache_key_for(src, DEFAULT_SETTINGS), fitted)
    else:
        fitted, cached = fitted_set(src)
    seconds = time.perf_counter() - started
    rows = [{"family": f, **fitted.accuracy.get(f, {"n_train": m.n_train}), "fit_s": fitted.fit_seconds.get(f),
             "nodes": len(m.forest.threshold), "spread": m.has_spread} for f, m in fitted.models.items()]
    if as_json:
        click.echo(json.dumps({"source": src.description, "hardware": fitted.hardware, "cached": cached,
                               "seconds": seconds, "cache_dir": str(cache.cache_dir()),
                               "families": {r["family"]: {k: v for k, v in r.items() if k != "family"} for r in rows}},
                              indent=2))
        return
    click.echo(f"{src.description} on {fitted.hardware}: "
               f"{'loaded from cache' if cached else 'fitted'} in {seconds:.2f} s ({cache.cache_dir()})")
    click.echo("held-out accuracy: a 4-tree forest on a random 80% of the rows, scored on the rest")
    click.echo(_table(rows, [("family", "family", "s"), ("n_train", "train", "d"), ("n_test", "test", "d"),
                             ("within_5pct", "<5%", ".1%"), ("within_10pct", "<10%", ".1%"),
                             ("median_ape", "median", ".2%"), ("p90_ape", "p90", ".2%"),
                             ("fit_s", "fit s", ".2f"), ("nodes", "nodes", "d")]))


@predictors.command()
@source_options
@click.option("--split", type=click.Choice(["random", "grouped", "spaced"]), default="random", show_default=True,
              help="random: rows held out; grouped: whole shapes held out (unseen lengths, token counts, (n, k)); "
                   "spaced: as grouped, never two neighbouring shapes at once.")
@click.option("--seed", default=0, show_default=True, help="Seed of the split and the forests.")
@click.option("--family", "families", multiple=True, help="Only these operator families (repeatable).")
@click.option("--by", type=click.Choice(["source", "dtype", "kv_dtype"]),
              help="Also score each part of the held-out rows: by measured kernel (source), by dtype or by "
                   "attention's KV cache dtype (kv_dtype).")
@json_option
def evaluate(source, system, backend, path, pattern, split, seed, families, by, as_json) -> None:
    """Held-out accuracy per operator family."""
    from dataclasses import replace

    from frontier_dag.predictors.evaluation import evaluate as run_evaluation
    from frontier_dag.predictors.fitting import DEFAULT_SETTINGS

    src = _open(source, system, backend, path, pattern)
    report = run_evaluation(src.read(), split=split, seed=seed, settings=replace(DEFAULT_SETTINGS, seed=seed),
                            families=list(families) or None, by=by)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{src.description} on {src.hardware}, {split} split, seed {seed}")
    rows = [row for f, r in report.items()
            for row in [{"family": f, **r}, *({"family": f"  {by}={k}", **p} for k, p in r.get("parts", {}).items())]]
    click.echo(_table(rows, [("family", "family", "s"), ("n_train", "train", "d"), ("n_test", "test", "d"),
                             ("within_5pct", "<5%", ".1%"), ("within_10pct", "<10%", ".1%"),
                             ("median_ape", "median", ".2%"), ("p90_ape", "p90", ".2%"),
                             ("out_of_range", "out of range", "d")]))
