"""``frontier-dag critical-path RUN_DIR``: what bounds a finished run, for the terminal or as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

ROWS_SHOWN = 15


def _ms(us: float) -> str:
    if abs(us) >= 1e6:
        return f"{us / 1e6:,.3f} s"
    return f"{us / 1e3:,.2f} ms" if abs(us) >= 1e3 else f"{us:,.1f} µs"


def _shares(shares: dict[str, float], limit: int = 6) -> str:
    items = sorted(((k, v) for k, v in shares.items() if v > 0.0005), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{k} {v * 100:.1f}%" for k, v in items) or "-"


def format_report(report: dict) -> str:
    lines = []
    if report["scope"] == "run":
        lines.append(f"critical path of the run: {_ms(report['length_us'])}, from {report['starts_at']} "
                     f"to the finish of request {report['request']} (the last) at {_ms(report['end_us'])}")
    else:
        lat = report["request_latency_ms"]
        tpot = f", TPOT {lat['tpot']:.2f} ms" if lat["tpot"] is not None else ""
        lines.append(f"critical path of request {report['request']}: {_ms(report['length_us'])} from its arrival "
                     f"to its last token (TTFT {lat['ttft']:.1f} ms{tpot})")
    lines.append(f"  attribution: {_shares(report['attribution'], 8)}")
    for pool, cats in sorted(report["attribution_by_pool"].items(), key=lambda kv: -sum(kv[1].values())):
        lines.append(f"    {pool:<20} {sum(cats.values()) * 100:5.1f}%  ({_shares(cats, 4)})")
    for pool, info in report.get("pools", {}).items():
        pipe = info.get("pipeline")
        if pipe:
            k = pipe["slowest_stage"]
            bubbles = ", ".join(f"pp[{i}] {b * 100:.1f}%" for i, b in enumerate(pipe["bubbles"]) if i != k)
            lines.append(f"  pipeline of pool {pool}: slowest stage pp[{k}] (busy {pipe['stage_busy'][k] * 100:.1f}%); "
                         f"bubbles {bubbles}; waits for busy stages are waits_and_bubbles")
    rows = report["critical_path"]
    shown = sorted(range(len(rows)), key=lambda i: -rows[i]["duration_us"])[:ROWS_SHOWN]
    lines.append(f"path: {len(rows)} segments" + (f"; the {len(shown)} longest, in time order:" if len(rows) > len(shown) else ":"))
    for i in sorted(shown):
        row = rows[i]
        what = row["node"] + (f" x{row['iterations']}" if row["iterations"] else "")
        lines.append(f"  {_ms(row['start_us']):>12}  +{_ms(row['duration_us']):>11}  {what:<42} {row['category']}")
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT")):
        for q in ("p50", "p99"):
            group = report.get("tail", {}).get(f"{key}_{q}")
            if group:
                lines.append(f"{label} {q} {group[f'{key}_ms']:,.2f} ms ({group['requests']} requests): "
                             f"{_shares(group['attribution'], 5)}")
    wi = report["what_if"]
    lines.append(f"what-if, each {wi['factor']:g}x faster (recorded batches; ranked by p99 E2E saved):")
    lines.append(f"  {'':>3} {'category':<20}{'path':>7}{'throughput':>12}{'p99 E2E':>9}{'p99 TTFT':>10}{'p99 TPOT':>10}"
                 f"{'batches':>9}")
    for row in wi["scenarios"]:
        share = row["critical_path_share"]
        note = " re-simulate" if row["resimulate"] else (" (not in this run)" if row.get("note") == "not in this run" else "")
        lines.append(f"  {row['rank']:>3} {row['category']:<20}{(share or 0) * 100:>6.1f}%{row['throughput_gain'] * 100:>+11.1f}%"
                     f"{-row['p99_e2e_reduction'] * 100:>+8.1f}%{-row['p99_ttft_reduction'] * 100:>+9.1f}%"
                     f"{-row['p99_tpot_reduction'] * 100:>+9.1f}%{row['batch_change'] * 100:>8.0f}%{note}")
    checks = report["checks"]
    if not checks["attributed_iterations"]:
        lines.append("note: the run was simulated without per-iteration attribution; iteration time is 'unattributed'")
    if checks["unexplained_starts"]:
        lines.append(f"note: {checks['unexplained_starts']} iteration start(s) have no recorded cause; they keep their "
                     "recorded times in what-ifs")
    return "\n".join(lines)


def print_run_critical_path(run_dir: Path, request_id: int | None, as_json: bool, what_if: float = 2.0) -> None:
    """Print the critical path of the run in ``run_dir`` (or of one request)."""
    from frontier_dag.analysis.run_report import run_report

    report = run_report(run_dir, request_id, what_if)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=float))
    else:
        click.echo(format_report(report))
