"""Errors of a validation run: mean and median absolute percentage error of TTFT and
TPOT (fractions: 0.05 is 5%), overall and per partition, and the coverage."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Partitions the report breaks the errors down by (columns of the per-row records).
PARTITIONS = ("system", "backend", "mode", "model")


def _stats(frame: pd.DataFrame, errors: bool = True) -> dict:
    ok = frame[frame["status"] == "ok"]
    out = {"rows_total": int(len(frame)), "rows_simulated": int(len(ok)),
           "coverage": float(len(ok) / len(frame)) if len(frame) else 0.0}
    if not errors:
        return out
    for metric in ("ttft", "tpot"):
        ape = ok[f"{metric}_ape"].to_numpy(dtype=float)
        ape = ape[np.isfinite(ape)]
        out[f"{metric}_mape"] = float(ape.mean()) if len(ape) else None
        out[f"{metric}_median_ape"] = float(np.median(ape)) if len(ape) else None
        out[f"{metric}_within_20pct"] = float((ape <= 0.2).mean()) if len(ape) else None
    return out


def summarize_records(records: Sequence[dict], partitions: Sequence[str] = PARTITIONS, errors: bool = True) -> dict:
    """The JSON report: overall figures, ``partitions`` (name -> value -> figures) and the
    rows that were not simulated with their reasons. ``errors=False``: the coverage alone
    (rows, rows simulated, their share), no error is computed or reported."""
    frame = pd.DataFrame(list(records))
    report = _stats(frame, errors)
    report["partitions"] = {
        name: {str(value): _stats(group, errors) for value, group in frame.groupby(name, sort=True)}
        for name in partitions if name in frame
    }
    not_simulated = frame[frame["status"] != "ok"]
    report["not_simulated"] = [
        {"index": int(r["index"]), "id": r["id"], "status": r["status"], "reason": r["reason"]}
        for r in not_simulated.to_dict("records")
    ]
    report["reasons"] = {str(k): int(v) for k, v in not_simulated["reason"].map(_reason_key).value_counts().items()}
    return report


def _reason_key(reason: str) -> str:
    """A reason without what names its row, for counting: the leading ``silicon row N (id): ``
    goes, and a long reason keeps its first clause."""
    reason = re.sub(r"^silicon row \d+ \([^)]*\): ", "", reason)
    return reason.split(";")[0][:160] if len(reason) > 160 else reason


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * 100:.1f}%"


def format_table(report: dict) -> str:
    """The overall line and one line per partition value."""
    header = (f"{'partition':<34}{'rows':>7}{'sim':>6}{'cover':>8}{'TTFT MAPE':>11}{'med':>8}"
              f"{'TPOT MAPE':>11}{'med':>8}")
    lines = [header, "-" * len(header)]

    def line(name: str, s: dict) -> str:
        return (f"{name:<34}{s['rows_total']:>7}{s['rows_simulated']:>6}{_pct(s['coverage']):>8}"
                f"{_pct(s['ttft_mape']):>11}{_pct(s['ttft_median_ape']):>8}{_pct(s['tpot_mape']):>11}"
                f"{_pct(s['tpot_median_ape']):>8}")

    lines.append(line("all", report))
    for name, values in report["partitions"].items():
        for value, s in values.items():
            lines.append(line(f"{name}={value}"[:33], s))
    return "\n".join(lines)


def format_coverage(report: dict) -> str:
    """The overall coverage and one line per partition value, without errors."""
    header = f"{'partition':<44}{'rows':>7}{'sim':>7}{'cover':>8}"
    lines = [header, "-" * len(header)]
    for name, s in [("all", report), *((f"{n}={v}"[:43], s) for n, values in report["partitions"].items()
                                        for v, s in values.items())]:
        lines.append(f"{name:<44}{s['rows_total']:>7}{s['rows_simulated']:>7}{_pct(s['coverage']):>8}")
    return "\n".join(lines)


def format_reasons(report: dict, limit: int = 12, done: str = "simulated") -> str:
    if not report["reasons"]:
        return f"every row was {done}"
    lines = [f"{sum(report['reasons'].values())} row(s) not {done}:"]
    for reason, count in list(report["reasons"].items())[:limit]:
        lines.append(f"  {count:>5}  {reason}")
    return "\n".join(lines)
