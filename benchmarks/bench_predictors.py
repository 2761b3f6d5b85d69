"""Per-call cost of the fitted cost model, and the time to load it from the cache.

    python benchmarks/bench_predictors.py [--system h200_sxm] [--backend vllm] [--repeats 5]

Prints microseconds per ``predict`` call of 1, 16 and 256 rows, on a memo miss
(fresh rows) and on a hit (the same rows again), for decode attention over batches of
1-64 sequences of different context lengths, GEMM, grouped GEMM (MoE) and all-reduce,
and the hit's cost per row. Attention is not memoized per row (the simulator memoizes
it in buckets), so its hit costs what its miss does. Each figure is the median call of
a pass, the least over ``--repeats`` passes (the machine is shared: the median skips
preempted calls, the least pass is the least disturbed). The first run fits the models
(cached for the next) and compiles the kernels (cached too); the first prediction's
time (numba's import and the compiled kernels' load) is printed apart.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from frontier_dag.config import load_hardware
from frontier_dag.config.run import PredictorConfig
from frontier_dag.predictors.registry import fitted_cost_model


def decode_batch(rng: np.random.Generator, rows: int) -> dict:
    """Decode attention batches of 1-64 sequences with contexts of 16 to 8k tokens, each
    sequence its own (Llama-3-8B-like heads)."""
    sizes = rng.integers(1, 65, rows)
    return {"num_heads": [32] * rows, "num_kv_heads": [8] * rows, "head_dim": [128] * rows,
            "dtype": ["bf16"] * rows, "kv_dtype": ["bf16"] * rows,
            "q_lens": [np.ones(s, dtype=np.int64) for s in sizes],
            "ctx_lens": [rng.integers(16, 8192, s) for s in sizes]}


def gemm_batch(rng: np.random.Generator, rows: int) -> dict:
    return {"m": rng.integers(1, 8192, rows), "n": [4096] * rows, "k": [4096] * rows, "dtype": ["bf16"] * rows}


def moe_batch(rng: np.random.Generator, rows: int) -> dict:
    tokens = rng.integers(1, 4096, rows)
    return {"num_tokens": tokens, "hidden": [2048] * rows, "inter": [768] * rows, "num_experts": [128] * rows,
            "topk": [8] * rows, "ep": [8] * rows, "moe_tp": [1] * rows, "dtype": ["bf16"] * rows,
            "expert_tokens": [rng.multinomial(t, np.ones(16) / 16) for t in tokens]}


def all_reduce_batch(rng: np.random.Generator, rows: int) -> dict:
    return {"bytes": rng.integers(1 << 10, 1 << 28, rows), "group_size": [8] * rows, "placement": ["intra_node"] * rows,
            "impl": ["nccl"] * rows}


FAMILIES = (("attention_decode", decode_batch), ("gemm", gemm_batch), ("moe_grouped_gemm", moe_batch),
            ("all_reduce", all_reduce_batch))


def per_call_us(predict, family: str, batches: list[dict]) -> float:
    """The median of the calls' durations: robust to the preemptions of a shared machine."""
    durations = []
    clock = time.perf_counter_ns
    for batch in batches:
        started = clock()
        predict(family, batch)
        durations.append(clock() - started)
    return float(np.median(durations)) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="h200_sxm")
    parser.add_argument("--backend", default="vllm")
    parser.add_argument("--calls", type=int, default=400, help="calls per pass for 1 and 16 rows (a tenth for 256)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    hw = load_hardware(args.system)
    cfg = PredictorConfig(source="aiconfigurator", system=args.system, backend=args.backend)
    fitted_cost_model(cfg, hw)  # fit (or load) once, so the timing below is a warm load
    started = time.perf_counter()
    model = fitted_cost_model(cfg, hw)
    print(f"load from cache: {time.perf_counter() - started:.3f} s")
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    model.predict(FAMILIES[0][0], FAMILIES[0][1](rng, 4))
    print(f"first prediction (loads the compiled kernels): {time.perf_counter() - started:.3f} s")
    print(f"{'family':18} {'rows':>5} {'miss us/call':>13} {'hit us/call':>12} {'hit us/row':>11}")
    for family, make in FAMILIES:
        model.predict(family, make(rng, 4))  # warm the family's memo and arrays
        for rows in (1, 16, 256):
            calls = args.calls if rows < 256 else max(5, args.calls // 10)
            miss = hit = float("inf")
            for _ in range(args.repeats):
                batches = [make(rng, rows) for _ in range(calls)]
                miss = min(miss, per_call_us(model.predict, family, batches))  # fresh rows: all miss the memo
                hit = min(hit, per_call_us(model.predict, family, batches))    # the same rows: all hit
            print(f"{family:18} {rows:5d} {miss:13.1f} {hit:12.1f} {hit / rows:11.2f}")


if __name__ == "__main__":
    main()
