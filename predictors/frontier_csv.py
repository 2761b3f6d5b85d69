"""Reader of Frontier-format profile CSVs: ``attention.csv`` / ``attention_combined.csv``,
``linear_op.csv``, ``moe.csv`` (plus the Vidur-format ``mlp.csv`` and network CSVs
Frontier keeps beside them).

Frontier extends Vidur's format (``vidur_csv``): attention rows may list several
sequences (``seq_lens``) or mix prefill and decode sequences (``mode == true_mixed``);
``linear_op.csv`` is Vidur's ``mlp.csv`` with more architectures; ``moe.csv`` times the
fused expert GEMMs (``moe_grouped_gemm``) of one device and describes its routing by
statistics of the local experts' loads, from which ``synthetic_routing`` rebuilds a
load vector. ``*_kernel_only.csv`` files (kernel time without launch gaps) are only
read when named explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from frontier_dag.cost.queries import QUERY_COLUMNS
from frontier_dag.lazy import lazy_module

from .schema import ProfileSet
from .synthetic_routing import expert_tokens_from_stats
from .vidur_csv import (
    attention_rows,
    collect,
    find_files,
    linear_rows,
    network_rows,
    precision,
    timing,
)

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: loading fitted predictors from the cache needs neither
    pd = lazy_module("pandas")

FRONTIER_FILES = ("attention.csv", "attention_combined.csv", "linear_op.csv", "moe.csv", "mlp.csv",
                  "all_reduce.csv", "send_recv.csv")


def _expert_tokens(frame: pd.DataFrame, local: np.ndarray, ep: np.ndarray) -> list[np.ndarray]:
    """Local expert loads per row: rebuilt from the load statistics where the file has
    them, else the routed tokens spread evenly (Vidur-era files without statistics)."""
    routed_total = frame["num_tokens"].to_numpy(float) * frame["router_topk"].to_numpy(float) / ep
    if "total_routed_tokens" not in frame:
        return [np.full(int(n), int(round(t / n))) for n, t in zip(local, routed_total, strict=True)]
    columns = ("total_routed_tokens", "expert_utilization", "min_load_ratio", "max_load_ratio", "load_imbalance_cv")
    stats = zip(local.astype(int).tolist(), *(frame[c].to_numpy(float).tolist() for c in columns), strict=True)
    cache: dict[tuple, np.ndarray] = {}
    out = []
    for key in stats:
        if key not in cache:
            n, total, share, low, high, cv = key
            cache[key] = expert_tokens_from_stats(n, int(round(total)), share, low, high, cv)
        out.append(cache[key])
    return out


def moe_rows(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """``moe_grouped_gemm`` rows; ``inter`` per GPU is ``expert_hidden_dim`` / TP."""
    median, std, count = timing(frame, "moe_grouped_gemm")
    valid = np.isfinite(median) & (median > 0)
    frame = frame[valid].reset_index(drop=True)
    median, std, count = median[valid], std[valid], count[valid]
    tp = frame.get("num_tensor_parallel_workers", pd.Series(np.ones(len(frame)))).to_numpy(float)
    ep = frame["expert_parallel_size"].to_numpy(float)
    local = frame["num_experts_per_device"].to_numpy(float)
    out = pd.DataFrame({
        "num_tokens": frame["num_tokens"].to_numpy(float), "hidden": frame["hidden_dim"].to_numpy(float),
        "inter": frame["expert_hidden_dim"].to_numpy(float) / tp, "num_experts": frame["num_experts"].to_numpy(float),
        "topk": frame["router_topk"].to_numpy(float), "ep": ep, "moe_tp": tp, "dtype": precision(frame),
    })
    out["expert_tokens"] = _expert_tokens(frame, local, ep)
    out["latency_us"], out["latency_std_us"], out["repeats"] = median, std, count
    out["source"] = source
    out["family"] = "moe_grouped_gemm"
    return out[[*QUERY_COLUMNS["moe_grouped_gemm"], "latency_us", "latency_std_us", "repeats", "source", "family"]]


def newest_campaign(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of Frontier's extended attention profiles, when a file also holds older
    Vidur-format rows (they lack ``is_chunked_prefill_sample``). The two campaigns time
    the same shapes differently (the newer includes the attention wrapper's host-side
    work: about 70 µs against 14 µs for a small prefill on the A800), and a query cannot
    say which it means, so only the newer, which also has the mixed batches, is kept."""
    marker = frame.get("is_chunked_prefill_sample")
    if marker is None or marker.isna().all():
        return frame
    return frame[marker.notna()].reset_index(drop=True)


#: the context Frontier times fused experts in, where a file has several: right after an
#: FFN-like prefix, as inside a model's forward pass
HOT_CONTEXT = "prefill_hot"


#: the columns of ``moe.csv`` that make a shape (the query but the expert loads)
MOE_SHAPE_COLUMNS = ("num_tokens", "hidden_dim", "expert_hidden_dim", "num_experts", "num_experts_per_device",
                     "router_topk", "expert_parallel_size", "num_tensor_parallel_workers", "profiling_precision")


def hot_context(frame: pd.DataFrame) -> pd.DataFrame:
    """``moe.csv`` without the rows timed in another context (``gating_runtime_context``)
    for a shape that was also timed in the hot one: the contexts differ systematically (on
    the H800, where each shape is timed once in each, the hot rows are 3-7% faster) and a
    query cannot say which it means, so where both exist the one a model's forward pass runs
    in is kept. Shapes timed only standalone (the A800's EP and TP > 1) keep their rows."""
    context = frame.get("gating_runtime_context")
    if context is None or not (context == HOT_CONTEXT).any():
        return frame
    columns = [c for c in MOE_SHAPE_COLUMNS if c in frame]
    shape = pd.MultiIndex.from_frame(frame[columns].astype(str))
    hot = (context == HOT_CONTEXT).to_numpy()
    return frame[hot | ~shape.isin(shape[hot])].reset_index(drop=True)


def parse_frontier_file(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    name, source = path.name, str(path)
    if name.startswith("attention"):
        return attention_rows(newest_campaign(frame), source)
    if name.startswith(("linear_op", "mlp")):
        return linear_rows(frame, source)
    if name.startswith("moe"):
        return moe_rows(hot_context(frame), source)
    return network_rows(frame, source)


def read_frontier_csv(path: str | Path, pattern: str | None = None) -> ProfileSet:
    """Every Frontier-format CSV under ``path`` (or the one file ``path``); rows measured
    twice with identical inputs and timings (attention.csv and attention_combined.csv
    overlap) are kept once."""
    files = find_files(Path(path), FRONTIER_FILES, pattern)
    profiles = collect(files, parse_frontier_file, f"Frontier CSVs under {path}")
    for family, table in profiles.tables.items():
        key = table.drop(columns=["source"]).map(lambda v: v.tobytes() if isinstance(v, np.ndarray) else v)
        profiles.tables[family] = table[~key.duplicated()].reset_index(drop=True)
    return profiles
