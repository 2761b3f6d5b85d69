"""Per-pool shares inside a stage that steps several pools together (AF: attention and FFN).

iterations.parquet splits an iteration's time by category but logs it under the stage's
first pool. Where a stage spans pools, each category's time is divided among them (and
the links between them) in the proportions of a representative iteration rebuilt as its
DAG: the pool's iteration of median duration, priced by the roofline (relative times of
the two pools' ops are what matters, and the roofline needs no profiles). An estimate;
the run's own categories stay exact.
"""

from __future__ import annotations

import numpy as np

from frontier_dag.analysis.rebuild import rebuild_iteration
from frontier_dag.analysis.run_data import RunData
from frontier_dag.cost.queries import CATEGORY_OF_FAMILY

Splits = dict[str, dict[str, dict[str, float]]]  # pool -> category -> member -> fraction


def member_splits(run: RunData, cost_model=None) -> Splits:
    """For every multi-pool stage, the fraction of each category's time per member pool
    (links between them are named ``src->dst``)."""
    from frontier_dag.config.run import resolve
    from frontier_dag.cost.protocol import RooflineCostModel

    out: Splits = {}
    it = run.iterations
    for name, pool in run.pools.items():
        if len(pool.members) < 2:
            continue
        rows = np.flatnonzero(it["pool"].astype(str).to_numpy() == name)
        if not len(rows):
            continue
        durations = it["duration_us"].to_numpy()[rows]
        row = int(rows[np.argsort(durations, kind="stable")[len(rows) // 2]])
        model = cost_model or RooflineCostModel(resolve(run.config, run.origin).hardware)
        rebuilt = rebuild_iteration(run, row, model)
        name_of_role = {p.role: n for n, p in run.config.cluster.pools.items()}
        graph, report = rebuilt.graph, rebuilt.report
        totals: dict[str, dict[str, float]] = {}
        for v in report.path_positions:
            node = report.compiled.nodes[v]
            a = graph.graph.nodes[node]
            resource = graph.resources[a["resource"]]
            member = (f"{name_of_role.get(resource.pool, resource.pool)}->{name_of_role.get(resource.dst, resource.dst)}"
                      if resource.kind == "link" else name_of_role.get(resource.pool, resource.pool))
            cat = CATEGORY_OF_FAMILY.get(graph.templates[a["template"]].family, "waits_and_bubbles")
            totals.setdefault(cat, {})
            totals[cat][member] = totals[cat].get(member, 0.0) + float(report.duration_us[v])
        out[name] = {cat: {m: v / sum(by.values()) for m, v in by.items()} for cat, by in totals.items()
                     if sum(by.values()) > 0}
    return out


def split_members(by_pool: dict[str, dict[str, float]], splits: Splits) -> dict[str, dict[str, float]]:
    """``by_pool`` (pool -> category -> value) with multi-pool stages' categories divided
    among their members; categories the split does not know (waits) stay where they are."""
    out: dict[str, dict[str, float]] = {}
    for pool, cats in by_pool.items():
        for cat, value in cats.items():
            targets = splits.get(pool, {}).get(cat) or {pool: 1.0}
            for member, fraction in targets.items():
                slot = out.setdefault(member, {})
                slot[cat] = slot.get(cat, 0.0) + value * fraction
    return out
