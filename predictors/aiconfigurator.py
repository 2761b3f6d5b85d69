"""Reader of the kernel tables shipped inside the installed aiconfigurator-core package.

Layout: ``aiconfigurator_core/systems/data/<system>/<kind>/<backend>/<version>/<op>_perf.parquet``.
Latencies are milliseconds except the all-to-all tables (``moe_a2a``: ``latency``,
``wideep_deepep_*``: the ``*_us`` columns), which are microseconds. Shapes are per GPU.

Each family is read from one version directory: the canonical one (vllm 0.24.0,
trtllm 1.3.0rc20, sglang 0.5.14, nccl 2.29.2) when it holds the table, else the
newest older one that does (as upstream back-fills). MLA kernels come from the
chosen backend when it measured them alone, else from trtllm, else sglang (vllm
only measured whole MLA modules, projections included). Rows with a sliding window
are dropped: a query has no window column. Intel's B60 measured oneCCL instead of
NCCL; its collectives are read as the system's library collectives (impl ``nccl``).

Some tables time one shape with several kernels (alternative backends of the engine:
SGLang's attention on Blackwell with FlashInfer, Triton and TRT-LLM's kernels; its MoE
with two runners), which no query column can tell apart. Such a shape keeps the rows of
one kernel, as aiconfigurator's own lookup does: the engine's default attention kernel
for the GPU (the package's ``attention_lane_defaults.yaml``) where it has the shape,
else the kernel measured on the most shapes (repeats of a shape on one kernel are kept,
as any measurement). TensorRT-LLM's min-latency MoE rows time a separate low-latency mode and
are left out.

Every column of a table read here, and every value of its categorical columns, is
one this module knows: anything else is a ``PredictorError`` naming the table, the
column and the value, raised while the tables are read, before any fitting. Dtypes
become our precision names (``frontier_dag.config.precision``); a precision the
system's GPU has no tensor cores for is read as the weight-only form the engines run
it in (FP8 on Intel's B60), or is an error naming the GPU.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from frontier_dag.config.hardware import HardwareConfig, load_hardware
from frontier_dag.config.precision import AICONFIGURATOR_NAMES, PRECISIONS, WEIGHT_ONLY
from frontier_dag.config.suggest import did_you_mean
from frontier_dag.cost.queries import QUERY_COLUMNS
from frontier_dag.errors import FrontierDagError, PredictorError
from frontier_dag.lazy import lazy_module

from .schema import ProfileSet, normalize_profile
from .synthetic_routing import balanced_expert_tokens, power_law_expert_tokens

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: loading fitted predictors from the cache needs neither
    pd = lazy_module("pandas")

BACKENDS = ("vllm", "trtllm", "sglang")
CANONICAL_VERSIONS = {"vllm": "0.24.0", "trtllm": "1.3.0rc20", "sglang": "0.5.14", "nccl": "2.29.2"}
#: aiconfigurator's dtype names -> ours (``frontier_dag.config.precision``)
DTYPES = {**AICONFIGURATOR_NAMES, "default": "bf16"}
#: DeepSeek-V3's MLA dimensions, the model every aiconfigurator MLA table measures.
DEEPSEEK_MLA = {"kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}
NCCL_OPS = {"all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter",
            "alltoall": "all_to_all"}
#: DeepEP modes of ``moe_a2a`` tables: high-throughput (normal) and low-latency kernels,
#: and DeepEP V2's prefill and decode kernels
A2A_MODES = {"deepep_ht": "deepep_normal", "deepep_ll": "deepep_ll", "trtllm_deepep_ht": "deepep_normal",
             "trtllm_deepep_ll": "deepep_ll", "deepep_v2_context": "deepep_v2_normal",
             "deepep_v2_generation": "deepep_v2_ll"}
#: the engines' own all-reduce kernels, by the table's mode column; eager rows are dropped
CUSTOM_ALLREDUCE_MODES = {"vllm_graph": True, "sglang_graph": True, "trtllm": True, "vllm_eager": False,
                          "sglang_eager": False}
#: columns every table carries that say where it was measured, not what
PROVENANCE = frozenset({"framework", "version", "device", "op_name", "kernel_source", "power", "power_limit"})


def package_data_root() -> Path:
    """``systems/data`` inside the installed aiconfigurator-core package."""
    # found, not imported: the package's own import loads a compiled module the tables do not need
    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or spec.origin is None:
        raise PredictorError("aiconfigurator-core is not installed; pip install aiconfigurator-core==0.12.0")
    return Path(spec.origin).parent / "systems" / "data"


def systems_with_tables(root: Path | None = None) -> list[str]:
    """The systems that have kernel tables (the package lists some with none)."""
    root = root or package_data_root()
    return sorted(p.name for p in root.iterdir() if has_tables(p.name, root))


def has_tables(system: str, root: Path | None = None) -> bool:
    """Whether ``system`` is one of ``systems_with_tables`` (without walking every system's
    folder, as listing them does)."""
    folder = (root or package_data_root()) / system
    return folder.is_dir() and any(folder.rglob("*.parquet"))


def version_key(name: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-]|(?<=\d)(?=[a-z])", name))


def versions(base: Path) -> list[str]:
    """The version directories under ``base``, newest first."""
    if not base.is_dir():
        return []
    return sorted((p.name for p in base.iterdir() if p.is_dir()), key=version_key, reverse=True)


def find_table(root: Path, kind: str, backend: str, filename: str) -> Path | None:
    """The table from the canonical version directory, else from the newest that has it."""
    base = root / kind / backend
    canonical = base / CANONICAL_VERSIONS.get(backend, "") / filename
    if canonical.is_file():
        return canonical
    for version in versions(base):
        if (base / version / filename).is_file():
            return base / version / filename
    return None


# -- reading a table: known columns, known values ---------------------------------------------

def _where(path: Path) -> str:
    """A table as ``<system>/<kind>/<backend>/<version>/<file>``."""
    return "/".join(path.parts[-5:])


def read_table(path: Path, columns: Iterable[str], values: dict[str, Callable[[str], bool] | Iterable[str]]
               ) -> pd.DataFrame:
    """The table at ``path`` after checking that each column is in ``columns`` (or says where
    it was measured) and each value of the ``values`` columns is known."""
    table = pd.read_parquet(path)
    known = PROVENANCE | set(columns)
    unknown = [c for c in table.columns if c not in known]
    if unknown:
        raise PredictorError(f"aiconfigurator table {_where(path)}: unknown column {unknown[0]!r}; this reader "
                             f"knows {', '.join(sorted(set(columns)))}: a newer aiconfigurator-core may have changed "
                             "the table (pin aiconfigurator-core==0.12.0)")
    for column, allowed in values.items():
        if column not in table:
            continue
        check = allowed if callable(allowed) else frozenset(allowed).__contains__
        for value in pd.unique(table[column].astype(str)):
            if not check(value):
                choices = "" if callable(allowed) else f" (known: {', '.join(sorted(allowed))})"
                raise PredictorError(f"aiconfigurator table {_where(path)}: column {column!r} has unknown value "
                                     f"{value!r}{choices}")
    return table


def _dtype(values) -> np.ndarray:
    codes, names = pd.factorize(pd.Series(values).astype(str))
    return np.array([DTYPES[name] for name in names], dtype=object)[codes]


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


def _is_zero(value: str) -> bool:
    return float(value) == 0


def _is_one(value: str) -> bool:
    return float(value) == 1


#: TensorRT-LLM's low-latency MoE mode, a twin of the default kernels for the same shapes
MIN_LATENCY_MOE = "moe_torch_flow_min_latency"
#: an engine's default attention backend (attention_lane_defaults.yaml) -> the kernel labels
#: its tables use, where they differ from the backend's name
_ATTENTION_LABELS = {"vllm": {"triton": ("vllm_triton_attn",),
                              "flashinfer": ("vllm_flashinfer_trtllmprefill", "vllm_flashinfer_trtllmdecode",
                                             "vllm_flashinfer")}}


def default_attention_kernels(path: Path) -> tuple[str, ...]:
    """The kernels the engine of an attention table runs by default on its GPU, per
    aiconfigurator-core's ``attention_lane_defaults.yaml`` (empty: no default named)."""
    import yaml

    systems = path.parents[4].parent  # systems/data/<system>/attention/<engine>/<version>/<file>
    system, engine, version = path.parts[-5], path.parts[-3], path.parts[-2]
    defaults_file, spec_file = systems / "attention_lane_defaults.yaml", systems / f"{system}.yaml"
    if not defaults_file.is_file() or not spec_file.is_file():
        return ()
    by_version = (yaml.safe_load(defaults_file.read_text()) or {}).get(engine) or {}
    older = [v for v in by_version if version_key(str(v)) <= version_key(version)]
    if not older:
        return ()
    sm = (yaml.safe_load(spec_file.read_text()).get("gpu") or {}).get("sm_version")
    lane = (by_version[max(older, key=lambda v: version_key(str(v)))] or {}).get(sm)
    if lane in (None, "default"):
        return ()
    return _ATTENTION_LABELS.get(engine, {}).get(lane, (lane,))


