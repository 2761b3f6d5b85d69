"""SLA-aware Pareto frontiers of a sweep: output tokens/s per GPU (what a deployment costs)
against output tokens/s per user (1000 / TPOT: what each user sees).

A point *meets the TTFT SLA* when its TTFT percentile is within ``slo.ttft_ms``, and
*meets the SLA* when its TPOT percentile is within ``slo.tpot_ms`` too (both read from
the point's own config unless given). The frontier of a strategy is the set of its
points meeting the TTFT SLA that no other such point beats on both axes; its best point
is the frontier point with the most tokens/s/GPU that meets the whole SLA.

Every figure is the point's steady-window one (``steady.*`` of its summary: warm-up and
drain left out, see ``frontier_dag.sim.steady``); points recorded before summaries had a
steady window fall back to their whole-run figures, and the frontier says how many did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from frontier_dag.errors import FrontierDagError

X, Y = "tokens_per_s_per_user", "tokens_per_s_per_gpu"
Y_COLUMN = "output_tokens_per_s_per_gpu"  # the summary's name for Y


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True for the points that no other point dominates (another with x' >= x and y' >= y,
    one of them strictly), maximising both. Equal points are all kept."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.zeros(len(x), dtype=bool)
    order = np.lexsort((-y, -x))  # x descending, then y descending
    best_y = -np.inf  # the highest y among points of strictly larger x
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and x[order[j]] == x[order[i]]:
            j += 1
        group = order[i:j]
        top = y[group[0]]
        if top > best_y:
            keep[group[y[group] == top]] = True
        best_y = max(best_y, top)
        i = j
    return keep


@dataclass
class Frontier:
    table: pd.DataFrame  # every ok point with x, y, meets_ttft, meets_sla, on_frontier, strategy
    ttft_ms: float
    tpot_ms: float
    percentile: str
    by: str
    axes: list[str] = field(default_factory=list)  # the axis columns that vary
    order: list[str] = field(default_factory=list)  # strategies in the sweep file's order
    whole_run: int = 0  # points without steady figures, read from their whole-run ones

    @property
    def figures(self) -> str:
        """Which figures the frontier compares, in words."""
        if not self.whole_run:
            return "steady window"
        if self.whole_run == len(self.table):
            return "whole run (the points predate steady-window figures)"
        return f"steady window; whole run for {self.whole_run} points that predate it"

    @property
    def strategies(self) -> list[str]:
        present = list(dict.fromkeys(self.table["group"]))
        return [s for s in self.order if s in present] + sorted(s for s in present if s not in self.order)

    def frontier(self, strategy: str) -> pd.DataFrame:
        t = self.table
        return t[(t["group"] == strategy) & t["on_frontier"]].sort_values(X)

    def best(self) -> pd.DataFrame:
        """Per strategy, its frontier point with the most tokens/s/GPU that meets the SLA."""
        t = self.table[self.table["on_frontier"] & self.table["meets_sla"]]
        if t.empty:
            return t
        return t.sort_values(Y, ascending=False).groupby("group", sort=False).head(1)

    def top(self, n: int = 10) -> pd.DataFrame:
        t = self.table[self.table["meets_sla"]]
        return t.sort_values([Y, X], ascending=False).head(n)


def compute(results: pd.DataFrame, *, percentile: str = "p90", ttft_ms: float | None = None,
            tpot_ms: float | None = None, by: str = "strategy", order: list[str] | None = None) -> Frontier:
    """The frontier of each group (``by``: a column such as ``strategy``, ``workflow`` or
    ``axis.NAME``); ``order`` lists the groups for the legend and tables."""
    if by not in results.columns:
        choices = ", ".join(c for c in results.columns if c in ("strategy", "workflow") or c.startswith("axis."))
        raise FrontierDagError(f"--by {by}: no such column in the results; use one of {choices}")
    ok = results[results["status"] == "ok"].copy() if "status" in results.columns else results.copy()
    # a point's steady-window figures where its summary has them, else all its whole-run ones
    steady = _column(ok, f"steady.{Y_COLUMN}").notna()
    for name, column in (("tpot", f"tpot_ms.{percentile}"), ("ttft", f"ttft_ms.{percentile}"), (Y, Y_COLUMN)):
        if column not in ok.columns and f"steady.{column}" not in ok.columns:
            raise FrontierDagError(f"the results have no column {column}: no point finished, "
                                   "or they do not come from frontier-dag sweep")
        ok[name] = _column(ok, f"steady.{column}").where(steady, _column(ok, column))
    ttft_sla = ttft_ms if ttft_ms is not None else _sla(ok, "slo.ttft_ms", 2000.0)
    tpot_sla = tpot_ms if tpot_ms is not None else _sla(ok, "slo.tpot_ms", 50.0)
    ok[X] = 1000.0 / ok["tpot"].where(ok["tpot"] > 0)
    keep = np.isfinite(ok[X]) & np.isfinite(ok[Y])
    ok = ok[keep].copy()
    ok["meets_ttft"] = ok["ttft"] <= ttft_sla
    ok["meets_sla"] = ok["meets_ttft"] & (ok["tpot"] <= tpot_sla)
    ok["group"] = ok[by].astype(str)
    ok["on_frontier"] = False
    for _, rows in ok[ok["meets_ttft"]].groupby("group", sort=False):
        ok.loc[rows.index[pareto_mask(rows[X].to_numpy(), rows[Y].to_numpy())], "on_frontier"] = True
    axes = [c for c in ok.columns if c.startswith("axis.") and c != by and ok[c].astype(str).nunique() > 1
            and not (ok[c].astype(str) == ok["group"]).all()]
    return Frontier(ok.reset_index(drop=True), float(ttft_sla), float(tpot_sla), percentile, by, axes,
                    [str(s) for s in order or []], int((~steady[keep]).sum()))


def _column(frame: pd.DataFrame, column: str) -> pd.Series:
    """``column`` as numbers; NaN throughout where the table lacks it."""
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce")


def _sla(frame: pd.DataFrame, column: str, default: float) -> float:
    if column not in frame.columns or frame[column].dropna().empty:
        return default
    return float(frame[column].dropna().mode().iloc[0])


def label(row: pd.Series, axes: list[str]) -> str:
    """A point's varying axis values, short: ``budget=32, clients=64``."""
    parts = []
    for column in axes:
        value = row.get(column)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parts.append(f"{column.removeprefix('axis.').split('.')[-1]}={value}")
    return ", ".join(parts)


