"""Design-space sweeps: a base config and axes expanded into points, points that cannot
fit in memory pruned before simulating, the rest run in parallel on local processes or on
Ray, each recorded in DIR/results.parquet as it finishes; and the SLA-aware Pareto
frontier of tokens/s/GPU against tokens/s/user per strategy. See docs/sweeps.md.

    from frontier_dag.sweep import load_sweep, run_sweep
    report = run_sweep(load_sweep("examples/sweeps/qwen3_30b_h200.yaml"), "runs/sweep")
"""

from frontier_dag.sweep.points import Point, expand
from frontier_dag.sweep.runner import SweepReport, run_sweep
from frontier_dag.sweep.spec import Sweep, load_sweep, sweep_from_dict
from frontier_dag.sweep.store import load_results

__all__ = ["Point", "Sweep", "SweepReport", "expand", "load_results", "load_sweep", "run_sweep", "sweep_from_dict"]
