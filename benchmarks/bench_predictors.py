"""Per-call cost of the fitted cost model, and the time to load it from the cache.

    python benchmarks/bench_predictors.py [--system h200_sxm] [--backend vllm]

Prints microseconds per ``predict`` call for 1 and 256 rows, memo hit and miss, for
the families the simulator calls most (decode attention, GEMM, MoE). The first run
fits the models (cached for the next).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from frontier_dag.config import load_hardware
from frontier_dag.config.run import PredictorConfig
from frontier_dag.predictors.registry import fitted_cost_model


def decode_batch(rng: np.random.Generator, rows: int) -> dict:
    """Decode attention batches of 1-64 sequences with contexts up to 8k (Qwen3-8B-like heads)."""
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


def per_call_us(model, family: str, batches: list[dict]) -> float:
    started = time.perf_counter()
    for batch in batches:
        model.predict(family, batch)
    return (time.perf_counter() - started) / len(batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="h200_sxm")
    parser.add_argument("--backend", default="vllm")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    hw = load_hardware(args.system)
    cfg = PredictorConfig(source="aiconfigurator", system=args.system, backend=args.backend)
    fitted_cost_model(cfg, hw)  # fit (or load) once, so the timing below is a warm load
    started = time.perf_counter()
    model = fitted_cost_model(cfg, hw)
    print(f"load from cache: {time.perf_counter() - started:.3f} s")
    rng = np.random.default_rng(0)
    print(f"{'family':18} {'rows':>5} {'miss us/call':>13} {'hit us/call':>12}")
    for family, make in (("attention_decode", decode_batch), ("gemm", gemm_batch), ("moe_grouped_gemm", moe_batch)):
        for rows in (1, 256):
            calls = max(5, args.calls // (1 if rows == 1 else 20))
            batches = [make(rng, rows) for _ in range(calls)]
            model.predict(family, make(rng, rows))  # warm up: first-call costs are not per-call costs
            miss = per_call_us(model, family, batches)  # fresh rows: every one misses the memo
            hit = per_call_us(model, family, batches)   # the same rows again: every one hits
            print(f"{family:18} {rows:5d} {miss:13.1f} {hit:12.1f}")


if __name__ == "__main__":
    main()
