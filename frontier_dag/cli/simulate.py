"""``frontier-dag simulate``: run a workload through a configured cluster."""

from __future__ import annotations

import json
from pathlib import Path

import click

from frontier_dag.cli.options import json_option, set_option


def warning_lines(steady: dict) -> list[str]:
    """The steady window's warnings (one per line of its ``warnings``)."""
    return [w for w in (steady.get("warnings") or "").splitlines() if w]


def _cells(row: dict | None) -> str:
    row = row or {}
    return "".join(f"{row[k]:>9.1f}" if row.get(k) is not None else f"{'-':>9}" for k in ("mean", "p50", "p90", "p99"))


def price_line(sources: dict[str, int], out_of_range: int, by: dict[str, dict[str, int]]) -> str:
    """``operator prices: rf 58%, roofline 42% of 1,234 used; 5 outside the profiled range
    (decode deepep_dispatch 5)``: where the prices came from (memo hits included) and which
    were outside the profiled range, per pool (or stage) and operator family."""
    priced = sum(sources.values()) or 1
    shares = ", ".join(f"{k} {v / priced * 100:.0f}%" for k, v in sorted(sources.items(), key=lambda kv: -kv[1]))
    line = f"operator prices: {shares} of {priced:,} used; {out_of_range:,} outside the profiled range"
    where = sorted(((n, f"{pool} {family}") for pool, families in by.items() for family, n in families.items()),
                   reverse=True)
    if where:
        shown = ", ".join(f"{name} {n:,}" for n, name in where[:4])
        line += f" ({shown}{', ...' if len(where) > 4 else ''})"
    return line


def _prices(s: dict) -> str:
    line = price_line(s["predictor_sources"], s["predictor_out_of_range"], s.get("predictor_out_of_range_by", {}))
    if s["preemptions"]:
        line += f"; {s['preemptions']:,} preemptions"
    return line


def format_summary(s: dict) -> str:
    """The summary as a short table for the terminal: the steady window beside the whole run."""
    steady = s.get("steady") or {}
    lines = [f"{s['num_completed']:,} of {s['num_requests']:,} requests in {s['simulated_time_s']:,.1f} s simulated "
             f"({s['iterations']:,} iterations, {s['wall_time_s']:.1f} s wall)"]
    if steady:
        lines.append(f"steady window {steady['start_s']:,.2f}-{steady['end_s']:,.2f} s: {steady['how']}")
    head = f"{'steady (' + format(steady.get('num_requests', 0), ',') + ' requests)':<37}" if steady else ""
    lines.append(f"{'':<10}{head}whole run ({s.get('num_measured', s['num_completed']):,} requests)")
    stats = "".join(f"{k:>9}" for k in ("mean", "p50", "p90", "p99"))
    lines.append(f"{'':<10}{(stats + ' ') if steady else ''}{stats}")
    for key, name in (("ttft_ms", "TTFT ms"), ("tpot_ms", "TPOT ms"), ("e2e_ms", "E2E ms")):
        lines.append(f"{name:<10}" + (_cells(steady.get(key)) + " " if steady else "") + _cells(s[key]))
    slo = s["slo"]
    gpus = f"{s['gpus']} GPUs"

    def rates(f: dict) -> str:
        return (f"{f['output_tokens_per_s_per_gpu']:,.1f} output tokens/s per GPU ({f['output_tokens_per_s']:,.0f} "
                f"output, {f['throughput_tokens_per_s']:,.0f} in all)")

    def goodput(f: dict, attained: float) -> str:
        return f"{f['goodput_requests_per_s']:,.2f} requests/s ({attained * 100:.1f}%)"

    if steady:
        lines.append(f"throughput  steady {rates(steady)}; {gpus}")
        lines.append(f"{'':<12}whole run {rates(s)}")
        lines.append(f"goodput  steady {goodput(steady, steady['slo_attained'])}, whole run "
                     f"{goodput(s, slo['attained'])} meet TTFT <= {slo['ttft_ms']:g} ms and TPOT <= {slo['tpot_ms']:g} ms")
    else:
        lines.append(f"throughput {rates(s)}; {gpus}")
        lines.append(f"goodput {goodput(s, slo['attained'])} meet TTFT <= {slo['ttft_ms']:g} ms and "
                     f"TPOT <= {slo['tpot_ms']:g} ms")
    if s.get("cost"):
        lines.append(f"cost {s['cost']['per_hour']:,.2f} per hour: {s['cost']['output_tokens_per_unit']:,.0f} output "
                     "tokens per unit of currency (whole run)")
    for pool, util in s["utilization"].items():
        gpu = s.get("pools", {}).get(pool, {}).get("gpu")
        extra = [] if gpu is None else [f"{s['pools'][pool]['gpus']} x {gpu}"]
        if s["kv_transfer_wait_s"].get(pool):
            extra.append(f"KV transfer wait {s['kv_transfer_wait_s'][pool]:,.1f} s")
        if s["backpressure_stall_s"].get(pool):
            extra.append(f"backpressure stall {s['backpressure_stall_s'][pool]:,.1f} s")
        lines.append(f"pool {pool}: busy {util * 100:.1f}%, KV peak {s['kv_peak_usage'][pool] * 100:.1f}%"
                     + (", " + ", ".join(extra) if extra else ""))
        pipe = s.get("pipeline", {}).get(pool)
        if pipe:
            busy = ", ".join(f"pp[{k}] {b * 100:.1f}%" for k, b in enumerate(pipe["stage_busy"]))
            lines.append(f"  pipeline stages busy {busy}; slowest pp[{pipe['slowest_stage']}]")
    lines.append(_prices(s))
    lines += [f"warning: {w}" for w in warning_lines(steady)]
    return "\n".join(lines)


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory (the whole run: plots of the old one do not survive).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.option("--plots", is_flag=True, help="Also draw latency CDFs, throughput, queues and KV usage into RUN_DIR/plots.")
@json_option
@set_option
def simulate(config, out, overwrite, progress, plots, as_json, overrides) -> None:
    """Simulate the workload of CONFIG and write RUN_DIR/summary.json, requests.parquet,
    iterations.parquet and the resolved config.yaml."""
    from frontier_dag.api import simulate as run_simulation
    from frontier_dag.sim.run_dir import check_run_dir, write_run

    check_run_dir(Path(out), overwrite)
    result = run_simulation(config, overrides, progress=progress and not as_json).result
    drawn: list[Path] = []

    def draw_plots(directory: Path) -> None:  # into the new run, before it replaces the old one
        from frontier_dag.render.plots import draw_run_plots

        drawn.extend(Path(out) / path.relative_to(directory) for path in draw_run_plots(directory))

    write_run(result, Path(out), overwrite=overwrite, extras=draw_plots if plots else None)
    for path in drawn:
        click.echo(f"wrote {path}", err=True)
    if as_json:
        click.echo(json.dumps(result.summary, indent=2, default=float))
    else:
        click.echo(format_summary(result.summary))
        copies = [f.copy for f in result.inputs if f.copy]
        click.echo(f"wrote {out}/summary.json, requests.parquet, iterations.parquet, config.yaml"
                   + "".join(f", {c}" for c in copies))
