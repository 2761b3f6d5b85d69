"""One page per run (``frontier-dag report RUN_DIR --out report.html``): a self-contained HTML
file a design review reads a run from.

In order: the run at a glance (steady throughput, latency, goodput, the bottleneck pool)
and what to read with care; the summary, steady window beside the whole run; latency
distributions; throughput and queues over time; the run's critical path, its attribution
by category and pool, the tail's and the what-if ranking; the bottleneck drawing; each
pool's utilisation, KV occupancy and operator prices; and the resolved config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from frontier_dag.analysis.run_report import RunAnalysis, run_report
from frontier_dag.errors import FrontierDagError
from frontier_dag.render.html import (
    esc,
    page,
    png_figure,
    share_bar,
    svg_figure,
    table,
    warnings_box,
)


def _ms(us: float) -> str:
    if abs(us) >= 1e6:
        return f"{us / 1e6:,.3f} s"
    return f"{us / 1e3:,.2f} ms" if abs(us) >= 1e3 else f"{us:,.1f} µs"


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def steady_of(analysis: RunAnalysis) -> tuple[dict[str, Any], str]:
    """The run's steady-window figures (every run's summary has them: readers refuse runs
    written before), and a note for the page (none)."""
    return analysis.run.summary["steady"], ""


def describe(analysis: RunAnalysis) -> list[str]:
    """The subtitle lines: what was simulated."""
    cfg = analysis.run.config
    model = cfg.model if isinstance(cfg.model, str) else cfg.model.get("name", "model")
    hardware = cfg.hardware if isinstance(cfg.hardware, str) else cfg.hardware.get("name", "hardware")
    gpu_of = {name: pool.get("gpu", hardware) for name, pool in (analysis.run.summary.get("pools") or {}).items()}
    pools = "; ".join(f"{name}: {p.role}, {p.gpus} x {gpu_of.get(name, hardware)} (tp {p.dense_tp}, ep {p.ep}, "
                      f"x{p.replicas})"
                      for name, p in cfg.cluster.pools.items())
    wl = cfg.workload
    load = f"{wl.clients} closed-loop clients" if wl.clients else f"{wl.arrival.kind} arrivals" + (
        f" at {wl.arrival.rate_per_s:g}/s" if wl.arrival.rate_per_s else "")
    entry = analysis.run.summary.get("entry")
    if entry:  # requests may enter several pools
        pools += "; requests enter by " + entry["rule"] + ": " + ", ".join(
            f"{n:,} {name}" for name, n in entry["requests"].items())
    return [f"{model} on {hardware}, workflow {cfg.workflow.name}; {pools}",
            f"{wl.num_requests:,} requests, {load}; scheduler {cfg.scheduler.policy}; prices from "
            f"{cfg.predictor.source}; seed {cfg.seed}; SLO TTFT {cfg.slo.ttft_ms:g} ms, TPOT {cfg.slo.tpot_ms:g} ms"]


def glance(analysis: RunAnalysis, steady: dict, bottleneck: tuple[str, float]) -> str:
    s = analysis.run.summary
    pool, share = bottleneck

    def card(label: str, value: str, sub: str = "") -> str:
        return (f'<div class="card"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
                f'<div class="sub">{esc(sub)}</div></div>')

    cards = [
        card("output tokens/s per GPU (steady)", _num(steady.get("output_tokens_per_s_per_gpu")),
             f"whole run {_num(s.get('output_tokens_per_s_per_gpu'))}; {s.get('gpus', '?')} GPUs"),
        card("TTFT p90 (steady)", f"{_num((steady.get('ttft_ms') or {}).get('p90'))} ms",
             f"p99 {_num((steady.get('ttft_ms') or {}).get('p99'))} ms"),
        card("TPOT p90 (steady)", f"{_num((steady.get('tpot_ms') or {}).get('p90'), 2)} ms",
             f"p99 {_num((steady.get('tpot_ms') or {}).get('p99'), 2)} ms"),
        card("goodput (steady)", f"{_num(steady.get('goodput_requests_per_s'), 2)} req/s",
             f"{(steady.get('slo_attained') or 0) * 100:.1f}% of requests meet the SLO"),
        card("bottleneck pool", pool, f"{share * 100:.1f}% of the run's critical path" if share else "busiest pool"),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def read_with_care(analysis: RunAnalysis, steady: dict, note: str) -> list[str]:
    s = analysis.run.summary
    lines = [w for w in (s.get("warnings") or "").splitlines() + (steady.get("warnings") or "").splitlines() if w]
    if note:
        lines.append(note)
    oor = s.get("predictor_out_of_range", 0)
    if oor:
        where = sorted(((n, f"{pool} {family}") for pool, fams in s.get("predictor_out_of_range_by", {}).items()
                        for family, n in fams.items()), reverse=True)[:4]
        detail = ", ".join(f"{name} {n:,}" for n, name in where)
        lines.append(f"{oor:,} operator prices came from outside the profiled range" + (f" ({detail})" if detail else ""))
    sources = s.get("predictor_sources", {})
    total = sum(sources.values())
    if total and sources.get("roofline", 0) / total > 0.25 and analysis.run.config.predictor.source != "roofline":
        lines.append(f"{sources['roofline'] / total * 100:.0f}% of operator prices are roofline estimates "
                     "(no profile for those operators)")
    if s.get("preemptions"):
        lines.append(f"{s['preemptions']:,} preemptions (requests recomputed after running out of KV blocks)")
    return lines


def summary_table(summary: dict, steady: dict) -> str:
    """Latency percentiles and rates, the steady window beside the whole run."""
    stats = ("mean", "p50", "p90", "p99")
    head = ('<tr><th></th><th class="group" colspan="4">steady window</th><th class="group" colspan="4">whole run</th>'
            "</tr><tr><th></th>" + "".join(f"<th>{s}</th>" for s in stats * 2) + "</tr>")
    body = []
    for key, name, digits in (("ttft_ms", "TTFT ms", 1), ("tpot_ms", "TPOT ms", 2), ("e2e_ms", "E2E ms", 0)):
        cells = [_num((figures.get(key) or {}).get(stat), digits) for figures in (steady, summary) for stat in stats]
        body.append(f'<tr><td class="text">{name}</td>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    latency = f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
    rows = []
    for key, name, digits in (("output_tokens_per_s_per_gpu", "output tokens/s per GPU", 1),
                              ("output_tokens_per_s", "output tokens/s", 0),
                              ("throughput_tokens_per_s", "tokens/s, prompt and output", 0),
                              ("requests_per_s", "requests/s finished", 2),
                              ("goodput_requests_per_s", "goodput, requests/s", 2)):
        rows.append((name, _num(steady.get(key), digits), _num(summary.get(key), digits)))
    rows.append(("SLO attained", f"{(steady.get('slo_attained') or 0) * 100:.1f}%",
                 f"{(summary.get('slo') or {}).get('attained', 0) * 100:.1f}%"))
    rows.append(("requests", f"{steady.get('num_requests', 0):,} arrived in it",
                 f"{summary.get('num_measured', summary.get('num_completed', 0)):,} measured"))
    if steady.get("in_flight") is not None:
        rows.append(("in the system (mean)", _num(steady["in_flight"]), ""))
    rates = table(("", "steady window", "whole run"), rows)
    return f'<div class="grid2"><div>{latency}</div><div>{rates}</div></div>'


def latency_section(analysis: RunAnalysis, plt) -> str:
    from frontier_dag.render.plots import latency_cdfs

    return png_figure(latency_cdfs(analysis.run, plt), "CDFs of every measured request; dotted p50, dashed p99, "
                                                       "red the SLO")


def path_section(analysis: RunAnalysis, report: dict, plt) -> str:
    from frontier_dag.render.plots import attribution_bars

    parts = [f"<p>The run ends with request {report['request']}: its critical path runs {esc(_ms(report['length_us']))} "
             f"from {esc(report['starts_at'])} to its last token at {esc(_ms(report['end_us']))}. Each piece of the "
             "path is an iteration's DAG critical path (split by operator category) or a wait.</p>"]
    shares = sorted(((k, v) for k, v in report["attribution"].items() if v > 0.0005), key=lambda kv: -kv[1])
    by_pool = sorted(report["attribution_by_pool"].items(), key=lambda kv: -sum(kv[1].values()))
    pool_rows = [(pool, share_bar(sum(cats.values())),
                  ", ".join(f"{k} {v * 100:.1f}%" for k, v in sorted(cats.items(), key=lambda kv: -kv[1])[:4] if v > 0.0005))
                 for pool, cats in by_pool]
    parts.append('<div class="grid2"><div><h3>by category</h3>'
                 + table(("category", "share of the path"), [(k, share_bar(v)) for k, v in shares])
                 + "</div><div><h3>by pool and link</h3>"
                 + table(("pool", "share", "top categories"), pool_rows, text_columns=(0, 2)) + "</div></div>")
    parts.append(png_figure(attribution_bars(analysis.run, plt, analysis),
                            "the run's critical path and the requests at the median and in the tail of TTFT and TPOT"))
    rows = report["critical_path"]
    longest = sorted(range(len(rows)), key=lambda i: -rows[i]["duration_us"])[:15]
    parts.append(f"<h3>the longest of its {len(rows):,} segments, in time order</h3>" + table(
        ("starts", "lasts", "what", "category"),
        [(_ms(rows[i]["start_us"]), _ms(rows[i]["duration_us"]),
          rows[i]["node"] + (f" x{rows[i]['iterations']}" if rows[i].get("iterations") else ""), rows[i]["category"])
         for i in sorted(longest)], text_columns=(2, 3)))
    tail = report.get("tail", {})
    tail_rows = []
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT")):
        for q in ("p50", "p99"):
            group = tail.get(f"{key}_{q}")
            if group:
                top = ", ".join(f"{k} {v * 100:.1f}%" for k, v in sorted(group["attribution"].items(),
                                                                         key=lambda kv: -kv[1])[:4] if v > 0.0005)
                tail_rows.append((f"{label} {q}", f"{group[f'{key}_ms']:,.2f} ms", f"{group['requests']:,}", top))
    if tail_rows:
        parts.append("<h3>the median and the tail: where their time goes</h3>"
                     + table(("group", "latency", "requests", "attribution"), tail_rows, text_columns=(0, 3)))
    wi = report["what_if"]
    what_rows, classes = [], []
    for row in wi["scenarios"]:
        what_rows.append((row["category"], f"{(row['critical_path_share'] or 0) * 100:.1f}%",
                          f"{row['throughput_gain'] * 100:+.1f}%", f"{-row['p99_e2e_reduction'] * 100:+.1f}%",
                          f"{-row['p99_ttft_reduction'] * 100:+.1f}%", f"{-row['p99_tpot_reduction'] * 100:+.1f}%",
                          "re-simulate" if row["resimulate"] else row.get("note") or ""))
        classes.append("hi" if row["rank"] == 1 else "")
    parts.append(f"<h3>what if each were {wi['factor']:g}x faster (recorded batches; ranked by p99 E2E saved)</h3>"
                 + table(("speed up", "path", "throughput", "p99 E2E", "p99 TTFT", "p99 TPOT", ""), what_rows,
                         text_columns=(0, 6), row_classes=classes)
                 + '<p class="note">"re-simulate": the batches would change by more than 10% (Little\'s law on each '
                   "pool's occupancy); the rank holds, the size is first order.</p>")
    return "".join(parts)


def bottleneck_section(analysis: RunAnalysis, cost_model=None) -> str:
    import shutil

    from frontier_dag.render.bottlenecks import bottleneck_parts, standalone

    parts = [standalone(p) for p in bottleneck_parts(analysis, cost_model) if p is not None]
    if shutil.which("dot") is None:
        sources = "".join(f"<pre>{esc(p.source)}</pre>" for p in parts)
        return ('<p class="note">Graphviz\'s <code>dot</code> program is not installed here, so the drawing could not '
                f"be made; its DOT source follows (render it with Graphviz).</p><details><summary>DOT source</summary>"
                f"{sources}</details>")
    captions = ("the stages, each with its share of the run's critical path and of the p99-TTFT and p99-TPOT "
                "requests' time (red edges: on the critical path, thicker: more)",
                "the bottleneck pool's iteration of median duration, rebuilt as its DAG: repeated layers drawn once "
                "with their count, its critical path in red")
    figures = [svg_figure(p.pipe(format="svg").decode("utf-8"), caption, natural=True)
               for p, caption in zip(parts, captions, strict=False)]
    return f'<div class="drawings">{"".join(figures)}</div>'


def pools_section(analysis: RunAnalysis, plt) -> str:
    from frontier_dag.render.plots import kv_usage

    run, s = analysis.run, analysis.run.summary
    rows = []
    for name, pool in run.config.cluster.pools.items():
        # the pool that logs the iterations, busy time and prices of this pool's stage
        stage = next((p for p in run.pools.values() if name in p.members), None)
        owner = stage.name if stage else name
        logs = owner == name
        priced = sum(s.get("predictor_prices_by", {}).get(owner, {}).values())
        outside = sum(s.get("predictor_out_of_range_by", {}).get(owner, {}).values())
        busy = s.get("utilization", {}).get(owner)
        kv_peak = s.get("kv_peak_usage", {}).get(name)
        iterations = int((run.iterations["pool"].astype(str) == name).sum())
        rows.append((name, pool.role, f"{pool.gpus}", f"{pool.replicas}", f"tp {pool.tp}, ep {pool.ep}",
                     share_bar(busy) if busy is not None else "-",
                     f"{kv_peak * 100:.1f}%" if kv_peak is not None else "-",
                     f"{s.get('backpressure_stall_s', {}).get(name, 0):,.2f} s",
                     f"{s.get('kv_transfer_wait_s', {}).get(name, 0):,.2f} s",
                     f"{iterations:,}" if logs else f"steps with {owner}",
                     (f"{outside:,} of {priced:,}" if priced else "-") if logs else f"with {owner}"))
    note = ('<p class="note">busy: the share of the run its replicas ran iterations; a stage that steps several pools '
            "together (AF) logs its iterations, busy time and prices under its first pool. Out of range: operator "
            "prices used from outside the profiled range.</p>")
    return (table(("pool", "role", "GPUs", "replicas", "parallelism", "busy", "KV peak", "backpressure stall",
                   "KV transfer wait", "iterations", "prices out of range"), rows, text_columns=(0, 1, 4, 5, 9))
            + note + png_figure(kv_usage(run, plt), "KV-cache usage over time per replica (fraction of its blocks)"))


def run_page(run_dir: str | Path, what_if: float = 2.0, cost_model=None) -> str:
    """The report page of the run in ``run_dir`` as HTML."""
    from frontier_dag.render.bottlenecks import bottleneck_pool
    from frontier_dag.render.plots import pyplot, throughput_and_queues

    analysis = RunAnalysis(run_dir)
    run = analysis.run
    if not len(run.iterations):
        raise FrontierDagError(f"{run_dir}: the run has no iterations to report on")
    plt = pyplot()
    try:
        steady, note = steady_of(analysis)
        report = run_report(analysis, None, what_if)
        bottleneck = bottleneck_pool(analysis, report["attribution_by_pool"])
        window = (f"<p>Steady window {steady['start_s']:,.2f}-{steady['end_s']:,.2f} s of "
                  f"{run.summary.get('simulated_time_s', 0):,.2f} s ({esc(steady['chosen'])}): {esc(steady['how'])}. "
                  "Tokens/s count what was made inside it, latencies are those of the requests that arrived in it; "
                  "the whole run spans the first measured arrival to the last finish.</p>")
        sections = [
            ("glance", "At a glance", glance(analysis, steady, bottleneck) + warnings_box(read_with_care(analysis, steady, note))),
            ("summary", "Summary: steady window and whole run", window + summary_table(run.summary, steady)),
            ("latency", "Latency distributions", latency_section(analysis, plt)),
            ("time", "Throughput and queues over time",
             png_figure(throughput_and_queues(run, plt), "output tokens/s and the requests waiting in each queue; "
                                                         "green: the steady window")),
            ("critical-path", "What bounded the run: critical path and attribution", path_section(analysis, report, plt)),
            ("bottlenecks", "Bottleneck drawing", bottleneck_section(analysis, cost_model)),
            ("pools", "Pools: utilisation, KV occupancy, prices", pools_section(analysis, plt)),
            ("config", "Config", f"<pre>{esc(run.config.to_yaml())}</pre>"),
        ]
    finally:
        plt.close("all")
    return page(f"frontier-dag run {run.run_dir.name}", describe(analysis), sections)


def check_page_path(out: Path, overwrite: bool = False) -> None:
    """Refuse, before anything is computed, a page name that is not .html, a directory, or
    an existing file without ``overwrite``."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise FrontierDagError(f"--out {out}: the report is an HTML file; give a name ending in .html")
    if out.is_dir():
        raise FrontierDagError(f"--out {out} is a directory; give a file name ending in .html")
    if out.exists() and not overwrite:
        raise FrontierDagError(f"--out {out} exists; choose another file or pass --overwrite")


def write_page(html: str, out: Path, overwrite: bool = False) -> Path:
    """Write ``html`` to ``out`` (.html) through a temporary file, never over an existing
    file unless ``overwrite``."""
    out = Path(out)
    check_page_path(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(html, encoding="utf-8")
    temporary.replace(out)
    return out


__all__ = ["check_page_path", "run_page", "write_page"]
