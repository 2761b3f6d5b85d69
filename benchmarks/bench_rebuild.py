"""How close rebuilt iterations come to the recorded ones: the figures behind the 10%
tolerance of ``frontier_dag.analysis.rebuild`` (docs/analysis.md, Rebuilt iterations).

    python benchmarks/bench_rebuild.py [--requests N] [--sample K] [CONFIG ...]

Simulates each config (its own predictor; ``--set``-style ``KEY=VALUE`` arguments after a
config apply to it), then rebuilds, for every pool, its slowest and median iteration and
``K`` random ones, and prints the largest difference between rebuilt and recorded time.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ("examples/colocated_llama3_8b.yaml", "examples/pd_llama3_70b.yaml", "examples/pd_per_layer_qwen3_32b.yaml",
           "examples/af_pingpong_llama3_70b.yaml", "examples/pd_af_pingpong.yaml", "examples/ep_moe_qwen3_235b.yaml",
           "examples/pd_ep_moe_deepseek_v3.yaml", "examples/af_ep_moe_deepseek_v3.yaml")


def configs(arguments: list[str]) -> list[tuple[str, dict[str, str]]]:
    """``CONFIG [KEY=VALUE ...] CONFIG ...`` as (config, overrides) pairs."""
    out: list[tuple[str, dict[str, str]]] = []
    for argument in arguments:
        if "=" in argument and out:
            key, value = argument.split("=", 1)
            out[-1][1][key] = value
        else:
            out.append((argument, {}))
    return out


def main() -> None:
    import frontier_dag as fd
    from frontier_dag.analysis.rebuild import rebuild_iteration

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=list(DEFAULT))
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--sample", type=int, default=25)
    args = parser.parse_args()
    for config, overrides in configs(args.configs):
        rng = np.random.default_rng(0)
        path = Path(config) if Path(config).exists() else ROOT / config
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = fd.simulate(path, set=[f"workload.num_requests={args.requests}",
                                         *(f"{k}={v}" for k, v in overrides.items())]).analysis().run
            pools = run.iterations["pool"].astype(str).to_numpy()
            durations = run.iterations["duration_us"].to_numpy()
            for pool in run.pools:
                rows = np.flatnonzero(pools == pool)
                if not len(rows):
                    continue
                order = rows[np.argsort(durations[rows], kind="stable")]
                picked = {int(order[-1]), int(order[len(order) // 2]),
                          *rng.choice(rows, min(args.sample, len(rows)), replace=False).tolist()}
                differences = np.array([rebuild_iteration(run, row).difference for row in sorted(picked)])
                label = f"{config}{' ' + ' '.join(f'{k}={v}' for k, v in overrides.items()) if overrides else ''}"
                print(f"{label} {pool}: {len(picked)} iterations, rebuilt vs recorded: largest "
                      f"{np.abs(differences).max() * 100:.2f}%, median {np.median(differences) * 100:+.2f}%", flush=True)


if __name__ == "__main__":
    main()
