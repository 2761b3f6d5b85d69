"""Reader of the kernel tables shipped inside the installed aiconfigurator-core package.

Layout: ``aiconfigurator_core/systems/data/<system>/<kind>/<backend>/<version>/<op>_perf.parquet``.
Latencies are milliseconds except the all-to-all tables (``moe_a2a``: ``latency``,
``wideep_deepep_*``: the ``*_us`` columns), which are microseconds. Shapes are per GPU.

Each family is read from one version directory: the canonical one (vllm 0.24.0,
trtllm 1.3.0rc20, sglang 0.5.14, nccl 2.29.2) when it holds the table, else the
newest older one that does (as upstream back-fills). MLA kernels come from the
chosen backend when it measured them alone, else from trtllm, else sglang (vllm
only measured whole MLA modules, projections included). Rows with a sliding window
are dropped: a query has no window column.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from frontier_dag.cost.queries import QUERY_COLUMNS
from frontier_dag.errors import PredictorError

from .schema import ProfileSet, normalize_profile
from .synthetic_routing import balanced_expert_tokens, power_law_expert_tokens

BACKENDS = ("vllm", "trtllm", "sglang")
CANONICAL_VERSIONS = {"vllm": "0.24.0", "trtllm": "1.3.0rc20", "sglang": "0.5.14", "nccl": "2.29.2"}
#: aiconfigurator's dtype names -> ours (``frontier_dag.config.hardware.DTYPE_BYTES``)
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "fp8": "fp8", "fp8_block": "fp8_block",
          "int8": "int8", "int4_wo": "int4", "w4a16_mxfp4": "fp4", "nvfp4": "fp4", "default": "bf16",
          "float32": "fp32"}
#: DeepSeek-V3's MLA dimensions, the model every aiconfigurator MLA table measures.
DEEPSEEK_MLA = {"kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}
NCCL_OPS = {"all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter",
            "alltoall": "all_to_all"}


def package_data_root() -> Path:
    """``systems/data`` inside the installed aiconfigurator-core package."""
    try:
        import aiconfigurator_core
    except ImportError as exc:
        raise PredictorError("aiconfigurator-core is not installed; pip install aiconfigurator-core==0.12.0") from exc
    return Path(aiconfigurator_core.__file__).parent / "systems" / "data"


def _version_key(name: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-]|(?<=\d)(?=[a-z])", name))


def find_table(root: Path, kind: str, backend: str, filename: str) -> Path | None:
    """The table from the canonical version directory, else from the newest that has it."""
    base = root / kind / backend
    if not base.is_dir():
        return None
    canonical = base / CANONICAL_VERSIONS.get(backend, "") / filename
    if canonical.is_file():
        return canonical
    for version in sorted((p.name for p in base.iterdir() if p.is_dir()), key=_version_key, reverse=True):
        if (base / version / filename).is_file():
            return base / version / filename
    return None


def _dtype(values) -> np.ndarray:
    codes, names = pd.factorize(pd.Series(values).astype(str))
    return np.array([DTYPES.get(name, name) for name in names], dtype=object)[codes]


def _source(path: Path, frame: pd.DataFrame) -> np.ndarray:
    tag = f"aiconfigurator:{path.parent.parent.name}/{path.parent.name}/{path.stem}:"
    return (tag + frame["kernel_source"].astype(str)).to_numpy(dtype=object)


def _measured(frame: pd.DataFrame, latency_us) -> pd.DataFrame:
    frame["latency_us"] = np.asarray(latency_us, dtype=float)
    frame["latency_std_us"] = 0.0
    frame["repeats"] = 0
    return frame


def _uniform(sizes, values) -> list[np.ndarray]:
    """Per row, ``size`` copies of ``value``; equal rows share one (read-only) array."""
    shared: dict[tuple[int, int], np.ndarray] = {}
    out = []
    for key in zip(np.asarray(sizes, dtype=np.int64).tolist(), np.asarray(values, dtype=np.int64).tolist(), strict=True):
        if key not in shared:
            shared[key] = np.full(key[0], key[1], dtype=np.int64)
        out.append(shared[key])
    return out


def attention_rows(path: Path, prefill: bool) -> pd.DataFrame:
    """Context attention: ``batch_size`` sequences of ``isl`` new tokens and no context;
    generation attention: ``batch_size`` decode steps over ``step`` cached tokens."""
    t = pd.read_parquet(path)
    t = t[(t.get("window_size", 0) == 0) & (t.get("beam_width", 1) == 1)].reset_index(drop=True)
    out = pd.DataFrame({"num_heads": t["num_heads"], "num_kv_heads": t["num_key_value_heads"],
                        "head_dim": t["head_dim"], "dtype": _dtype(t["attn_dtype"]),
                        "kv_dtype": _dtype(t["kv_cache_dtype"])})
    if prefill:
        out["q_lens"] = _uniform(t["batch_size"], t["isl"])
        out["ctx_lens"] = _uniform(t["batch_size"], np.zeros(len(t)))
    else:
        out["q_lens"] = _uniform(t["batch_size"], np.ones(len(t)))
        out["ctx_lens"] = _uniform(t["batch_size"], t["step"])
    out["source"] = _source(path, t)
    return _measured(out, t["latency"] * 1e3)


def mla_rows(path: Path, prefill: bool) -> pd.DataFrame:
    t = pd.read_parquet(path)
    out = pd.DataFrame({"num_heads": t["num_heads"], **{k: v for k, v in DEEPSEEK_MLA.items()},
                        "dtype": _dtype(t["mla_dtype"]), "kv_dtype": _dtype(t["kv_cache_dtype"])})
    if prefill:
        out["q_lens"] = _uniform(t["batch_size"], t["isl"])
        out["ctx_lens"] = _uniform(t["batch_size"], np.zeros(len(t)))
    else:
        out["q_lens"] = _uniform(t["batch_size"], np.ones(len(t)))
        out["ctx_lens"] = _uniform(t["batch_size"], t["step"])
    out["source"] = _source(path, t)
    return _measured(out, t["latency"] * 1e3)


def gemm_rows(path: Path) -> pd.DataFrame:
    t = pd.read_parquet(path)
    out = pd.DataFrame({"m": t["m"], "n": t["n"], "k": t["k"], "dtype": _dtype(t["gemm_dtype"])})
    out["source"] = _source(path, t)
    return _measured(out, t["latency"] * 1e3)


def _routing(tokens: int, experts: int, topk: int, ep: int, distribution: str) -> np.ndarray:
    if distribution == "balanced":
        return balanced_expert_tokens(tokens, experts, topk, ep)
    if distribution.startswith("power_law_"):
        return power_law_expert_tokens(tokens, experts, topk, ep, float(distribution.removeprefix("power_law_")))
    raise PredictorError(f"moe table: unknown distribution {distribution!r} (expected balanced or power_law_<alpha>)")


def moe_rows(path: Path) -> pd.DataFrame:
    """Fused MoE experts of the most-loaded EP rank; ``inter`` is per GPU (inter_size / moe_tp)."""
    t = pd.read_parquet(path)
    t = t[t["distribution"].astype(str).str.match(r"^(balanced|power_law_[0-9.]+)$")].reset_index(drop=True)
    out = pd.DataFrame({"num_tokens": t["num_tokens"], "hidden": t["hidden_size"],
                        "inter": t["inter_size"] // t["moe_tp_size"], "num_experts": t["num_experts"],
                        "topk": t["topk"], "ep": t["moe_ep_size"], "moe_tp": t["moe_tp_size"],
                        "dtype": _dtype(t["moe_dtype"])})
    keys = zip(*(t[c].to_numpy().tolist() for c in ("num_tokens", "num_experts", "topk", "moe_ep_size")),
               t["distribution"].astype(str).tolist(), strict=True)
    cache: dict[tuple, np.ndarray] = {}
    routed = [cache[key] if key in cache else cache.setdefault(key, _routing(*key)) for key in keys]
    out["expert_tokens"] = routed
    out["source"] = _source(path, t) + ":" + t["distribution"].astype(str).to_numpy(dtype=object)
    return _measured(out, t["latency"] * 1e3)


def _collective(family_of, nbytes, group, impl, latency_us, source) -> pd.DataFrame:
    out = pd.DataFrame({"family": family_of, "bytes": np.asarray(nbytes, dtype=float), "group_size": group,
                        "placement": "intra_node", "impl": impl})
    out["source"] = source
    return _measured(out, latency_us)


def nccl_rows(path: Path) -> pd.DataFrame:
    """NCCL collectives inside one node; ``message_size`` counts elements of ``nccl_dtype``."""
    t = pd.read_parquet(path)
    width = np.where(t["nccl_dtype"].astype(str) == "int8", 1, 2)
    return _collective(t["op_name"].map(NCCL_OPS), t["message_size"] * width, t["num_gpus"], "nccl",
                       t["latency"] * 1e3, _source(path, t))


def custom_allreduce_rows(path: Path) -> pd.DataFrame:
    """The framework's own all-reduce kernels, CUDA-graph mode (eager rows are dropped)."""
    t = pd.read_parquet(path)
    mode = t.get("backend", t.get("implementation", pd.Series([""] * len(t)))).astype(str)
    t = t[~mode.str.contains("eager")].reset_index(drop=True)
    nbytes = t["message_size"] * 2  # bfloat16
    return _collective("all_reduce", nbytes, t["num_gpus"], "custom", t["latency"] * 1e3, _source(path, t))