def one_kernel_per_shape(table: pd.DataFrame, keys: list[str], preferred: tuple[str, ...] = ()) -> pd.DataFrame:
    """``table`` with each shape (``keys``) timed by one kernel: the first of ``preferred``
    that timed it, else the kernel that timed the most shapes. A table whose shapes are
    timed by one kernel each (repeats included) is returned as it is."""
    keys = [k for k in keys if k in table]
    if not table.duplicated(keys).any():
        return table
    lanes = table["kernel_source"].astype(str)
    groups = table.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    if (pd.Series(lanes.to_numpy()).groupby(groups).nunique() == 1).all():
        return table
    counts = lanes.value_counts()
    order = [k for k in preferred if k in counts.index]
    order += sorted((k for k in counts.index if k not in order), key=lambda k: (-counts[k], k))
    rank = lanes.map({k: i for i, k in enumerate(order)}).to_numpy()
    best = pd.Series(rank).groupby(groups).transform("min").to_numpy()
    return table[rank == best].reset_index(drop=True)


_ATTENTION = ("batch_size", "isl", "step", "num_heads", "num_key_value_heads", "head_dim", "beam_width",
              "window_size", "attn_dtype", "kv_cache_dtype", "latency")
_MLA = ("batch_size", "isl", "step", "num_heads", "tp_size", "mla_dtype", "kv_cache_dtype", "latency")


