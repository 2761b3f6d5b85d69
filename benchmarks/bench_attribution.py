"""What recording the run-level critical path costs: ``simulate(config, attribute=True)``
(each iteration's time split by category, needed by ``frontier-dag critical-path RUN_DIR``)
against ``attribute=False``, on the examples priced by the roofline.

    python benchmarks/bench_attribution.py [--requests N] [--repeats R] [CONFIG ...]

Runs alternate between the two settings and the fastest of ``R`` runs of each is kept, in
process CPU time (wall time in brackets), so that other load on a shared machine inflates
neither side. Issue 5 allows at most 20%. Stages whose iteration time is a fixed weighted
sum of template costs (a TP chain, as in the co-located example) split it by category
for free whether or not ``attribute`` is set; the cost is in the other stages (AF
ping-pong, EP-MoE), where each iteration's split is the gradient of its longest path.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ("examples/colocated_llama3_8b.yaml", "examples/af_pingpong_llama3_70b.yaml")


def main() -> None:
    from frontier_dag.sim.assembly import assemble
    from frontier_dag.sim.run import simulate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=DEFAULT)
    parser.add_argument("--requests", type=int, default=None, help="workload.num_requests (default: the config's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for path in args.configs:
        overrides = ["predictor.source=roofline"]
        if args.requests:
            overrides.append(f"workload.num_requests={args.requests}")
        assembly = assemble(ROOT / path, overrides=overrides)
        cpu = {True: float("inf"), False: float("inf")}
        wall = dict(cpu)
        iterations = 0
        for _ in range(args.repeats):
            for attribute in (False, True):
                started, started_cpu = time.perf_counter(), time.process_time()
                result = simulate(assembly, attribute=attribute)
                cpu[attribute] = min(cpu[attribute], time.process_time() - started_cpu)
                wall[attribute] = min(wall[attribute], time.perf_counter() - started)
                iterations = result.summary["iterations"]
        overhead = cpu[True] / cpu[False] - 1
        print(f"{path}: {iterations:,} iterations; CPU attribute=False {cpu[False]:.2f} s "
              f"({wall[False]:.2f} s wall), attribute=True {cpu[True]:.2f} s ({wall[True]:.2f} s wall): "
              f"overhead {overhead * 100:+.1f}%", flush=True)


if __name__ == "__main__":
    main()
