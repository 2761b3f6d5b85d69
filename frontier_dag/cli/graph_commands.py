"""``frontier-dag workflows``, ``render`` and ``critical-path``: one iteration of a config."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import click

from frontier_dag.cli.options import json_option, set_option
from frontier_dag.errors import ConfigError, FrontierDagError


@click.command()
@json_option
def workflows(as_json: bool) -> None:
    """List the built-in workflows."""
    from frontier_dag.dsl import list_workflows

    items = [w.describe() for w in list_workflows()]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    width = max(len(w["name"]) for w in items)
    for w in items:
        click.echo(f"{w['name']:<{width}}  {w['description']}")
        for key, p in w["params"].items():
            click.echo(f"{'':<{width}}    {key} ({p['type']}, default {p['default']!r}): {p['help']}")


def _require(module: str, usage: str) -> None:
    """Fail cleanly where a run-directory view is not part of this installation yet."""
    if importlib.util.find_spec(module) is None:
        raise FrontierDagError(f"{usage}: the run-level view ({module}) is not available in this version; "
                               "pass a config YAML for one iteration instead")


def load_iteration(target: str, config_path: str | None, overrides: tuple[str, ...], batch_size: int | None,
                   context: int | None):
    """Trace and analyse one iteration of a config file (or a workflow name on a config)."""
    from frontier_dag.analysis.iteration import analyze_iteration, representative_loads
    from frontier_dag.config.run import load_run_config
    from frontier_dag.dsl import trace_config
    from frontier_dag.predictors.registry import cost_model_for

    if Path(target).is_file():
        config = load_run_config(target, overrides)
    elif config_path is not None:
        config = load_run_config(config_path, (*overrides, f"workflow.name={target}"))
    else:
        raise ConfigError(f"{target}: not a config file; pass a config YAML, or a workflow name with --config CONFIG")
    deployment, graph = trace_config(config)
    cost_model = cost_model_for(config.predictor, deployment.hardware)
    loads = representative_loads(graph, deployment, batch_size, context)
    return deployment, graph, analyze_iteration(graph, deployment, cost_model, loads)


batch_options = [
    click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
                 help="Config to use when TARGET is a workflow name."),
    click.option("--batch-size", type=click.IntRange(min=1), help="Sequences per batch (default: scheduler.max_num_seqs)."),
    click.option("--context", type=click.IntRange(min=1), help="Cached tokens per decode sequence (default: from the workload)."),
]


def with_batch_options(fn):
    for option in reversed(batch_options):
        fn = option(fn)
    return fn


@click.command()
@click.argument("target")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output file: .svg, .png or .dot.")
@click.option("--layers", default=0, show_default=True, type=click.IntRange(min=0),
              help="Layers of each stage drawn one by one; the others fold: each run of identical layers is drawn "
                   "once, in a box with its count.")
@click.option("--ranks", default=4, show_default=True, type=click.IntRange(min=1), help="EP ranks drawn per layer (slowest first).")
@click.option("--stage", default=None, help="Draw this stage only (a name from the workflow, e.g. decode).")
@click.option("--direction", type=click.Choice(["TB", "LR"], case_sensitive=False), default="TB", show_default=True,
              help="TB: stages side by side, each top-down; LR: each stage left to right, stages one above the other.")
@click.option("--bottlenecks", is_flag=True,
              help="TARGET is a run directory: draw its bottleneck view (stages with their shares of the critical "
                   "path, and the slowest iteration's DAG).")
@with_batch_options
@set_option
def render(target, out, layers, ranks, stage, direction, bottlenecks, config_path, batch_size, context,
           overrides) -> None:
    """Draw one iteration of TARGET (a config YAML, or a workflow name with --config) with its
    critical path highlighted. A run directory as TARGET (with or without --bottlenecks) draws
    the run's bottleneck view."""
    from frontier_dag.render.graphviz import iteration_dot, write

    if bottlenecks and not Path(target).is_dir():
        raise FrontierDagError(f"render {target} --bottlenecks: TARGET must be a run directory written by "
                               "`frontier-dag simulate CONFIG --out RUN_DIR`")
    if Path(target).is_dir():
        if stage is not None:
            raise FrontierDagError(f"render {target} --stage {stage}: --stage draws one stage of a config's iteration; "
                                   "a run directory's drawing shows its bottleneck pool's iteration")
        _require("frontier_dag.render.bottlenecks", "render RUN_DIR --bottlenecks")
        from frontier_dag.render.bottlenecks import render_bottlenecks

        notes = render_bottlenecks(Path(target), Path(out))
    else:
        deployment, graph, report = load_iteration(target, config_path, overrides, batch_size, context)
        notes = write(iteration_dot(graph, deployment, report, layers=layers, ranks=ranks, stage=stage,
                                    direction=direction.upper()), Path(out))
    for note in notes:
        click.secho(note, fg="yellow", err=True)
    click.echo(f"wrote {out}" if not notes else f"wrote {Path(out).with_suffix('.dot')}")


@click.command("critical-path")
@click.argument("target")
@click.option("--request", "request_id", type=int, default=None, help="With a run directory: one request's critical path.")
@click.option("--what-if", "what_if", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              metavar="X", help="With a run directory: predict the gains of making each category X times faster.")
@json_option
@with_batch_options
@set_option
def critical_path(target, request_id, what_if, as_json, config_path, batch_size, context, overrides) -> None:
    """The critical path of one iteration of a config (or, for a run directory, of the run)."""
    if Path(target).is_dir():
        _require("frontier_dag.cli.run_analysis", "critical-path RUN_DIR")
        from frontier_dag.cli.run_analysis import print_run_critical_path

        print_run_critical_path(Path(target), request_id, as_json, what_if)
        return
    _, _, report = load_iteration(target, config_path, overrides, batch_size, context)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    click.echo(f"iteration time: {report.iteration_time_us / 1000:.3f} ms")
    for stage, t in report.stage_times_us.items():
        click.echo(f"  stage {stage}: {t / 1000:.3f} ms")
    click.echo("attribution of the critical path:")
    for category, share in sorted(report.attribution.items(), key=lambda kv: -kv[1]):
        if share > 0:
            click.echo(f"  {category:<18} {share * 100:5.1f}%")
    totals: dict[tuple[str, str], list[float]] = {}
    for row in report.critical_path:
        totals.setdefault((row["op"], row["resource"]), []).append(row["duration_us"])
    click.echo(f"critical path: {len(report.critical_path)} ops; the heaviest, summed over layers:")
    for (op, resource), times in sorted(totals.items(), key=lambda kv: -sum(kv[1]))[:10]:
        click.echo(f"  {op:<22} {resource:<24} {sum(times) / 1000:9.3f} ms  ({len(times)} x {sum(times) / len(times):.1f} µs)")
