"""Reader of Vidur-format profile CSVs: ``mlp.csv``, ``attention.csv``, ``all_reduce.csv``,
``send_recv.csv`` (Frontier's CSVs extend the same format; see ``frontier_csv``).

Timings are ``time_stats.<op>.{median,std,count}`` in milliseconds over the repeats
of one input. Shapes are those of the whole model with ``num_tensor_parallel_workers``
shards, so per-GPU widths divide by TP. Vidur profiles in fp16 unless a
``profiling_precision`` column says otherwise.

* attention: prefill rows are one sequence of ``prefill_chunk_size`` new tokens over
  ``kv_cache_size`` cached ones (``attn_prefill``); decode rows are ``batch_size``
  sequences of one new token over ``kv_cache_size`` each (``attn_decode``).
* mlp / linear ops: the projections are GEMMs (qkv, output, up, down) and the rest
  elementwise ops (rmsnorm, rope, silu_mul, add, embedding).
* network: ``size`` counts fp16 elements; a group wider than ``devices_per_node``
  crosses nodes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from frontier_dag.config.hardware import hardware_names, load_hardware
from frontier_dag.cost.queries import QUERY_COLUMNS, attention_family
from frontier_dag.errors import PredictorError
from frontier_dag.lazy import lazy_module

from .schema import ProfileSet, normalize_profile

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: loading fitted predictors from the cache needs neither
    pd = lazy_module("pandas")

VIDUR_FILES = ("mlp.csv", "attention.csv", "all_reduce.csv", "send_recv.csv")
ELEMENTWISE_OPS = {"input_layernorm": "rmsnorm", "post_attention_layernorm": "rmsnorm", "attn_rope": "rope",
                   "mlp_act": "silu_mul", "add": "add", "emb": "embedding"}
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")


def timing(frame: pd.DataFrame, op: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and std in µs and repeat count of ``op`` (NaN where the row lacks it)."""
    median = frame.get(f"time_stats.{op}.median")
    if median is None:
        nan = np.full(len(frame), np.nan)
        return nan, nan, np.zeros(len(frame))
    std = frame.get(f"time_stats.{op}.std", pd.Series(np.zeros(len(frame))))
    count = frame.get(f"time_stats.{op}.count", pd.Series(np.zeros(len(frame))))
    return (median.to_numpy(float) * 1e3, std.fillna(0).to_numpy(float) * 1e3,
            count.fillna(0).to_numpy(float))


def precision(frame: pd.DataFrame, default: str = "fp16") -> np.ndarray:
    if "profiling_precision" not in frame:
        return np.full(len(frame), default, dtype=object)
    return frame["profiling_precision"].astype(str).str.lower().to_numpy(dtype=object)


def _measured(columns: dict, median, std, count, source: str, keep=True) -> pd.DataFrame:
    """Rows of ``columns`` with their timing, where the op was timed (and ``keep``)."""
    out = pd.DataFrame(columns, index=range(len(median)))
    out["latency_us"], out["latency_std_us"], out["repeats"] = median, std, count
    out["source"] = source
    valid = np.isfinite(out["latency_us"].to_numpy()) & (out["latency_us"].to_numpy() > 0) & keep
    return out[valid].reset_index(drop=True)


def _tp(frame: pd.DataFrame) -> np.ndarray:
    return frame.get("num_tensor_parallel_workers", pd.Series(np.ones(len(frame)))).to_numpy(float)


def _int_list(text) -> list[int] | None:
    if not isinstance(text, str) or not text.strip().startswith("["):
        return None
    body = text.strip()[1:-1].strip()
    return [int(float(v)) for v in body.split(",")] if body else []