def _lengths(out: pd.DataFrame, t: pd.DataFrame, prefill: bool) -> None:
    if prefill:
        out["q_lens"] = _uniform(t["batch_size"], t["isl"])
        out["ctx_lens"] = _uniform(t["batch_size"], np.zeros(len(t)))
    else:
        out["q_lens"] = _uniform(t["batch_size"], np.ones(len(t)))
        out["ctx_lens"] = _uniform(t["batch_size"], t["step"])


def attention_rows(path: Path, prefill: bool) -> pd.DataFrame:
    """Context attention: ``batch_size`` sequences of ``isl`` new tokens and no context;
    generation attention: ``batch_size`` decode steps over ``step`` cached tokens."""
    lengths = {"step": _is_zero} if prefill else {"isl": _is_one}
    t = read_table(path, _ATTENTION, {"attn_dtype": DTYPES, "kv_cache_dtype": DTYPES, **lengths})
    t = t[(t.get("window_size", 0) == 0) & (t.get("beam_width", 1) == 1)].reset_index(drop=True)
    t = one_kernel_per_shape(t, ["batch_size", "isl", "step", "num_heads", "num_key_value_heads", "head_dim",
                                 "attn_dtype", "kv_cache_dtype"], default_attention_kernels(path))
    out = pd.DataFrame({"num_heads": t["num_heads"], "num_kv_heads": t["num_key_value_heads"],
                        "head_dim": t["head_dim"], "dtype": _dtype(t["attn_dtype"]),
                        "kv_dtype": _dtype(t["kv_cache_dtype"])})
    _lengths(out, t, prefill)
    out["source"] = _source(path, t)
    return _measured(out, t["latency"] * 1e3)


def mla_rows(path: Path, prefill: bool) -> pd.DataFrame:
    """DeepSeek-V3's MLA kernels; ``num_heads`` is per GPU (128 / ``tp_size``)."""
    lengths = {"step": _is_zero} if prefill else {"isl": _is_one}
    t = read_table(path, _MLA, {"mla_dtype": DTYPES, "kv_cache_dtype": DTYPES, **lengths})
    t = one_kernel_per_shape(t, ["batch_size", "isl", "step", "num_heads", "tp_size", "mla_dtype", "kv_cache_dtype"])
    out = pd.DataFrame({"num_heads": t["num_heads"], **{k: v for k, v in DEEPSEEK_MLA.items()},
                        "dtype": _dtype(t["mla_dtype"]), "kv_dtype": _dtype(t["kv_cache_dtype"])})
    _lengths(out, t, prefill)
    out["source"] = _source(path, t)
    return _measured(out, t["latency"] * 1e3)


