"""One page per sweep (``frontier-dag report SWEEP_DIR --out report.html``): the Pareto
frontier of each strategy under the SLA, the best points, every point in a table, and the
points that did not finish grouped by reason. Self-contained, as a run's page."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from frontier_dag.render.html import Html, esc, image_figure, page, table, warnings_box
from frontier_dag.sweep import pareto as frontier
from frontier_dag.sweep.store import load_results, read_spec

#: Points shown in the table (the best first); the rest are counted.
MAX_ROWS = 400


def _cell(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def sweep_page(directory: str | Path, percentile: str = "p90") -> str:
    """The report page of the sweep in ``directory`` as HTML."""
    directory = Path(directory)
    results = load_results(directory)
    spec = read_spec(directory) if directory.is_dir() else {}
    title = spec.get("name") or directory.name
    statuses = results["status"].value_counts().to_dict() if "status" in results.columns else {}
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    subtitle = [f"{len(results):,} points: {counts}", f"sweep directory {directory}"]
    sections = []
    finished = results[results["status"] == "ok"] if "status" in results.columns else results
    if len(finished):
        front = frontier.compute(results, percentile=percentile, by="strategy" if "strategy" in results.columns else
                                 next(c for c in results.columns if c.startswith("axis.")),
                                 order=_order(spec))
        sections.append(("frontier", "Pareto frontier", _frontier_section(front, title)))
        sections.append(("points", "Points", _points_section(results, front)))
    else:
        sections.append(("frontier", "Pareto frontier", "<p>No point finished, so there is no frontier.</p>"))
    sections.append(("unfinished", "Points that did not finish", _unfinished_section(results)))
    if spec:
        import yaml

        sections.append(("sweep", "Sweep file", f"<pre>{esc(yaml.safe_dump(spec, sort_keys=False))}</pre>"))
    return page(f"frontier-dag sweep {title}", subtitle, sections)


def _order(spec: dict) -> list[str]:
    axis = (spec.get("axes") or {}).get(spec.get("strategy") or "strategy")
    if isinstance(axis, dict) and isinstance(axis.get("choices"), dict):
        return [str(k) for k in axis["choices"]]
    return [str(v) for v in axis] if isinstance(axis, list) else []


def _frontier_section(front: frontier.Frontier, title: str) -> str:
    from frontier_dag.sweep.plot import draw

    with tempfile.TemporaryDirectory() as folder:
        path = draw(front, Path(folder) / "pareto.png", title=title)
        figure = image_figure(path.read_bytes(), "image/png",
                              "left: output tokens/s per GPU against tokens/s per user (1000 / TPOT) per strategy, "
                              "its frontier as a line, the best point under the SLA as a star; right: TTFT")
    p = front.percentile
    report = frontier.report(front)
    best_rows = [(s, f"{r['tokens_per_s_per_gpu']:,.1f}", f"{r['tokens_per_s_per_user']:,.1f}",
                  f"{r[f'ttft_ms_{p}']:,.0f}", f"{r[f'tpot_ms_{p}']:,.1f}", "" if r["gpus"] is None else f"{r['gpus']}",
                  r["label"], r["point_id"]) for s, r in report["best"].items()]
    sla = (f"<p>SLA: TTFT {p} &le; {front.ttft_ms:g} ms and TPOT {p} &le; {front.tpot_ms:g} ms "
           f"(&ge; {1000 / front.tpot_ms:.1f} tokens/s per user). Figures: {esc(front.figures)} (warm-up and drain "
           f"left out). {int(front.table['meets_sla'].sum())} of {len(front.table)} finished points meet it.</p>")
    best = ("<h3>the best point of each strategy (its frontier point with the most tokens/s per GPU under the SLA)</h3>"
            + table(("strategy", "tok/s/GPU", "tok/s/user", f"TTFT {p} ms", f"TPOT {p} ms", "GPUs", "config", "point"),
                    best_rows, text_columns=(0, 6, 7))) if best_rows else "<p>No point meets the SLA.</p>"
    return sla + figure + best


def _points_section(results: pd.DataFrame, front: frontier.Frontier) -> str:
    t = front.table.sort_values([frontier.Y, frontier.X], ascending=False)
    p = front.percentile
    rows, classes = [], []
    for _, row in t.head(MAX_ROWS).iterrows():
        rows.append((row["group"], frontier.label(row, front.axes), _cell(row[frontier.Y]), _cell(row[frontier.X]),
                     _cell(row["ttft"], 0), _cell(row["tpot"], 2), "" if pd.isna(row.get("gpus")) else f"{int(row['gpus'])}",
                     "yes" if row["meets_sla"] else ("TTFT ok" if row["meets_ttft"] else "no"),
                     Html("&#9733;") if row["on_frontier"] else "", _warnings(row), row["point_id"]))
        classes.append("good" if row["on_frontier"] and row["meets_sla"] else "")
    more = f"<p class=\"note\">{len(t) - MAX_ROWS:,} more points not shown.</p>" if len(t) > MAX_ROWS else ""
    return ('<p class="note">Every finished point, the most tokens/s per GPU first; &#9733;: on its strategy\'s '
            "frontier; green: on the frontier and within the SLA.</p>"
            + table(("strategy", "config", "tok/s/GPU", "tok/s/user", f"TTFT {p} ms", f"TPOT {p} ms", "GPUs",
                     "meets SLA", "frontier", "warnings", "point"), rows, text_columns=(0, 1, 9, 10),
                    row_classes=classes) + more)


def _warnings(row: pd.Series) -> str:
    value = row.get("steady.warnings")
    return value.replace("\n", "; ") if isinstance(value, str) else ""


def _unfinished_section(results: pd.DataFrame) -> str:
    """The points that did not finish, grouped by status and reason (reasons that differ only
    in their numbers are one group, shown by its first example)."""
    if "status" not in results.columns:
        return "<p>All points finished.</p>"
    rest = results[results["status"] != "ok"]
    if rest.empty:
        return "<p>Every point finished.</p>"
    groups: dict[tuple[str, str], list] = {}
    for _, row in rest.iterrows():
        reason = row.get("reason") if isinstance(row.get("reason"), str) else "(no reason recorded)"
        groups.setdefault((row["status"], re.sub(r"\d[\d,.]*", "N", reason)), []).append((reason, row["point_id"]))
    rows = []
    for (status, _), members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        ids = ", ".join(pid for _, pid in members[:6]) + (", ..." if len(members) > 6 else "")
        rows.append((status, f"{len(members):,}", members[0][0] + (" (and the like)" if len(members) > 1 else ""), ids))
    lines = []
    if (rest["status"] == "failed").any():
        lines.append("some points failed: run them again with frontier-dag sweep SWEEP.yaml --out DIR --resume "
                     "--retry-failed")
    return warnings_box(lines) + table(("status", "points", "reason", "points' ids"), rows, text_columns=(0, 2, 3))
