"""``frontier-dag workflows``, ``render`` and ``critical-path``: one iteration of a config."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import click

from frontier_dag.cli.options import check_out_file, json_option, overwrite_option, set_option
from frontier_dag.cli.simulate import price_line
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


def _finite(value: float, option: str) -> float:
    if value != value:  # NaN passes click's range check (every comparison with it is false)
        raise click.BadParameter("nan is not a number; give a factor such as 2", param_hint=option)
    return value


def load_iteration(target: str, config_path: str | None, overrides: tuple[str, ...], batch_size: int | None,
                   context: int | None, overlap: bool = False):
    """Trace and analyse one iteration of a config file (or a workflow name on a config)."""
    from frontier_dag.api import iteration

    if Path(target).is_file():
        return iteration(target, overrides, batch_size=batch_size, context=context, overlap=overlap)
    if config_path is not None:
        return iteration(config_path, (*overrides, f"workflow.name={target}"), batch_size=batch_size, context=context,
                         overlap=overlap)
    raise ConfigError(f"{target}: not a config file; pass a config YAML, or a workflow name with --config CONFIG")


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
                   "path, and the bottleneck pool's median iteration as its DAG).")
@overwrite_option
@with_batch_options
@set_option
def render(target, out, layers, ranks, stage, direction, bottlenecks, overwrite, config_path, batch_size, context,
           overrides) -> None:
    """Draw one iteration of TARGET (a config YAML, or a workflow name with --config) with its
    critical path highlighted. A run directory as TARGET (with or without --bottlenecks) draws
    the run's bottleneck view."""
    from frontier_dag.render.graphviz import iteration_dot, write

    if bottlenecks and not Path(target).is_dir():
        raise FrontierDagError(f"render {target} --bottlenecks: TARGET must be a run directory written by "
                               "`frontier-dag simulate CONFIG --out RUN_DIR`")
    beside = () if Path(out).suffix.lower() == ".dot" else (Path(out).with_suffix(".dot"),)
    check_out_file(out, overwrite, also=beside, inputs=tuple(Path(p) for p in (target, config_path) if p))
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
@click.option("--what-if", "what_if", type=click.FloatRange(min=0, min_open=True, max=1e6), default=2.0, show_default=True,
              callback=lambda ctx, param, value: _finite(value, "--what-if"),
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
    _, _, report = load_iteration(target, config_path, overrides, batch_size, context, overlap=True)
    for warning in report.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    click.echo(f"iteration time: {report.iteration_time_us / 1000:.3f} ms")
    for stage, t in report.stage_times_us.items():
        click.echo(f"  stage {stage}: {t / 1000:.3f} ms")
        if stage in report.pipeline:
            p = report.pipeline[stage]
            times = ", ".join(f"pp[{k}] {s / 1000:.3f}" for k, s in enumerate(p.stages_us))
            links = ", ".join(f"{x / 1000:.3f}" for x in p.links_us[1:])
            bubbles = ", ".join(f"pp[{k}] {b:.0%}" for k, b in enumerate(p.bubbles) if k != p.slowest_stage)
            click.echo(f"    pipeline stages: {times} ms (transfers between them {links} ms); slowest pp[{p.slowest_stage}]"
                       f": with {len(p.stages_us)} micro-batches in flight one leaves every {p.period_us / 1000:.3f} ms; "
                       f"bubbles {bubbles}")
    click.echo("overlap: busy share of each stream and link over its stage")
    for stage, o in report.overlap.items():
        line = f"  stage {stage}:"
        if o.micro_batches > 1:
            line += f" {o.micro_batches} micro-batches, two or more running for {o.micro_batch_overlap:.0%} of it"
            if o.m1_time_us is not None:
                line += f"; m = 1 would take {o.m1_time_us / 1000:.3f} ms"
        click.echo(f"{line} {_busy_line(o.busy)}" if o.micro_batches == 1 else f"{line}\n    {_busy_line(o.busy)}")
    click.echo(price_line(report.prices["sources"], report.prices["out_of_range"], report.prices["out_of_range_by"]))
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


def _busy_line(busy: dict[str, float]) -> str:
    """``decode 91%, decode.ep_rank[*] 12-18%, link:prefill->decode 3%``: EP ranks folded."""
    groups: dict[str, list[float]] = {}
    for resource, share in busy.items():
        groups.setdefault(resource.split("[")[0] + ("[*]" if "[" in resource else ""), []).append(share)
    parts = []
    for name, shares in groups.items():
        low, high = min(shares), max(shares)
        parts.append(f"{name} {high:.0%}" if len(shares) == 1 or round(low, 2) == round(high, 2)
                     else f"{name} {low:.0%}-{high:.0%}")
    return ", ".join(parts)
