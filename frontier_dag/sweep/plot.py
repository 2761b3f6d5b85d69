"""The Pareto figure: tokens/s/GPU against tokens/s/user per strategy with its frontier,
the TPOT SLA line and the best points labelled; beside it, TTFT against tokens/s/user
with the TTFT SLA line. Figures are the points' steady-window ones (a note says so)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from frontier_dag.sweep.pareto import Frontier, X, Y, label


def draw(front: Frontier, out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.6, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    table = front.table
    sla_x = 1000.0 / front.tpot_ms
    best = front.best()
    p = front.percentile
    for i, strategy in enumerate(front.strategies):
        color = colors[i % len(colors)]
        rows = table[table["group"] == strategy]
        good, bad = rows[rows["meets_ttft"]], rows[~rows["meets_ttft"]]
        left.scatter(good[X], good[Y], s=18, color=color, alpha=0.45, linewidths=0)
        left.scatter(bad[X], bad[Y], s=18, facecolors="none", edgecolors=color, alpha=0.45, linewidths=0.8)
        line = front.frontier(strategy)
        left.plot(line[X], line[Y], "-o", color=color, markersize=5, linewidth=2, label=f"{strategy} frontier")
        right.scatter(rows[X], rows["ttft"], s=18, color=color, alpha=0.7, label=strategy)
        for _, row in best[best["group"] == strategy].iterrows():
            left.scatter([row[X]], [row[Y]], s=140, marker="*", color=color, edgecolors="black", zorder=5)
            # below and right of the star, the config wrapped short, so that close stars' labels do not collide
            config = textwrap.fill(label(row, front.axes), 26)
            text = f"{strategy}: {row[Y]:,.0f} tok/s/GPU\n{config}"
            left.annotate(text, (row[X], row[Y]), xytext=(9, -9), textcoords="offset points", fontsize=8, va="top",
                          bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": color, "alpha": 0.9}, zorder=6)
    for axis in (left, right):
        axis.axvline(sla_x, color="crimson", linestyle="--", linewidth=1.2)
        axis.set_xlabel(f"output tokens/s per user (1000 / TPOT {p})")
        axis.grid(alpha=0.3)
    ymax = left.get_ylim()[1] * 1.15  # room for the labels
    left.set_ylim(0, ymax)
    left.text(sla_x, ymax, f" TPOT {p} <= {front.tpot_ms:g} ms", color="crimson", fontsize=8, va="top")
    left.set_ylabel("output tokens/s per GPU")
    left.legend(loc="lower left", fontsize=8, title="filled: TTFT SLA met; hollow: missed", title_fontsize=7)
    left.set_title(title or "Pareto frontier per strategy", fontsize=10)
    right.axhline(front.ttft_ms, color="crimson", linestyle="--", linewidth=1.2)
    right.text(right.get_xlim()[0], front.ttft_ms, f" TTFT {p} <= {front.ttft_ms:g} ms", color="crimson",
               fontsize=8, va="bottom")
    if (table["ttft"] > 0).all() and len(table):
        right.set_yscale("log")
    right.set_ylabel(f"TTFT {p} (ms)")
    right.set_title("time to first token", fontsize=10)
    right.legend(fontsize=8)
    fig.text(0.005, 0.005, f"figures: {front.figures} (warm-up and drain left out; see docs/simulation.md)",
             fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
