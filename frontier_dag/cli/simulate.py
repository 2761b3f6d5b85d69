"""``frontier-dag simulate``: run a workload through a configured cluster."""

from __future__ import annotations

import json
from pathlib import Path

import click

from frontier_dag.cli.options import json_option, set_option


def format_summary(s: dict) -> str:
    """The summary as a short table for the terminal."""
    lines = [
        f"{s['num_completed']:,} of {s['num_requests']:,} requests in {s['simulated_time_s']:,.1f} s simulated "
        f"({s['iterations']:,} iterations, {s['wall_time_s']:.1f} s wall)",
        f"{'':<10}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for key, name in (("ttft_ms", "TTFT ms"), ("tpot_ms", "TPOT ms"), ("e2e_ms", "E2E ms")):
        row = s[key]
        cells = "".join(f"{row[k]:>10.1f}" if row[k] is not None else f"{'-':>10}" for k in ("mean", "p50", "p90", "p99"))
        lines.append(f"{name:<10}{cells}")
    slo = s["slo"]
    lines.append(f"throughput {s['throughput_tokens_per_s']:,.0f} tokens/s, {s['output_tokens_per_s']:,.0f} output tokens/s "
                 f"({s['output_tokens_per_s_per_gpu']:,.1f} per GPU, {s['gpus']} GPUs)")
    lines.append(f"goodput {s['goodput_requests_per_s']:,.2f} requests/s meet TTFT <= {slo['ttft_ms']:g} ms and "
                 f"TPOT <= {slo['tpot_ms']:g} ms ({slo['attained'] * 100:.1f}% of requests)")
    if s.get("cost"):
        lines.append(f"cost {s['cost']['per_hour']:,.2f} per hour: {s['cost']['output_tokens_per_unit']:,.0f} output "
                     "tokens per unit of currency")
    for pool, util in s["utilization"].items():
        gpu = s.get("pools", {}).get(pool, {}).get("gpu")
        extra = [] if gpu is None else [f"{s['pools'][pool]['gpus']} x {gpu}"]
        if s["kv_transfer_wait_s"].get(pool):
            extra.append(f"KV transfer wait {s['kv_transfer_wait_s'][pool]:,.1f} s")
        if s["backpressure_stall_s"].get(pool):
            extra.append(f"backpressure stall {s['backpressure_stall_s'][pool]:,.1f} s")
        lines.append(f"pool {pool}: busy {util * 100:.1f}%, KV peak {s['kv_peak_usage'][pool] * 100:.1f}%"
                     + (", " + ", ".join(extra) if extra else ""))
    priced = sum(s["predictor_sources"].values()) or 1
    sources = ", ".join(f"{k} {v / priced * 100:.0f}%" for k, v in sorted(s["predictor_sources"].items(), key=lambda kv: -kv[1]))
    lines.append(f"operator prices: {sources}; {s['predictor_out_of_range']:,} outside the profiled range"
                 + (f"; {s['preemptions']:,} preemptions" if s["preemptions"] else ""))
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
