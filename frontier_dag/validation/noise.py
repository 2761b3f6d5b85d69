"""The noise floor of measured rows: configurations measured more than once, with different results.

Two rows are the same configuration when everything the simulation reads from them is the
same (system, engine and version, model, precision, mode, lengths, concurrency and
parallelism); whatever separates their measurements is the benchmark's own spread. Its
size is given as the MAPE that the best single estimate of each configuration, the mean of
its measurements, has on them: no deterministic estimate of those rows can do much better,
so a partition's errors are judged against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from frontier_dag.validation.report import PARTITIONS
from frontier_dag.validation.silicon import SiliconRow


def configuration(row: SiliconRow) -> tuple:
    """What the simulation of ``row`` depends on (not its id, not its measurements)."""
    return (row.system, row.backend, row.backend_version, row.model_path, row.mode, row.isl, row.osl,
            row.gemm_quant, row.moe_quant, row.concurrency, row.agg, row.prefill, row.decode)


def repeated(rows: Sequence[SiliconRow]) -> list[list[SiliconRow]]:
    """The configurations of ``rows`` measured more than once with different results, each as
    its rows (rows that repeat one measurement exactly are copies of it, not a second one)."""
    groups: dict[tuple, list[SiliconRow]] = {}
    for row in rows:
        if row.concurrency is not None:
            groups.setdefault(configuration(row), []).append(row)
    return [group for group in groups.values() if len({(r.ttft_ms, r.tpot_ms) for r in group}) > 1]


def _floor(groups: list[list[SiliconRow]]) -> dict:
    out: dict = {"configurations": len(groups), "rows": sum(len(g) for g in groups)}
    for metric in ("ttft", "tpot"):
        ape = []
        for group in groups:
            values = np.array([getattr(r, f"{metric}_ms") for r in group])
            ape.extend(np.abs(values - values.mean()) / values)
        out[f"{metric}_mape"] = float(np.mean(ape)) if ape else None
        out[f"{metric}_max_ape"] = float(np.max(ape)) if ape else None
    return out


def noise_floor(rows: Sequence[SiliconRow]) -> dict:
    """The noise floor of all ``rows`` and of each partition (name -> value -> figures):
    ``configurations`` measured more than once, their ``rows``, and the mean and largest
    absolute percentage errors of TTFT and TPOT (fractions) that each configuration's mean
    measurement has on its rows."""
    groups = repeated(rows)
    field = {"system": "system", "backend": "backend", "mode": "mode", "model": "model_path"}
    report = _floor(groups)
    report["partitions"] = {}
    for name in PARTITIONS:
        values = sorted({getattr(g[0], field[name]) for g in groups})
        report["partitions"][name] = {v: _floor([g for g in groups if getattr(g[0], field[name]) == v])
                                      for v in values}
    return report


def format_noise(report: dict) -> str:
    def pct(v) -> str:
        return "-" if v is None else f"{v * 100:.1f}%"

    if not report["configurations"]:
        return "noise floor: no configuration among these rows was measured twice"
    header = f"{'noise floor':<34}{'configs':>8}{'rows':>6}{'TTFT':>8}{'max':>8}{'TPOT':>8}{'max':>8}"
    lines = [header, "-" * len(header)]

    def line(name: str, f: dict) -> str:
        return (f"{name[:33]:<34}{f['configurations']:>8}{f['rows']:>6}{pct(f['ttft_mape']):>8}"
                f"{pct(f['ttft_max_ape']):>8}{pct(f['tpot_mape']):>8}{pct(f['tpot_max_ape']):>8}")

    lines.append(line("all", report))
    for name, values in report["partitions"].items():
        for value, f in values.items():
            lines.append(line(f"{name}={value}", f))
    return "\n".join(lines)
