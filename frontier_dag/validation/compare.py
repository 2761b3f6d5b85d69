"""Several estimates of the same silicon rows side by side: each one's coverage, and the
mean and median absolute percentage errors of TTFT and TPOT (fractions: 0.05 is 5%) on
the rows that every one of them estimates, with the number of those rows on which each
is the closest to the measurement.

An estimate is a set of columns of the per-row records (``Estimate``): the simulation's
(``SIMULATION``), aiconfigurator's (``baseline.AICONFIGURATOR``), and any other that
follows the same pattern (a calibrated simulation, say) is one more ``Estimate``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from frontier_dag.validation.report import PARTITIONS

METRICS = ("ttft", "tpot")


@dataclass(frozen=True)
class Estimate:
    """Where one estimate's result lies in a per-row record."""

    key: str            # its key in the JSON report
    short: str          # its column header in the text table
    status: str         # record field: ``ok`` when the row was estimated
    reason: str         # record field: why it was not
    ttft_ape: str       # record fields: absolute percentage errors (fractions)
    tpot_ape: str

    def ape(self, frame: pd.DataFrame, metric: str) -> np.ndarray:
        return frame[getattr(self, f"{metric}_ape")].to_numpy(dtype=float)

    def covered(self, frame: pd.DataFrame) -> np.ndarray:
        return (frame[self.status] == "ok").to_numpy()


SIMULATION = Estimate("frontier_dag", "fdag", "status", "reason", "ttft_ape", "tpot_ape")


def reason_key(reason: str) -> str:
    """A reason without its row-specific details (a table key in braces, a file), for counting."""
    return re.split(r" \{| at ", reason)[0][:160]


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * 100:.1f}%"


def _errors(ape: np.ndarray) -> dict:
    out = {}
    for name, fn in (("mape", np.mean), ("median_ape", np.median)):
        out[name] = float(fn(ape)) if len(ape) else None
    return out


def _group(frame: pd.DataFrame, estimates: Sequence[Estimate]) -> dict:
    out: dict = {"rows_total": int(len(frame))}
    shared = np.ones(len(frame), dtype=bool)
    for est in estimates:
        covered = est.covered(frame)
        figures = {"rows_covered": int(covered.sum()),
                   "coverage": float(covered.mean()) if len(frame) else 0.0}
        for metric in METRICS:
            ape = est.ape(frame, metric)
            ape = ape[covered & np.isfinite(ape)]
            figures.update({f"{metric}_{k}": v for k, v in _errors(ape).items()})
            shared &= np.isfinite(est.ape(frame, metric))
        shared &= covered
        out[est.key] = figures
    both: dict = {"rows": int(shared.sum())}
    closest: dict = {}
    for metric in METRICS:
        apes = np.stack([est.ape(frame, metric)[shared] for est in estimates]) if estimates else np.zeros((0, 0))
        for est, ape in zip(estimates, apes, strict=True):
            both.setdefault(est.key, {}).update({f"{metric}_{k}": v for k, v in _errors(ape).items()})
        best = apes.min(axis=0) if apes.size else np.zeros(0)
        alone = (apes == best).sum(axis=0) == 1 if apes.size else np.zeros(0, dtype=bool)
        counts = {est.key: int(((ape == best) & alone).sum()) for est, ape in zip(estimates, apes, strict=True)}
        counts["tie"] = int((~alone).sum())
        closest[metric] = counts
    both["closest"] = closest
    out["shared"] = both
    return out


def compare(records: Sequence[dict], estimates: Sequence[Estimate],
            partitions: Sequence[str] = PARTITIONS) -> dict:
    """The side-by-side report: ``estimates`` (their keys), the figures of all rows and of
    each partition (name -> value -> figures), and each estimate's rows not covered with
    the reasons. A group's figures: ``rows_total``; per estimate ``rows_covered``,
    ``coverage`` and the errors on the rows it covers (``ttft_mape``, ``ttft_median_ape``,
    ``tpot_mape``, ``tpot_median_ape``); and ``shared``: the rows every estimate covers,
    each one's errors on them, and ``closest`` (metric -> estimate -> rows on which it is
    strictly the closest, ``tie`` for the rest)."""
    frame = pd.DataFrame(list(records))
    report = {"estimates": [est.key for est in estimates], "all": _group(frame, estimates)}
    report["partitions"] = {
        name: {str(value): _group(group, estimates) for value, group in frame.groupby(name, sort=True)}
        for name in partitions if name in frame
    }
    report["not_covered"], report["reasons"] = {}, {}
    for est in estimates:
        missed = frame[~est.covered(frame)]
        report["not_covered"][est.key] = [
            {"index": int(r["index"]), "id": r["id"], "status": r[est.status], "reason": r[est.reason]}
            for r in missed.to_dict("records")
        ]
        report["reasons"][est.key] = {str(k): int(v) for k, v in
                                      missed[est.reason].map(reason_key).value_counts().items()}
    return report


def format_comparison(report: dict, estimates: Sequence[Estimate]) -> str:
    """One line per partition: each estimate's coverage, then its errors and the rows on which
    it is the closest, on the rows every estimate covers (``both``)."""
    names = [est.short for est in estimates]
    width = 7 * len(names)

    def block(title: str) -> str:
        return f" {title:^{width}}"

    top = (f"{'':<34}{'':>6} {'coverage':^{width}}{'':>6}" + block("TTFT MAPE") + block("TTFT median")
           + block("TPOT MAPE") + block("TPOT median") + block("closest TTFT") + block("closest TPOT"))
    cols = "".join(f"{n:>7}" for n in names)
    header = f"{'partition':<34}{'rows':>6} {cols}{'both':>6}" + f" {cols}" * 6
    lines = [top, header, "-" * len(header)]

    def line(name: str, g: dict) -> str:
        shared = g["shared"]
        cover = "".join(f"{_pct(g[est.key]['coverage']):>7}" for est in estimates)
        out = f"{name:<34}{g['rows_total']:>6} {cover}{shared['rows']:>6}"
        for field in ("ttft_mape", "ttft_median_ape", "tpot_mape", "tpot_median_ape"):
            out += " " + "".join(f"{_pct(shared[est.key][field]):>7}" for est in estimates)
        for metric in METRICS:
            out += " " + "".join(f"{shared['closest'][metric][est.key]:>7}" for est in estimates)
        return out

    lines.append(line("all", report["all"]))
    for name, values in report["partitions"].items():
        for value, g in values.items():
            lines.append(line(f"{name}={value}"[:33], g))
    return "\n".join(lines)


def format_not_covered(report: dict, estimate: Estimate, label: str, limit: int = 12) -> str:
    reasons = report["reasons"][estimate.key]
    if not reasons:
        return f"{label}: every row estimated"
    lines = [f"{label}: {sum(reasons.values())} row(s) not estimated:"]
    for reason, count in list(reasons.items())[:limit]:
        lines.append(f"  {count:>5}  {reason}")
    return "\n".join(lines)