def report(front: Frontier, top: int = 10) -> dict[str, Any]:
    """The frontier as JSON: the SLA, each strategy's frontier and best point, the top points."""
    def point(row: pd.Series) -> dict[str, Any]:
        return {"point_id": row["point_id"], "strategy": row["group"], "label": label(row, front.axes),
                "tokens_per_s_per_gpu": float(row[Y]), "tokens_per_s_per_user": float(row[X]),
                f"ttft_ms_{front.percentile}": float(row["ttft"]), f"tpot_ms_{front.percentile}": float(row["tpot"]),
                "gpus": None if pd.isna(row.get("gpus")) else int(row["gpus"]),
                "axes": {c.removeprefix("axis."): _plain(row[c]) for c in front.table.columns
                         if c.startswith("axis.") and not pd.isna(row[c])},
                "meets_sla": bool(row["meets_sla"])}

    return {
        "sla": {"ttft_ms": front.ttft_ms, "tpot_ms": front.tpot_ms, "percentile": front.percentile,
                "min_tokens_per_s_per_user": 1000.0 / front.tpot_ms},
        "figures": front.figures,
        "by": front.by,
        "points": int(len(front.table)),
        "frontier": {s: [point(r) for _, r in front.frontier(s).iterrows()] for s in front.strategies},
        "best": {s: point(r) for s in front.strategies for _, r in front.best().iterrows() if r["group"] == s},
        "top": [point(r) for _, r in front.top(top).iterrows()],
    }


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def format_table(front: Frontier, top: int = 10) -> str:
    rows = front.top(top)
    p = front.percentile
    lines = [f"SLA: TTFT {p} <= {front.ttft_ms:g} ms, TPOT {p} <= {front.tpot_ms:g} ms "
             f"(>= {1000 / front.tpot_ms:.1f} tokens/s/user); {len(front.table)} finished points, "
             f"{int(front.table['meets_sla'].sum())} meet it; figures: {front.figures}"]
    if rows.empty:
        lines.append("no point meets the SLA")
        return "\n".join(lines)
    head = f"{'#':>3}  {'strategy':<12}{'tok/s/GPU':>11}{'tok/s/user':>12}{'TTFT ' + p:>11}{'TPOT ' + p:>11}{'GPUs':>6}  config"
    lines.append(head)
    for rank, (_, row) in enumerate(rows.iterrows(), 1):
        gpus = "" if pd.isna(row.get("gpus")) else f"{int(row['gpus'])}"
        lines.append(f"{rank:>3}  {row['group']:<12}{row[Y]:>11,.1f}{row[X]:>12,.1f}{row['ttft']:>11,.0f}"
                     f"{row['tpot']:>11,.1f}{gpus:>6}  {label(row, front.axes)} [{row['point_id']}]")
    return "\n".join(lines)