def attention_rows(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Attention rows; Frontier's extension adds ``seq_lens`` (several sequences of a
    batch, one ``kv_cache_size``) and ``true_mixed`` rows (prefill and decode sequences
    together, timed as ``attn_prefill`` + ``attn_decode``)."""
    tp = _tp(frame)
    heads = frame["n_q_head"].to_numpy(float)
    dtype = precision(frame)
    prefill = timing(frame, "attn_prefill")
    decode = timing(frame, "attn_decode")
    mode = frame.get("mode", pd.Series([""] * len(frame))).astype(str).to_numpy()
    seq_lens = frame.get("seq_lens", pd.Series([None] * len(frame))).to_numpy()
    columns = {c: [] for c in (*QUERY_COLUMNS["attention_prefill"], "latency_us", "latency_std_us", "repeats")}
    for i, row in enumerate(frame.itertuples(index=False)):
        if mode[i] == "true_mixed":
            q_p = _int_list(row.prefill_seq_lens)
            c_p = _int_list(row.prefill_kv_cache_sizes)
            c_d = _int_list(row.decode_kv_cache_sizes)
            q = q_p + [1] * len(c_d)
            ctx = c_p + c_d
            timed = (prefill[0][i] + decode[0][i], np.hypot(prefill[1][i], decode[1][i]),
                     min(prefill[2][i], decode[2][i]))
        else:
            listed = _int_list(seq_lens[i])
            if bool(row.is_prefill):
                q = listed if listed else [int(row.prefill_chunk_size)] * int(row.batch_size)
                timed = (prefill[0][i], prefill[1][i], prefill[2][i])
            else:
                q = [1] * int(row.batch_size)
                timed = (decode[0][i], decode[1][i], decode[2][i])
            ctx = [int(row.kv_cache_size)] * len(q)
        if not q or min(q) <= 0:
            continue
        columns["num_heads"].append(heads[i] / tp[i])
        columns["num_kv_heads"].append(max(1.0, row.n_kv_head / tp[i]))
        columns["head_dim"].append(row.n_embd / row.n_q_head)
        columns["dtype"].append(dtype[i])
        columns["kv_dtype"].append(dtype[i])
        columns["q_lens"].append(np.asarray(q, dtype=np.int64))
        columns["ctx_lens"].append(np.asarray(ctx, dtype=np.int64))
        for key, value in zip(("latency_us", "latency_std_us", "repeats"), timed, strict=True):
            columns[key].append(value)
    out = pd.DataFrame(columns)
    out["source"] = source
    out = out[np.isfinite(out["latency_us"]) & (out["latency_us"] > 0)].reset_index(drop=True)
    out["family"] = [attention_family(q) for q in out["q_lens"]]
    return out


def linear_rows(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """GEMM and elementwise rows of a layer's linear ops (Vidur's mlp.csv, Frontier's linear_op.csv)."""
    tp = _tp(frame)
    tokens = frame["num_tokens"].to_numpy(float)
    embd = frame["n_embd"].to_numpy(float)
    expanded = frame["n_expanded_embd"].to_numpy(float)
    n_head, n_kv = frame["n_head"].to_numpy(float), frame["n_kv_head"].to_numpy(float)
    head_dim = embd / n_head
    gated = frame.get("use_gated_mlp", pd.Series([True] * len(frame))).astype(str).str.lower() == "true"
    dtype = precision(frame)
    # projections have the textbook shapes only in standard architectures
    standard = np.ones(len(frame), dtype=bool)
    if "model_arch" in frame:
        standard &= frame["model_arch"].astype(str).to_numpy() == "generic"
    for column in ("share_q_dim",):
        if column in frame:
            standard &= frame[column].isna().to_numpy()
    for column in ("attn_output_gate", "is_step2_mini"):
        if column in frame:
            standard &= frame[column].astype(str).str.lower().to_numpy() != "true"
    if "quant_signature" in frame:
        standard &= frame["quant_signature"].astype(str).to_numpy() == "none"
    shapes = {
        "attn_pre_proj": (embd, (n_head + 2 * n_kv) * head_dim / tp),
        "attn_post_proj": (n_head * head_dim / tp, embd),
        "mlp_up_proj": (embd, np.where(gated, 2, 1) * expanded / tp),
        "mlp_down_proj": (expanded / tp, embd),
    }
    widths = {"input_layernorm": embd, "post_attention_layernorm": embd, "add": embd, "emb": embd,
              "attn_rope": (n_head + n_kv) * head_dim / tp, "mlp_act": expanded / tp}
    frames = []
    for op, (k, n) in shapes.items():
        rows = _measured({"m": tokens, "n": n, "k": k, "dtype": dtype}, *timing(frame, op), f"{source}:{op}",
                         keep=standard)
        frames.append(rows.assign(family="gemm"))
    for op, hidden in widths.items():
        rows = _measured({"op": ELEMENTWISE_OPS[op], "num_tokens": tokens, "hidden": hidden, "dtype": dtype},
                         *timing(frame, op), f"{source}:{op}")
        frames.append(rows.assign(family="elementwise"))
    return pd.concat(frames, ignore_index=True)


