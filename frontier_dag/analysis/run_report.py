"""The run-level report behind ``frontier-dag critical-path RUN_DIR``: the critical path of
the run (or of one request), its attribution per category and pool, the attribution at
the median and in the tail of TTFT and TPOT, and the what-if ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from frontier_dag.analysis.chain_times import ChainTimes
from frontier_dag.analysis.pool_split import Splits, member_splits, split_members
from frontier_dag.analysis.request_breakdown import tail_attribution
from frontier_dag.analysis.run_data import RunData, load_run
from frontier_dag.analysis.run_graph import RecordedGraph
from frontier_dag.analysis.run_path import RUN_CATEGORIES, PathReport, critical_path
from frontier_dag.analysis.what_if import pool_scenario, what_if


class RunAnalysis:
    """A run directory loaded once, with the pieces every view needs."""

    def __init__(self, run_dir: str | Path | RunData):
        self.run = run_dir if isinstance(run_dir, RunData) else load_run(run_dir)
        self.graph = RecordedGraph(self.run)
        self.times = ChainTimes(self.run)
        self._splits: Splits | None = None
        self._rebuilt: list[dict[str, Any]] | None = None

    @property
    def splits(self) -> Splits:
        """How multi-pool stages (AF) divide their time among their pools (see pool_split)."""
        if self._splits is None:
            multi = any(len(p.members) > 1 for p in self.run.pools.values())
            self._splits = member_splits(self.run) if multi else {}
        return self._splits

    @property
    def rebuilt(self) -> list[dict[str, Any]]:
        """The slowest iteration of each pool rebuilt and checked against its record."""
        if self._rebuilt is None:
            from frontier_dag.analysis.rebuild import check_rebuilt

            self._rebuilt = check_rebuilt(self.run)
        return self._rebuilt

    def path(self, request: int | None = None) -> PathReport:
        return critical_path(self.graph, self.times, request)

    def by_pool(self, path: PathReport) -> dict[str, dict[str, float]]:
        """The path's shares per pool and category, AF stages divided among their pools."""
        return split_members(path.by_pool(), self.splits)

    def tail(self) -> dict[str, Any]:
        tail = tail_attribution(self.run, self.times)
        for group in tail.values():
            group["by_pool"] = split_members(group["by_pool"], self.splits)
        return tail

    def what_if(self, factor: float, path: PathReport | None = None) -> dict[str, Any]:
        return what_if(self.graph, factor, path_shares(self.run, path) if path is not None else None)


def path_shares(run: RunData, path: PathReport) -> dict[str, float]:
    """A path's share per what-if scenario name: each category, and ``pool:NAME``."""
    shares = dict(path.attribution)
    total = sum(path.attribution_us.values())
    for pool, cats in path.by_pool_us.items():
        if pool in run.pools:
            shares[pool_scenario(run.pools[pool].members)] = sum(cats.values()) / total if total > 0 else 0.0
    return shares


def run_report(source: str | Path | RunAnalysis, request: int | None = None, what_if_factor: float = 2.0) -> dict[str, Any]:
    """Everything ``critical-path RUN_DIR --json`` prints."""
    analysis = source if isinstance(source, RunAnalysis) else RunAnalysis(source)
    run, graph = analysis.run, analysis.graph
    path = analysis.path(request)
    rq = run.requests.iloc[path.request]
    report: dict[str, Any] = {
        "run_dir": str(run.run_dir),
        "scope": path.scope,
        "request": path.request,
        "start_us": path.start_us,
        "end_us": path.end_us,
        "length_us": path.length_us,
        "starts_at": path.source,
        "critical_path": path.rows,
        "attribution": path.attribution,
        "attribution_us": path.attribution_us,
        "attribution_by_pool": analysis.by_pool(path),
        "request_latency_ms": {k: _num(rq[f"{k}_ms"]) for k in ("ttft", "tpot", "e2e")},
        "pools": {name: {"role": p.role, "stage": p.stage, "serves": p.serves, "replicas": p.replicas,
                         "members": list(p.members), "utilization": run.summary.get("utilization", {}).get(name),
                         **({"pipeline": run.summary["pipeline"][name]}
                            if name in (run.summary.get("pipeline") or {}) else {})}
                  for name, p in run.pools.items()},
        "pool_split": ("estimated: each multi-pool stage's categories divided among its pools as in a rebuilt "
                       "iteration of median duration" if analysis.splits else None),
        "checks": {"attributed_iterations": run.attributed, "unexplained_starts": graph.unexplained,
                   "inconsistent_starts": graph.mismatched, "rebuilt_iterations": analysis.rebuilt},
        "warnings": [c["warning"] for c in analysis.rebuilt if c.get("warning")],
    }
    if path.scope == "run":
        report["tail"] = analysis.tail()
    report["what_if"] = analysis.what_if(what_if_factor, path)
    return report


def _num(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


__all__ = ["RUN_CATEGORIES", "RunAnalysis", "path_shares", "run_report"]