def moe_a2a_rows(path: Path) -> pd.DataFrame:
    """DeepEP dispatch/combine (latency in µs). ``bytes`` = tokens x topk x hidden x width:
    what one rank sends at most; impl ``deepep_{ll,normal}_{dispatch,combine}``."""
    t = pd.read_parquet(path)
    mode = np.where(t["comm_backend"].astype(str).str.endswith("_ll"), "deepep_ll", "deepep_normal")
    width = np.array([{"fp8": 1.0, "nvfp4": 0.5}.get(str(d), 2.0) for d in t["comm_dtype"]])
    nbytes = t["num_tokens"] * t["topk"] * t["hidden_size"] * width
    impl = mode + "_" + t["phase"].astype(str).to_numpy()
    return _collective("all_to_all", nbytes, t["ep_size"], impl, t["latency"], _source(path, t))


def wideep_deepep_rows(path: Path, low_latency: bool) -> pd.DataFrame:
    """sglang's DeepEP tables: one row holds both phases (µs); 8 GPUs per node."""
    t = pd.read_parquet(path)
    frames = []
    for phase in ("dispatch", "combine"):
        time = t[f"{phase}_avg_t_us"] if low_latency else t[f"{phase}_transmit_us"] + t[f"{phase}_notify_us"]
        nbytes = t["num_token"] * t["num_topk"] * t["hidden_size"] * 2.0
        impl = f"deepep_{'ll' if low_latency else 'normal'}_{phase}"
        frames.append(_collective("all_to_all", nbytes, t["node_num"] * 8, impl, time, _source(path, t)))
    return pd.concat(frames, ignore_index=True)


