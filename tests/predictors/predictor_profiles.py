"""Random cost queries of every family, and random profiles to fit small models on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from frontier_dag.config import load_hardware
from frontier_dag.cost.queries import QUERY_COLUMNS
from frontier_dag.cost.roofline import roofline_us
from frontier_dag.predictors.fitting import FitSettings

H200 = load_hardware("h200_sxm")
SETTINGS = FitSettings(n_estimators=4)


def attention(rng: np.random.Generator, rows: int, family: str) -> dict:
    sizes = rng.integers(1, 200, rows)
    sizes[rng.random(rows) < 0.2] = rng.integers(129, 400)  # past numpy's pairwise block of 128
    heads = rng.choice([8, 16, 32, 40, 64], rows)
    q_lens = [np.where(rng.random(s) < 0.5, 1, rng.integers(1, 3000, s)) for s in sizes]
    if family.endswith("decode"):
        q_lens = [np.ones_like(q) for q in q_lens]
    elif family.endswith("prefill"):
        q_lens = [np.maximum(q, 2) for q in q_lens]
    query = {"num_heads": heads.tolist(), "dtype": rng.choice(["bf16", "fp8", "fp16"], rows).tolist(),
             "kv_dtype": rng.choice(["bf16", "fp8"], rows).tolist(), "q_lens": q_lens,
             "ctx_lens": [rng.integers(0, 20000, s) for s in sizes]}
    if family.startswith("mla"):
        query.update(kv_lora_rank=[512] * rows, qk_nope_head_dim=[128] * rows, qk_rope_head_dim=[64] * rows,
                     v_head_dim=[128] * rows)
    else:  # some head groups are not whole (40 / 6): numpy's summation order matters then
        query.update(num_kv_heads=[int(rng.choice([1, 2, 6, 8])) for _ in range(rows)],
                     head_dim=rng.choice([64, 128], rows).tolist())
    return query


def gemm(rng: np.random.Generator, rows: int, family: str) -> dict:
    return {"m": rng.integers(1, 40000, rows), "n": rng.integers(1, 40000, rows).tolist(),
            "k": rng.integers(1, 40000, rows), "dtype": rng.choice(["bf16", "fp8", "fp16"], rows).tolist()}


def moe(rng: np.random.Generator, rows: int, family: str) -> dict:
    tokens = rng.integers(0, 20000, rows)
    experts = rng.integers(1, 300, rows)
    loads = [rng.multinomial(t, rng.dirichlet(np.ones(e) * rng.choice([0.1, 1.0, 10.0]))) for t, e in
             zip(tokens, experts, strict=True)]
    return {"num_tokens": tokens, "hidden": rng.choice([2048, 7168], rows), "inter": rng.integers(100, 3000, rows),
            "num_experts": rng.choice([64, 256], rows), "topk": rng.choice([2, 8], rows), "ep": rng.choice([1, 8], rows),
            "moe_tp": [1] * rows, "dtype": rng.choice(["bf16", "fp8"], rows).tolist(), "expert_tokens": loads}


def transfer(rng: np.random.Generator, rows: int, family: str) -> dict:
    query = {"bytes": rng.integers(1, 10**10, rows).astype(float),
             "placement": rng.choice(["intra_node", "inter_node"], rows).tolist()}
    if family != "p2p":
        query.update(group_size=rng.integers(1, 65, rows), impl=rng.choice(["nccl", "custom", "other"], rows).tolist())
    return query


MAKERS = {"attention_decode": attention, "attention_prefill": attention, "attention_mixed": attention,
          "mla_decode": attention, "mla_prefill": attention, "gemm": gemm, "moe_grouped_gemm": moe,
          "all_reduce": transfer, "all_gather": transfer, "all_to_all": transfer, "p2p": transfer}


def profile(family: str, rng: np.random.Generator, rows: int = 160) -> pd.DataFrame:
    """A random profile whose latency is the roofline with noise (and a spread on half the families)."""
    query = MAKERS[family](rng, rows, family)
    if "impl" in query:
        query["impl"] = ["nccl" if i % 2 else "custom" for i in range(rows)]  # "other" stays unseen
    latency = roofline_us(family, query, H200) * rng.lognormal(0, 0.2, rows) + 1.0
    spread = latency * 0.05 if family in ("gemm", "attention_decode", "all_reduce") else np.zeros(rows)
    return pd.DataFrame({**{c: list(query[c]) for c in QUERY_COLUMNS[family]}, "latency_us": latency,
                         "latency_std_us": spread, "repeats": 5})
