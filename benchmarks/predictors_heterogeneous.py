"""Heterogeneous attention batches against the uniform batches that bracket them.

    python benchmarks/predictors_heterogeneous.py [SYSTEM]     # default h200_sxm (vllm tables)

aiconfigurator measures uniform batches only (every sequence alike). This prices random
heterogeneous decode batches, prefill batches and prefill chunks after a cached prefix
(never measured), and compares them with the uniform batches that bracket them and
with the roofline (docs/predictors.md, "Heterogeneous batches").
"""

from __future__ import annotations

import sys

import numpy as np

from frontier_dag.config import load_hardware
from frontier_dag.config.run import PredictorConfig
from frontier_dag.cost.roofline import roofline_us
from frontier_dag.predictors.registry import fitted_cost_model


def query(batches: list[tuple]) -> dict:
    """Rows of Llama-3-8B-like attention, one per (new tokens, cached tokens) pair of arrays."""
    n = len(batches)
    return {"num_heads": [32] * n, "num_kv_heads": [8] * n, "head_dim": [128] * n, "dtype": ["bf16"] * n,
            "kv_dtype": ["bf16"] * n, "q_lens": [np.asarray(q) for q, _ in batches],
            "ctx_lens": [np.asarray(c) for _, c in batches]}


def spread(ratios) -> str:
    r = np.asarray(ratios)
    return f"median {np.median(r):.3f}, 5-95% {np.quantile(r, 0.05):.3f}-{np.quantile(r, 0.95):.3f}"


def decode(model, hw, rng) -> None:
    rows, drops, flagged = [], 0, 0
    for _ in range(300):
        n = int(rng.integers(2, 129))
        ctx = np.clip(rng.lognormal(rng.uniform(5, 9), rng.uniform(0.3, 1.5), n), 16, 16000).astype(int)
        ones = np.ones(n, dtype=int)
        batches = [(ones, ctx), (ones, np.full(n, int(ctx.mean()))), (np.ones(n + 1, dtype=int), np.r_[ctx, ctx.max()])]
        p = model.predict("attention_decode", query(batches))
        alike = model.predict("attention_decode", query([(ones, np.full(n, c)) for c in ctx])).latency_us.mean()
        roof = roofline_us("attention_decode", query(batches[:1]), hw)[0]
        rows.append((p.latency_us[0] / p.latency_us[1], p.latency_us[0] / alike, p.latency_us[0] / roof))
        drops += p.latency_us[2] < 0.98 * p.latency_us[0]  # one more (the longest again) must not be faster
        flagged += p.out_of_range[0]
    uniform, alike, roof = zip(*rows, strict=True)
    print(f"decode: 300 random batches of 2-128 sequences, lognormal contexts of 16-16k; out of range: {flagged}")
    print(f"  / the uniform batch at the mean context: {spread(uniform)}")
    print(f"  / the mean of the uniform batches at each sequence's context: {spread(alike)}")
    print(f"  / roofline: {spread(roof)}; one more sequence (the longest again) >2% faster: {drops} of 300")


def prefill(model, hw, rng) -> None:
    rows, flagged = [], 0
    for _ in range(200):
        n = int(rng.integers(2, 9))
        lengths = np.clip(rng.lognormal(rng.uniform(5, 8), 1.0, n), 16, 16000).astype(int)
        none = np.zeros(n, dtype=int)
        p = model.predict("attention_prefill", query([(lengths, none), (np.full(n, int(lengths.mean())), none)]))
        alone = model.predict("attention_prefill", query([([x], [0]) for x in lengths])).latency_us.sum()
        roof = roofline_us("attention_prefill", query([(lengths, none)]), hw)[0]
        rows.append((p.latency_us[0] / alone, p.latency_us[0] / p.latency_us[1], p.latency_us[0] / roof))
        flagged += p.out_of_range[0]
    alone, uniform, roof = zip(*rows, strict=True)
    print(f"prefill: 200 random batches of 2-8 sequences of 16-16k tokens; out of range: {flagged}")
    print(f"  / the sum of each sequence alone: {spread(alone)}")
    print(f"  / the uniform batch at the mean length: {spread(uniform)}")
    print(f"  / roofline: {spread(roof)}")


def chunks(model, hw, rng) -> None:
    inside, roofs, flagged = 0, [], 0
    for _ in range(200):
        chunk, ctx = int(rng.choice([256, 512, 1024, 2048])), int(rng.integers(0, 14000))
        p = model.predict("attention_prefill", query([([chunk], [ctx]), ([chunk], [0]), ([chunk + ctx], [0])]))
        inside += 0.98 * p.latency_us[1] <= p.latency_us[0] <= 1.02 * p.latency_us[2]
        roofs.append(p.latency_us[0] / roofline_us("attention_prefill", query([([chunk], [ctx])]), hw)[0])
        flagged += p.out_of_range[0]
    print(f"prefill chunks of 256-2048 tokens after 0-14k cached tokens; out of range: {flagged}")
    print(f"  between the chunk alone and the whole prompt at once: {inside / 2:.0f}%; / roofline: {spread(roofs)}")


def main() -> None:
    system = sys.argv[1] if len(sys.argv) > 1 else "h200_sxm"
    hw = load_hardware(system)
    model = fitted_cost_model(PredictorConfig(source="aiconfigurator", system=system, backend="vllm"), hw)
    rng = np.random.default_rng(0)
    decode(model, hw, rng)
    prefill(model, hw, rng)
    chunks(model, hw, rng)


if __name__ == "__main__":
    main()