def gemm_rows(path: Path) -> pd.DataFrame:
    t = one_kernel_per_shape(read_table(path, ("m", "n", "k", "gemm_dtype", "latency"), {"gemm_dtype": DTYPES}),
                             ["m", "n", "k", "gemm_dtype"])
    out = pd.DataFrame({"m": t["m"], "n": t["n"], "k": t["k"], "dtype": _dtype(t["gemm_dtype"])})
    out["source"] = _source(path, t)
    return _measured(out, t["latency"] * 1e3)


_DISTRIBUTION = re.compile(r"^(balanced|power_law_[0-9.]+)$")


def _routing(tokens: int, experts: int, topk: int, ep: int, distribution: str) -> np.ndarray:
    if distribution == "balanced":
        return balanced_expert_tokens(tokens, experts, topk, ep)
    return power_law_expert_tokens(tokens, experts, topk, ep, float(distribution.removeprefix("power_law_")))


def moe_rows(path: Path) -> pd.DataFrame:
    """Fused MoE experts of the most-loaded EP rank; ``inter`` is per GPU (inter_size / moe_tp)."""
    t = read_table(path, ("num_tokens", "hidden_size", "inter_size", "num_experts", "topk", "moe_ep_size",
                          "moe_tp_size", "moe_dtype", "distribution", "latency"),
                   {"moe_dtype": DTYPES, "distribution": lambda v: bool(_DISTRIBUTION.match(v))})
    t = t[t["kernel_source"].astype(str) != MIN_LATENCY_MOE].reset_index(drop=True)
    t = one_kernel_per_shape(t, ["num_tokens", "hidden_size", "inter_size", "num_experts", "topk", "moe_ep_size",
                                 "moe_tp_size", "moe_dtype", "distribution"])
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


def _collective(family_of, nbytes, group, impl, latency_us, source, placement="intra_node") -> pd.DataFrame:
    out = pd.DataFrame({"family": family_of, "bytes": np.asarray(nbytes, dtype=float), "group_size": group,
                        "placement": placement, "impl": impl})
    out["source"] = source
    return _measured(out, latency_us)


#: bytes per element of a collective's message dtype
_MESSAGE_WIDTH = {"half": 2, "bfloat16": 2, "float16": 2, "int8": 1, "float32": 4}


def nccl_rows(path: Path) -> pd.DataFrame:
    """The collective library's collectives inside one node (NCCL, or oneCCL on Intel);
    ``message_size`` counts elements of ``nccl_dtype``."""
    t = read_table(path, ("op_name", "nccl_dtype", "num_gpus", "message_size", "latency"),
                   {"op_name": NCCL_OPS, "nccl_dtype": _MESSAGE_WIDTH})
    width = t["nccl_dtype"].astype(str).map(_MESSAGE_WIDTH).to_numpy(float)
    return _collective(t["op_name"].map(NCCL_OPS), t["message_size"] * width, t["num_gpus"], "nccl",
                       t["latency"] * 1e3, _source(path, t))


def custom_allreduce_rows(path: Path) -> pd.DataFrame:
    """The framework's own all-reduce kernels, CUDA-graph mode (eager rows are dropped)."""
    t = read_table(path, ("allreduce_dtype", "backend", "implementation", "num_gpus", "message_size", "latency"),
                   {"backend": CUSTOM_ALLREDUCE_MODES, "implementation": CUSTOM_ALLREDUCE_MODES,
                    "allreduce_dtype": _MESSAGE_WIDTH})
    mode = t.get("backend", t.get("implementation", pd.Series(["trtllm"] * len(t)))).astype(str)
    t = t[mode.map(CUSTOM_ALLREDUCE_MODES).to_numpy(bool)].reset_index(drop=True)
    nbytes = t["message_size"] * t["allreduce_dtype"].astype(str).map(_MESSAGE_WIDTH).to_numpy(float)
    return _collective("all_reduce", nbytes, t["num_gpus"], "custom", t["latency"] * 1e3, _source(path, t))


def _a2a_width(name: str) -> float:
    return PRECISIONS[DTYPES[name]].activation_bytes