def plan_tables(system: str, backend: str = "vllm", root: Path | None = None) -> list[tuple[Path, Callable, str | None]]:
    """The tables to read for ``system`` and ``backend``: (path, reader, family), where a
    reader without a family labels its rows' families itself."""
    if backend not in BACKENDS:
        raise PredictorError(f"--backend {backend!r}: aiconfigurator tables exist for {', '.join(BACKENDS)}")
    root = root or package_data_root()
    base = root / system
    if not base.is_dir() or not any(base.iterdir()):
        known = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.iterdir()))
        raise PredictorError(f"aiconfigurator-core has no kernel tables for system {system!r}; it has {', '.join(known)}")
    plan: list[tuple[Path, Callable, str | None]] = []

    def add(kind: str, owner: str, filename: str, reader: Callable, family: str | None = None) -> bool:
        path = find_table(base, kind, owner, filename)
        if path is not None:
            plan.append((path, reader, family))
        return path is not None

    add("attention", backend, "context_attention_perf.parquet", partial(attention_rows, prefill=True), "attention_prefill")
    add("attention", backend, "generation_attention_perf.parquet", partial(attention_rows, prefill=False), "attention_decode")
    add("gemm", backend, "gemm_perf.parquet", gemm_rows, "gemm")
    add("moe", backend, "moe_perf.parquet", moe_rows, "moe_grouped_gemm")
    for owner in dict.fromkeys((backend, "trtllm", "sglang")):
        if add("mla", owner, "context_mla_perf.parquet", partial(mla_rows, prefill=True), "mla_prefill"):
            add("mla", owner, "generation_mla_perf.parquet", partial(mla_rows, prefill=False), "mla_decode")
            break
    add("comm", "nccl", "nccl_perf.parquet", nccl_rows)
    add("comm", backend, "custom_allreduce_perf.parquet", custom_allreduce_rows)
    if not add("comm", backend, "moe_a2a_perf.parquet", moe_a2a_rows):
        add("comm", backend, "wideep_deepep_ll_perf.parquet", partial(wideep_deepep_rows, low_latency=True))
        add("comm", backend, "wideep_deepep_normal_perf.parquet", partial(wideep_deepep_rows, low_latency=False))
    if not plan:
        raise PredictorError(f"aiconfigurator-core has no {backend} tables for {system}")
    return plan


def read_aiconfigurator(system: str, backend: str = "vllm", root: Path | None = None) -> ProfileSet:
    """Every family aiconfigurator measured for ``system`` with ``backend``."""
    plan = plan_tables(system, backend, root)
    parts: dict[str, list[pd.DataFrame]] = {}
    for path, reader, family in plan:
        frame = reader(path)
        groups = [(family, frame)] if family else frame.groupby("family")
        for name, group in groups:
            parts.setdefault(name, []).append(group.drop(columns="family", errors="ignore"))
    tables = {}
    for family, frames in parts.items():
        frame = pd.concat(frames, ignore_index=True)
        tables[family] = normalize_profile(family, frame[[*QUERY_COLUMNS[family], "latency_us", "latency_std_us",
                                                         "repeats", "source"]], f"aiconfigurator {system}/{family}")
    return ProfileSet(system, tables, [path for path, _, _ in plan], f"aiconfigurator-core {system} {backend}")
