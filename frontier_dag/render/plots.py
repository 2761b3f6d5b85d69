"""Plots of a finished run (matplotlib, Agg backend), as PNG and SVG in ``RUN_DIR/plots``:

* ``latency_cdf``: TTFT, TPOT and E2E CDFs with p50, p99 and the SLO;
* ``throughput_queue``: output tokens/s over time, and requests waiting per queue, with the
  summary's steady window shaded;
* ``kv_usage``: KV-cache usage over time per pool (each replica; the pool's mean when it
  has more than eight);
* ``attribution``: stacked bars of where the time goes: the run's critical path, and the
  requests at the median and in the tail (p99) of TTFT and TPOT.

Each plot is a function of the run and pyplot that returns its figure; ``draw_run_plots``
saves them, ``frontier_dag.render.report`` embeds them in a page.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frontier_dag.analysis.run_data import RunData, load_run
from frontier_dag.render.trace import _occupancy

FORMATS = ("png", "svg")
#: A fixed color per category, so that every plot and view agrees.
CATEGORY_COLORS = {
    "attention": "#1f77b4", "dense_gemm": "#ff7f0e", "moe_experts": "#2ca02c", "elementwise": "#bcbd22",
    "collectives": "#9467bd", "transfers": "#8c564b", "waits_and_bubbles": "#e377c2", "host_overhead": "#7f7f7f",
    "unattributed": "#c7c7c7", "kv_transfer": "#17becf", "queueing": "#d62728", "backpressure": "#ff9896",
    "memory_waits": "#aec7e8",
}


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    return paths


def latency_cdfs(run: RunData, plt):
    rq = run.requests.iloc[run.config.workload.warmup_requests:]
    slo = {"ttft_ms": run.config.slo.ttft_ms, "tpot_ms": run.config.slo.tpot_ms}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (col, title) in zip(axes, (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E")), strict=True):
        values = np.sort(rq[col].to_numpy(dtype=np.float64))
        values = values[np.isfinite(values)]
        if len(values):
            ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", color="#1f77b4")
            for q, style in ((50, ":"), (99, "--")):
                v = np.percentile(values, q)
                ax.axvline(v, color="#555555", linestyle=style, linewidth=1, label=f"p{q} {v:,.1f} ms")
        right = float(values.max()) * 1.05 if len(values) else None
        if col in slo and (right is None or slo[col] <= 2 * right):
            ax.axvline(slo[col], color="#d62728", linewidth=1, label=f"SLO {slo[col]:g} ms")
        elif col in slo:  # far beyond every request: say so rather than squash the curve
            ax.set_xlim(0, right)
            ax.plot([], [], color="#d62728", linewidth=1, label=f"SLO {slo[col]:g} ms (off the right)")
        ax.set_xlabel(f"{title} (ms)")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("fraction of requests")
    fig.suptitle(f"latency CDFs ({len(rq):,} requests)")
    return fig


def throughput_and_queues(run: RunData, plt):
    rq, it = run.requests, run.iterations
    end = float(np.nanmax(rq["finish_s"].to_numpy())) if np.isfinite(rq["finish_s"].to_numpy()).any() else 1.0
    bins = np.linspace(0.0, max(end, 1e-9), min(200, max(10, len(it) // 20)) + 1)
    width = bins[1] - bins[0]
    # output tokens: one per decoding sequence per iteration (at its end) and each first token
    it_end = it["start_s"].to_numpy() + it["duration_us"].to_numpy() * 1e-6
    tokens, _ = np.histogram(it_end, bins, weights=it["decode_seqs"].to_numpy(dtype=np.float64))
    first, _ = np.histogram(rq["first_token_s"].dropna().to_numpy(), bins)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    top.plot(bins[:-1] + width / 2, (tokens + first) / width, color="#1f77b4")
    top.set_ylabel("output tokens/s")
    top.grid(alpha=0.3)
    us = lambda c: rq[c].to_numpy(dtype=np.float64)  # noqa: E731
    entered = run.entry_of()
    queues = [(f"{pool}: waiting to be scheduled", np.where(entered == pool, us("arrival_s"), np.nan),
               us("first_scheduled_s")) for pool in run.entries]
    if run.decode is not None:
        queues.append((f"{run.handoff}: waiting for {run.decode} KV blocks", run.prefill_end_s(), us("transfer_start_s")))
        queues.append((f"{run.decode}: KV arrived, waiting for a batch", us("transfer_end_s"), us("decode_admitted_s")))
    for label, t_in, t_out in queues:
        times, level = _occupancy(t_in, t_out)
        if len(times):
            bottom.step(np.r_[0.0, times], np.r_[0.0, level], where="post", label=label)
    bottom.set_ylabel("requests waiting")
    bottom.set_xlabel("simulated time (s)")
    bottom.grid(alpha=0.3)
    steady = run.summary.get("steady") or {}
    if steady.get("chosen") in ("detected", "configured"):
        for ax in (top, bottom):
            ax.axvspan(steady["start_s"], steady["end_s"], color="#2ca02c", alpha=0.08, linewidth=0)
        top.text(steady["start_s"], top.get_ylim()[1], " steady window", color="#2ca02c", fontsize=8, va="top")
    if bottom.lines:
        bottom.legend(fontsize=8)
    fig.suptitle("throughput and queues")
    return fig


def kv_usage(run: RunData, plt):
    it = run.iterations
    fig, axes = plt.subplots(len(run.pools), 1, figsize=(11, 2.6 * len(run.pools)), sharex=True, squeeze=False)
    end = it["start_s"].to_numpy() + it["duration_us"].to_numpy() * 1e-6
    kv = it["kv_usage"].to_numpy(dtype=np.float64)
    for ax, name in zip(axes[:, 0], run.pools, strict=True):
        chains = [c for c, (pool, _) in enumerate(run.chains) if pool == name]
        if len(chains) > 8:
            rows = np.concatenate([np.arange(run.chain_lo[c], run.chain_hi[c]) for c in chains])
            order = rows[np.argsort(end[rows], kind="stable")]
            ax.plot(end[order], _running_mean(kv[order], len(chains)), label=f"mean of {len(chains)} replicas")
        for c in chains[:8]:
            lo, hi = run.chain_lo[c], run.chain_hi[c]
            ax.plot(end[lo:hi], kv[lo:hi], linewidth=0.8, label=f"{name}[{run.chains[c][1]}]")
        ax.set_ylabel(f"{name} KV used")
        ax.set_ylim(0, max(1e-3, float(kv.max()) * 1.1) if len(kv) else 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("simulated time (s)")
    fig.suptitle("KV-cache usage per pool (fraction of blocks)")
    return fig


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="same")


def attribution_bars(run: RunData, plt, analysis=None):
    from frontier_dag.analysis.run_path import RUN_CATEGORIES
    from frontier_dag.analysis.run_report import RunAnalysis

    analysis = analysis or RunAnalysis(run)
    path = analysis.path()
    groups = [(f"critical path\n(request {path.request})", path.attribution)]
    for key, group in analysis.tail().items():
        metric, q = key.split("_")
        groups.append((f"{metric.upper()} {q}\n{group[f'{metric}_ms']:,.1f} ms", group["attribution"]))
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 4, 4.5))
    bottom = np.zeros(len(groups))
    x = np.arange(len(groups))
    for cat in RUN_CATEGORIES:
        shares = np.array([g[1].get(cat, 0.0) for g in groups])
        if shares.any():
            ax.bar(x, shares, bottom=bottom, color=CATEGORY_COLORS.get(cat), label=cat, width=0.6)
            bottom += shares
    ax.set_xticks(x, [g[0] for g in groups], fontsize=8)
    ax.set_ylabel("share of time")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.suptitle("where the time goes")
    return fig


#: The plots of a run, by file name.
PLOTS = {"latency_cdf": latency_cdfs, "throughput_queue": throughput_and_queues, "kv_usage": kv_usage,
         "attribution": attribution_bars}


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_run_plots(run_dir: str | Path) -> list[Path]:
    """Draw every plot of the run in ``run_dir`` into ``run_dir/plots``; the files written."""
    plt = pyplot()
    run = load_run(run_dir)
    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name, draw in PLOTS.items():
        try:
            paths += _save(draw(run, plt), out_dir, name)
        finally:
            plt.close("all")
    return paths