def moe_a2a_rows(path: Path) -> pd.DataFrame:
    """DeepEP dispatch/combine (latency in µs). ``bytes`` = tokens x topk x hidden x width:
    what one rank sends at most; impl ``<mode>_{dispatch,combine}`` with the modes of
    ``A2A_MODES``. ``sms`` (the SMs DeepEP may use) and the split of the time into
    transmit and notify are not features."""
    t = read_table(path, ("comm_backend", "phase", "comm_dtype", "ep_size", "node_num", "hidden_size", "topk",
                          "num_experts", "num_tokens", "sms", "transmit_us", "notify_us", "latency"),
                   {"comm_backend": A2A_MODES, "phase": ("dispatch", "combine"), "comm_dtype": DTYPES})
    mode = t["comm_backend"].astype(str).map(A2A_MODES).to_numpy(dtype=object)
    width = t["comm_dtype"].astype(str).map(_a2a_width).to_numpy(float)
    nbytes = t["num_tokens"] * t["topk"] * t["hidden_size"] * width
    impl = mode + "_" + t["phase"].astype(str).to_numpy(dtype=object)
    placement = np.where(t["node_num"].to_numpy() > 1, "inter_node", "intra_node")
    return _collective("all_to_all", nbytes, t["ep_size"], impl, t["latency"], _source(path, t), placement)


#: the SMs DeepEP's normal (prefill) kernels use by default; the tables time 4 to 24
DEEPEP_SMS = 20
def wideep_deepep_rows(path: Path, low_latency: bool, skip_nodes: frozenset[int] = frozenset()) -> pd.DataFrame:
    """SGLang's DeepEP tables as ``deepep_dispatch`` and ``deepep_combine`` rows: one row of
    the table holds both phases (µs), 8 GPUs per node, ``num_token`` the tokens each rank
    sends; normal-mode rows at the default SM budget (``DEEPEP_SMS``). Rows of ``skip_nodes``
    node counts are left out (a newer version measured them)."""
    timing = (("dispatch_avg_t_us", "combine_avg_t_us", "dispatch_bandwidth_gbps", "combine_bandwidth_gbps")
              if low_latency else ("dispatch_transmit_us", "dispatch_notify_us", "combine_transmit_us",
                                   "combine_notify_us", "dispatch_sms", "combine_sms"))
    t = read_table(path, ("node_num", "num_token", "num_topk", "hidden_size", "num_experts", *timing),
                   {"op_name": ("ll",) if low_latency else ("normal",)})
    keep = ~t["node_num"].isin(skip_nodes)
    if not low_latency:  # the SM budget DeepEP and SGLang default to, as aiconfigurator queries
        keep &= (t["dispatch_sms"] == DEEPEP_SMS) & (t["combine_sms"] == DEEPEP_SMS)
    t = t[keep].reset_index(drop=True)
    frames = []
    for phase in ("dispatch", "combine"):
        time = t[f"{phase}_avg_t_us"] if low_latency else t[f"{phase}_transmit_us"] + t[f"{phase}_notify_us"]
        out = pd.DataFrame({"family": f"deepep_{phase}", "num_tokens": t["num_token"], "hidden": t["hidden_size"],
                            "topk": t["num_topk"], "num_experts": t["num_experts"], "group_size": t["node_num"] * 8,
                            "placement": np.where(t["node_num"].to_numpy() > 1, "inter_node", "intra_node"),
                            "impl": "deepep_ll" if low_latency else "deepep_normal"})
        out["source"] = _source(path, t)
        frames.append(_measured(out, time))
    return pd.concat(frames, ignore_index=True)


def wideep_deepep_plan(base: Path, backend: str, filename: str, low_latency: bool) -> Plan:
    """The DeepEP table of ``filename``: from the canonical (else newest) version, and from
    older versions the node counts it did not measure (SGLang 0.5.12 measured one node for
    many model shapes; 0.5.6.post2 measured DeepSeek-V3's shape on 1 to 8 nodes)."""
    first = find_table(base, "comm", backend, filename)
    if first is None:
        return []
    plan: Plan = [(first, partial(wideep_deepep_rows, low_latency=low_latency), None)]
    seen = set(pd.read_parquet(first, columns=["node_num"])["node_num"].tolist())
    for version in versions(base / "comm" / backend):
        path = base / "comm" / backend / version / filename
        if path == first or not path.is_file() or version_key(version) > version_key(first.parent.name):
            continue
        nodes = set(pd.read_parquet(path, columns=["node_num"])["node_num"].tolist())
        if nodes - seen:
            plan.append((path, partial(wideep_deepep_rows, low_latency=low_latency, skip_nodes=frozenset(seen)), None))
            seen |= nodes
    return plan