def network_rows(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """all_reduce and send_recv (``p2p``) rows; ``size`` counts fp16 elements."""
    collective = frame["collective"].astype(str).to_numpy()
    workers = frame["num_workers"].to_numpy(float)
    per_node = frame["devices_per_node"].to_numpy(float)
    is_p2p = collective == "send_recv"
    # send_recv runs between two workers: on one node when a node holds both
    intra = np.where(is_p2p, per_node >= 2, workers <= per_node)
    placement = np.where(intra, "intra_node", "inter_node")
    frames = []
    for name, family in (("all_reduce", "all_reduce"), ("send_recv", "p2p")):
        mask = collective == name
        if not mask.any():
            continue
        part = frame[mask].reset_index(drop=True)
        columns = {"bytes": part["size"].to_numpy(float) * 2, "placement": placement[mask]}
        if family != "p2p":
            columns.update(group_size=workers[mask], impl="nccl")
        frames.append(_measured(columns, *timing(part, name), source).assign(family=family))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def infer_hardware(path: Path) -> str:
    """The GPU system a public profile path names (``.../compute/a800/...`` -> a800_sxm)."""
    names = set(hardware_names())
    for part in reversed(Path(path).resolve().parts):
        token = part.lower().split("_")[0]
        for candidate in (part.lower(), token, f"{token}_sxm"):
            if candidate in names:
                return load_hardware(candidate).name
    raise PredictorError(f"{path}: cannot tell the GPU from the path; put the profiles under a folder named "
                         f"after it (one of {', '.join(sorted(names))})")


def collect(files: Iterable[Path], parse, description: str) -> ProfileSet:
    """Read ``files`` with ``parse(path) -> frame with a family column`` into one ProfileSet."""
    files = sorted(set(files))
    if not files:
        raise PredictorError(f"{description}: no profile CSV found")
    hardware = {infer_hardware(f) for f in files}
    if len(hardware) > 1:
        raise PredictorError(f"{description}: files from several GPUs ({', '.join(sorted(hardware))}); "
                             "point --path at one GPU's folder")
    parts: dict[str, list[pd.DataFrame]] = {}
    for path in files:
        frame = parse(path)
        for family, group in frame.groupby("family") if len(frame) else ():
            parts.setdefault(family, []).append(group.drop(columns="family"))
    tables = {}
    for family, frames in parts.items():
        merged = pd.concat(frames, ignore_index=True)
        tables[family] = normalize_profile(family, merged, f"{description} ({family})")
    if not tables:
        raise PredictorError(f"{description}: the CSVs hold no usable rows")
    return ProfileSet(hardware.pop(), tables, files, description)


def parse_vidur_file(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    source = str(path)
    if path.name == "attention.csv":
        return attention_rows(frame, source)
    if path.name == "mlp.csv":
        return linear_rows(frame, source)
    return network_rows(frame, source)


def find_files(path: Path, names: Iterable[str], pattern: str | None = None) -> list[Path]:
    """``path`` itself when it is a file, else every file under it named one of ``names``
    (and matching the glob ``pattern`` when given)."""
    path = Path(path)
    if not path.exists():
        raise PredictorError(f"--path {path}: does not exist")
    if path.is_file():
        return [path]
    found = [p for p in path.rglob("*.csv") if p.name in set(names)]
    return sorted(p for p in found if pattern is None or p.match(pattern))


def read_vidur_csv(path: str | Path, pattern: str | None = None) -> ProfileSet:
    """Every Vidur-format CSV under ``path`` (or the one file ``path``)."""
    files = find_files(Path(path), VIDUR_FILES, pattern)
    return collect(files, parse_vidur_file, f"Vidur CSVs under {path}")