#: draws averaged to replay a power-law row of the wide-EP tables: the collector averaged the
#: latency over 5 random draws that cannot be replayed; the mean loads of many draws estimate
#: what those 5 had on average (with 5 replayed draws, grouped hold-out accuracy is lower)
WIDEEP_POWER_LAW_DRAWS = 64


def wideep_uniform_tokens(num_tokens: int, num_experts: int, topk: int, ep: int, prefill: bool) -> np.ndarray:
    """One rank's local loads under the wide-EP collector's uniform routing: every local expert
    gets ``num_tokens x topk // num_experts`` tokens; a decode batch too small for that gives
    one token to each of the first ``tokens per rank x topk`` local experts."""
    local = num_experts // ep
    base = num_tokens * topk // num_experts
    loads = np.full(local, base, dtype=np.int64)
    if base == 0 and not prefill:
        loads[: (num_tokens // ep) * topk] = 1
    return loads


def wideep_moe_rows(path: Path, prefill: bool) -> pd.DataFrame:
    """SGLang's wide-EP experts (DeepGEMM behind DeepEP: contiguous layout for prefill, masked
    for decode), DeepSeek-V3's shape. ``num_tokens`` is the whole batch before dispatch: the
    collector logs each rank's tokens x EP. The latency is one rank's experts: every rank's
    under ``uniform`` routing, the most loaded rank's under ``power_law_<alpha>`` (replayed as
    in ``synthetic_routing``)."""
    t = read_table(path, ("num_tokens", "hidden_size", "inter_size", "num_experts", "topk", "moe_ep_size",
                          "moe_tp_size", "moe_dtype", "distribution", "latency"),
                   {"moe_dtype": DTYPES, "distribution": lambda v: v == "uniform" or bool(_DISTRIBUTION.match(v)),
                    "moe_tp_size": _is_one})
    out = pd.DataFrame({"num_tokens": t["num_tokens"], "hidden": t["hidden_size"], "inter": t["inter_size"],
                        "num_experts": t["num_experts"], "topk": t["topk"], "ep": t["moe_ep_size"],
                        "moe_tp": t["moe_tp_size"], "dtype": _dtype(t["moe_dtype"])})
    cache: dict[tuple, np.ndarray] = {}
    routed = []
    for *shape, distribution in zip(*(t[c].to_numpy().tolist() for c in ("num_tokens", "num_experts", "topk",
                                                                          "moe_ep_size")),
                                    t["distribution"].astype(str).tolist(), strict=True):
        key = (*shape, distribution)
        if key not in cache:
            cache[key] = (wideep_uniform_tokens(*shape, prefill) if distribution == "uniform" else
                          power_law_expert_tokens(*shape, float(distribution.removeprefix("power_law_")),
                                                  draws=WIDEEP_POWER_LAW_DRAWS, shuffle_ties=True))
        routed.append(cache[key])
    out["expert_tokens"] = routed
    out["source"] = _source(path, t) + ":" + t["distribution"].astype(str).to_numpy(dtype=object)
    return _measured(out, t["latency"] * 1e3)


# -- which tables, and the system's GPU --------------------------------------------------------

Plan = list[tuple[Path, Callable, str | None]]


def plan_tables(system: str, backend: str = "vllm", root: Path | None = None) -> Plan:
    """The tables to read for ``system`` and ``backend``: (path, reader, family), where a
    reader without a family labels its rows' families itself."""
    if backend not in BACKENDS:
        raise PredictorError(f"--backend {backend!r}: aiconfigurator tables exist for {', '.join(BACKENDS)}"
                             f"{did_you_mean(backend, BACKENDS)}")
    root = root or package_data_root()
    base = root / system
    if not has_tables(system, root):
        known = systems_with_tables(root)
        listed = sorted(p.name for p in root.iterdir() if p.is_dir())
        why = "lists it but ships no tables for it" if system in listed else "has no kernel tables for it"
        raise PredictorError(f"--system {system!r}: aiconfigurator-core {why}{did_you_mean(system, known) or '.'} "
                             f"Systems with tables: {', '.join(known)} (`frontier-dag systems` lists them)")
    plan: Plan = []

    def add(kind: str, owner: str, filename: str, reader: Callable, family: str | None = None) -> bool:
        path = find_table(base, kind, owner, filename)
        if path is not None:
            plan.append((path, reader, family))
        return path is not None

    add("attention", backend, "context_attention_perf.parquet", partial(attention_rows, prefill=True), "attention_prefill")
    add("attention", backend, "generation_attention_perf.parquet", partial(attention_rows, prefill=False), "attention_decode")
    add("gemm", backend, "gemm_perf.parquet", gemm_rows, "gemm")
    add("moe", backend, "moe_perf.parquet", moe_rows, "moe_grouped_gemm")
    add("moe", backend, "wideep_context_moe_perf.parquet", partial(wideep_moe_rows, prefill=True), "moe_wideep_prefill")
    add("moe", backend, "wideep_generation_moe_perf.parquet", partial(wideep_moe_rows, prefill=False),
        "moe_wideep_decode")
    for owner in dict.fromkeys((backend, "trtllm", "sglang")):
        if add("mla", owner, "context_mla_perf.parquet", partial(mla_rows, prefill=True), "mla_prefill"):
            add("mla", owner, "generation_mla_perf.parquet", partial(mla_rows, prefill=False), "mla_decode")
            break
    if not add("comm", "nccl", "nccl_perf.parquet", nccl_rows):
        add("comm", "oneccl", "oneccl_perf.parquet", nccl_rows)
    add("comm", backend, "custom_allreduce_perf.parquet", custom_allreduce_rows)
    if not add("comm", backend, "moe_a2a_perf.parquet", moe_a2a_rows):
        plan.extend(wideep_deepep_plan(base, backend, "wideep_deepep_ll_perf.parquet", low_latency=True))
        plan.extend(wideep_deepep_plan(base, backend, "wideep_deepep_normal_perf.parquet", low_latency=False))
    if not any(family for _, _, family in plan):
        engines = [b for b in BACKENDS if (base / "gemm" / b).is_dir() or (base / "attention" / b).is_dir()]
        raise PredictorError(f"--system {system} --backend {backend}: aiconfigurator-core has no {backend} kernel "
                             f"tables for {system}; it has {', '.join(engines) or 'none'}")
    return plan


def runnable_dtypes(frame: pd.DataFrame, hw: HardwareConfig, where: str) -> pd.DataFrame:
    """``frame`` with each compute dtype as the GPU runs it: a precision without tensor
    cores on ``hw`` in its weight-only form (``precision.WEIGHT_ONLY``), else an error."""
    if "dtype" not in frame:
        return frame
    names = pd.unique(frame["dtype"])
    swap = {}
    for name in names:
        if hw.gpu.supports(name):
            continue
        fallback = WEIGHT_ONLY.get(name)
        if fallback is None or not hw.gpu.supports(fallback):
            try:
                hw.gpu.peak_flops(name)
            except FrontierDagError as exc:
                raise PredictorError(f"{where}: column dtype: {exc}") from None
        swap[name] = fallback
    if swap:
        frame = frame.assign(dtype=frame["dtype"].map(lambda d: swap.get(d, d)))
    return frame


def read_aiconfigurator(system: str, backend: str = "vllm", root: Path | None = None) -> ProfileSet:
    """Every family aiconfigurator measured for ``system`` with ``backend``."""
    plan = plan_tables(system, backend, root)
    hw = load_hardware(system)
    parts: dict[str, list[pd.DataFrame]] = {}
    for path, reader, family in plan:
        frame = runnable_dtypes(reader(path), hw, f"aiconfigurator table {_where(path)}")
        groups = [(family, frame)] if family else frame.groupby("family")
        for name, group in groups:
            parts.setdefault(name, []).append(group.drop(columns="family", errors="ignore"))
    tables = {}
    for family, frames in parts.items():
        frame = pd.concat(frames, ignore_index=True)
        tables[family] = normalize_profile(family, frame[[*QUERY_COLUMNS[family], "latency_us", "latency_std_us",
                                                         "repeats", "source"]], f"aiconfigurator {system}/{family}")
    return ProfileSet(hw.name, tables, [path for path, _, _ in plan], f"aiconfigurator-core {system} {backend}")
