"""The run configuration: one YAML file that says what to simulate.

    model: qwen3-30b-a3b
    hardware: h200_sxm
    cluster: {pools: {prefill: {role: prefill, gpus: 8, ep: 8}, decode: {...}}}
    workflow: {name: pd, params: {}}
    workload: {arrival: {kind: poisson, rate_per_s: 20}, num_requests: 2000}
    scheduler: {policy: vllm, max_num_seqs: 256, max_num_batched_tokens: 8192}
    predictor: {source: aiconfigurator, backend: vllm}
    slo: {ttft_ms: 2000, tpot_ms: 50}
    seed: 0

``load_run_config(path, overrides)`` validates it (unknown keys are errors naming
the file and key) and ``resolve`` turns names into model and hardware objects and
checks that the deployment can exist (TP divides heads, weights fit in memory).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from frontier_dag.config.hardware import HardwareConfig, load_hardware
from frontier_dag.config.loading import (
    Strict,
    apply_overrides,
    dump_yaml,
    positive_at_most,
    read_yaml,
    validate,
)
from frontier_dag.config.model import ModelConfig, load_model
from frontier_dag.config.overheads import EngineOverheads, OverheadsRef, resolve_overheads
from frontier_dag.config.workload import WorkloadConfig
from frontier_dag.errors import ConfigError

Role = Literal["colocated", "prefill", "decode", "attention", "ffn"]

# Limits that a size must stay within (docs/configuration.md, Limits): far above any real
# deployment, and checked before anything is allocated, so that a typo's magnitude
# (gpus: 1000000000000) is an error at once instead of memory and minutes spent building it.
#: replicas of one pool (each is built as an object of its own)
MAX_REPLICAS = 10_000
#: GPUs of one replica (an EP-MoE iteration has a node per rank and layer)
MAX_GPUS_PER_REPLICA = 4_096
#: sequences one replica may run at once: max_num_seqs x attention-DP ranks (each has a slot)
MAX_SEQS_PER_REPLICA = 1_048_576
#: tokens of a KV block
MAX_BLOCK_SIZE = 4_096
BlockSize = positive_at_most(MAX_BLOCK_SIZE)


def at_most(value: int, limit: int, what: str) -> None:
    """Refuse ``value`` above ``limit`` as a probable typo, saying so."""
    if value > limit:
        raise ValueError(f"{what} = {value:,} is above the limit of {limit:,} (a typo? the limits are in "
                         "docs/configuration.md)")


class PredictorConfig(Strict):
    source: str = Field("aiconfigurator", description="aiconfigurator, roofline, or a profile directory")
    backend: str = "vllm"
    system: str | None = Field(None, description="kernel tables' system; default the hardware's")
    path: str | None = Field(None, description="folder of the CSVs for source frontier-csv or vidur-csv")
    jitter: bool = Field(False, description="sample kernel time spread instead of using the median")


class PoolConfig(Strict):
    """A pool of identical GPUs with one role. A replica is one copy of the model (or, for
    ``attention``/``ffn``, one copy of its half); ``gpus`` is the pool's total."""

    role: Role
    gpus: PositiveInt
    tp: PositiveInt = Field(1, description="tensor parallel size of attention and dense layers")
    ep: PositiveInt = Field(1, description="expert parallel size of MoE layers")
    dp: PositiveInt | None = Field(None, description="attention data parallel; default gpus per stage / tp")
    pp: PositiveInt = Field(1, description="pipeline parallel stages of a replica: its layers split into pp "
                                           "contiguous stages, each on gpus per replica / pp GPUs")
    pp_layers: list[PositiveInt] | None = Field(
        None, description="layers of each pipeline stage, first to last (as vLLM's VLLM_PP_LAYER_PARTITION); "
                          "default: an even split, the remainder on the stages before the last")
    replicas: PositiveInt = 1
    hardware: str | None = Field(None, description="GPU system of this pool; default the top-level hardware")
    predictor: PredictorConfig | None = Field(
        None, description="how this pool's ops are priced; default the top-level predictor (on a pool whose GPU "
                          "differs from the deployment's: with that GPU's own kernel tables)")
    kv_capacity_tokens: PositiveInt | None = Field(None, description="KV cache per replica; default from memory")

    @model_validator(mode="before")
    @classmethod
    def _ffn_tp(cls, data: Any) -> Any:
        """An ffn pool's dense layers are tensor parallel over its GPUs per replica: that is its
        ``tp`` when none is given (so that the resolved config, written back, says so)."""
        if isinstance(data, dict) and data.get("role") == "ffn" and data.get("tp") is None:
            gpus, replicas = data.get("gpus"), data.get("replicas", 1)
            if isinstance(gpus, int) and isinstance(replicas, int) and replicas > 0 and gpus % replicas == 0:
                data = {**data, "tp": gpus // replicas}
        return data

    @model_validator(mode="after")
    def _shape(self) -> PoolConfig:
        at_most(self.replicas, MAX_REPLICAS, "replicas")
        at_most(-(-self.gpus // self.replicas), MAX_GPUS_PER_REPLICA, "gpus per replica")
        if self.gpus % self.replicas:
            raise ValueError(f"gpus={self.gpus} is not divisible by replicas={self.replicas}")
        per_replica = self.gpus // self.replicas
        if self.pp > 1 or self.pp_layers is not None:
            self._pipeline_shape(per_replica)
        per_replica //= self.pp  # the GPUs of one pipeline stage hold every layer's shards alike
        if per_replica % self.ep and self.role != "attention":
            raise ValueError(f"ep={self.ep} does not divide the {self._per(per_replica)}")
        if self.role == "ffn":  # no attention: its dense layers are tensor parallel over the replica
            if self.tp != per_replica:
                raise ValueError(f"tp={self.tp}: an ffn pool's dense layers are tensor parallel over all its GPUs "
                                 f"per replica; omit tp or set it to {per_replica}")
            return self
        if per_replica % self.tp:
            raise ValueError(f"{self._per(per_replica)} is not divisible by tp={self.tp}")
        dp = self.dp if self.dp is not None else per_replica // self.tp
        if dp * self.tp != per_replica:
            raise ValueError(f"tp={self.tp} x dp={dp} must equal the {self._per(per_replica)}")
        return self

    def _pipeline_shape(self, per_replica: int) -> None:
        if self.role in ("attention", "ffn"):
            raise ValueError(f"pp={self.pp}: pipeline parallelism splits a whole model's layers; an {self.role} pool "
                             "holds half of each layer (use pp on colocated, prefill or decode pools)")
        if per_replica % self.pp:
            raise ValueError(f"pp={self.pp} does not divide the gpus per replica ({per_replica}): each pipeline "
                             "stage runs on gpus per replica / pp GPUs")
        if self.pp_layers is not None and len(self.pp_layers) != self.pp:
            raise ValueError(f"pp_layers={self.pp_layers} names {len(self.pp_layers)} stages but pp={self.pp}; give "
                             "one layer count per stage")

    def _per(self, gpus: int) -> str:
        """``gpus per replica (8)``, or with pipeline parallelism ``gpus per pipeline stage (4 =
        8 per replica / pp=2)``."""
        if self.pp == 1:
            return f"gpus per replica ({gpus})"
        return f"gpus per pipeline stage ({gpus} = {self.gpus // self.replicas} per replica / pp={self.pp})"

    @property
    def gpus_per_replica(self) -> int:
        """All the GPUs of one replica (with pipeline parallelism, of all its stages)."""
        return self.gpus // self.replicas

    @property
    def gpus_per_stage(self) -> int:
        """The GPUs of one pipeline stage, which hold its layers' shards (TP x DP, EP x expert
        TP): the GPUs per replica without pipeline parallelism."""
        return self.gpus_per_replica // self.pp

    def stage_layers(self, num_layers: int) -> list[int]:
        """Layers of each pipeline stage, first to last: ``pp_layers``, or vLLM's and SGLang's
        even split (``get_pp_indices``): ``num_layers // pp`` each, and the remainder one
        more each on the stages before the last, from the second-to-last backwards (the last
        also runs the final norm and the LM head): 61 layers in 2 stages are [31, 30], 126
        in 4 are [31, 32, 32, 31]."""
        if self.pp_layers is not None:
            return list(self.pp_layers)
        counts = [num_layers // self.pp] * self.pp
        for i in range(2, num_layers % self.pp + 2):
            counts[-i] += 1
        return counts

    def stage_ranges(self, num_layers: int) -> list[range]:
        """The layer indices of each pipeline stage."""
        bounds = [0, *accumulate(self.stage_layers(num_layers))]
        return [range(a, b) for a, b in pairwise(bounds)]

    @property
    def dense_tp(self) -> int:
        """Tensor parallel size of the pool's attention and dense layers (``pool.tp`` in a
        workflow): ``tp``, which for an ffn pool is all its GPUs per replica."""
        return self.tp

    @property
    def attention_dp(self) -> int:
        return self.dp if self.dp is not None else self.gpus_per_stage // self.tp

    @property
    def moe_tp(self) -> int:
        """Tensor parallel size inside each expert (gpus per stage / ep)."""
        return max(1, self.gpus_per_stage // self.ep)


class EntryConfig(Strict):
    """Which pools new requests enter and the rule that picks one, over what the workflow
    declares with ``g.entry`` (docs/dsl.md, "Routing between entry pools")."""

    pools: list[str] | None = Field(None, description="names of cluster.pools that new requests may enter; default "
                                                        "the workflow's")
    rule: str | None = Field(None, description="round_robin, least_outstanding_tokens or by_prompt_length; default "
                                               "the workflow's")
    params: dict[str, Any] = Field({}, description="the rule's parameters (by_prompt_length: threshold, short, long), "
                                                   "over the workflow's when the rule is the same")


class ClusterConfig(Strict):
    pools: dict[str, PoolConfig]
    kv_link: Literal["auto", "nvlink", "network"] = Field(
        "auto", description="link that carries KV between pools; auto: nvlink when both fit in one node")
    comm_sms: dict[str, NonNegativeInt] = Field(
        {}, description="SMs a communication kernel holds while it runs, by implementation (nccl, custom, auto, "
                        "deepep_normal, deepep_ll, or a workflow's own impl=): a collective that overlaps compute "
                        "on its GPUs slows it by that share of the GPU's SMs (docs/dsl.md, contention); "
                        "defaults: nccl 32, custom and auto 36, deepep_normal 20, deepep_ll DeepEP's launch grid")
    entry: EntryConfig | None = Field(None, description="which pools new requests enter and how one is chosen; "
                                                        "default the workflow's g.entry")

    @model_validator(mode="after")
    def _roles(self) -> ClusterConfig:
        if not self.pools:
            raise ValueError("cluster.pools is empty; add at least one pool")
        for name in (self.entry.pools or []) if self.entry is not None else []:
            if name not in self.pools:
                raise ValueError(f"entry.pools names {name!r}, which is not a pool of cluster.pools "
                                 f"({', '.join(self.pools)})")
        return self

    def pools_with_role(self, role: str) -> list[str]:
        return [name for name, pool in self.pools.items() if pool.role == role]


class WorkflowConfig(Strict):
    name: str = "colocated"
    params: dict[str, Any] = {}
    path: str | None = Field(None, description="a Python file defining the workflow, for your own strategies")


class SchedulerConfig(Strict):
    policy: str = Field("vllm", description="the scheduling policy: vllm, sglang or trtllm (TensorRT-LLM's "
                                           "GUARANTEED_NO_EVICT), or one registered in frontier_dag.sim.policies")
    max_num_seqs: PositiveInt = 256
    max_num_batched_tokens: PositiveInt = 8192
    max_prefill_tokens: PositiveInt | None = Field(
        None, description="SGLang's --max-prefill-tokens: a prompt after the first joins a prefill batch only whole "
                          "and within this many prompt tokens (the first is chunked by max_num_batched_tokens); "
                          "none: only max_num_batched_tokens")
    chunked_prefill: bool = True
    max_model_len: PositiveInt | None = Field(
        None, description="vLLM's --max-model-len: the longest request (prompt + output) served; a longer one is an "
                          "error; None: the model's max_context_tokens (above it, as VLLM_ALLOW_LONG_MAX_MODEL_LEN "
                          "allows)")
    block_size: BlockSize = 16
    routing: Literal["round_robin", "least_work"] = "least_work"
    prefix_caching: bool = True
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    iteration_overhead_us: float = Field(0.0, ge=0, description="host-side scheduler cost per iteration")
    reserve_output: float = Field(
        0.0, ge=0, le=1,
        description="share of each request's remaining output whose KV must stay free before another request is "
                    "admitted: 0 as vLLM (preempt when memory runs out), 0.7 as SGLang's new_token_ratio, 1 as "
                    "TensorRT-LLM's guaranteed-no-evict scheduler")
    reserve_output_min: float = Field(
        0.0, ge=0, le=1,
        description="with reserve_output_decay_steps: the share reserve_output decays to (SGLang: 0.7 x 0.14)")
    reserve_output_decay_steps: int = Field(
        0, ge=0,
        description="decode steps over which reserve_output falls linearly to reserve_output_min while no sequence "
                    "is preempted (SGLang's new_token_ratio: 600); a preemption sets it back to the running requests' "
                    "decoded share, an idle replica to reserve_output; 0: constant")
    decode_reserve_tokens: int = Field(
        0, ge=0,
        description="decode pools of a PD deployment: KV tokens kept free for each request the replica holds "
                    "(running, arrived or in flight) when it accepts a KV transfer, instead of reserve_output "
                    "(SGLang's decode server: 512); 0: reserve_output applies to transfers as to admissions")


class SLOConfig(Strict):
    ttft_ms: PositiveFloat = 2000.0
    tpot_ms: PositiveFloat = 50.0


class RunConfig(Strict):
    model: str | dict[str, Any]
    hardware: str | dict[str, Any] = "h100_sxm"
    cluster: ClusterConfig
    workflow: WorkflowConfig = WorkflowConfig()
    workload: WorkloadConfig = WorkloadConfig(arrival={"kind": "poisson", "rate_per_s": 1.0})
    scheduler: SchedulerConfig = SchedulerConfig()
    predictor: PredictorConfig = PredictorConfig()
    slo: SLOConfig = SLOConfig()
    engine_overheads: EngineOverheads | OverheadsRef | str | None = Field(
        None, description="the engine's time outside the kernels: inline values, or a file frontier-dag calibrate "
                          "wrote (config/overheads.py); none: no time outside the kernels")
    gpu_hour_prices: dict[str, PositiveFloat] = Field(
        {}, description="price of one GPU-hour by hardware name (any currency); with a price for every pool's GPU "
                        "the summary gives the deployment's cost per hour and output tokens per unit of currency")
    seed: int = 0

    def to_yaml(self) -> str:
        return dump_yaml(self.model_dump(mode="json", exclude_none=True))


@dataclass(frozen=True)
class Origin:
    """Where a run config came from, which the config itself does not say: ``name`` opens
    the error messages about it (a file, or ``sweep.yaml: point 3``), and relative paths in
    it (a model's config.json, ``workflow.path``, a workload trace) are taken from
    ``base_dir`` (None: the working directory).

    >>> Origin.of_file("examples/pd_llama3_70b.yaml")
    Origin(name='examples/pd_llama3_70b.yaml', base_dir=PosixPath('examples'))
    """

    name: str = "config"
    base_dir: Path | None = None

    @classmethod
    def of_file(cls, path: str | Path) -> Origin:
        return cls(str(path), Path(path).parent)

    def path(self, text: str | Path) -> Path:
        """``text`` as a path: relative ones from ``base_dir``."""
        path = Path(text)
        return path if self.base_dir is None or path.is_absolute() else self.base_dir / path


@dataclass(frozen=True)
class Deployment:
    """A RunConfig with names resolved and feasibility checked."""

    config: RunConfig
    model: ModelConfig
    hardware: HardwareConfig
    pool_hardware: dict[str, HardwareConfig]
    origin: Origin = Origin()
    warnings: tuple[str, ...] = ()  # what resolving noticed and the run summary repeats

    @property
    def pools(self) -> dict[str, PoolConfig]:
        return self.config.cluster.pools

    @property
    def total_gpus(self) -> int:
        return sum(p.gpus for p in self.pools.values())

    @property
    def overheads(self) -> EngineOverheads | None:
        """The engine overhead model (``resolve`` replaces a file's name by its entry)."""
        value = self.config.engine_overheads
        return value if isinstance(value, EngineOverheads) else None


def load_run_config(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Read and validate a run config YAML, applying ``key.path=value`` overrides. Its
    relative paths are relative to the file: resolve it with ``Origin.of_file(path)``."""
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides)
    return validate(RunConfig, data, str(path), overrides)


def run_config_from_dict(data: dict[str, Any], overrides=(), source: str = "config") -> RunConfig:
    """Validate a run config mapping; ``source`` names it in error messages."""
    return validate(RunConfig, apply_overrides(data, overrides), source, overrides)


#: The weights a pool of each role holds unless the traced workflow says otherwise (its ops'
#: weight groups, ``EventGraph.weight_groups``): the groups of ``ModelConfig.weight_bytes``.
WEIGHTS_OF_ROLE: dict[str, frozenset[str]] = {
    **dict.fromkeys(("colocated", "prefill", "decode"),
                    frozenset({"attention", "embeddings", "dense_ffn", "shared_experts", "experts"})),
    "attention": frozenset({"attention", "embeddings"}),
    "ffn": frozenset({"dense_ffn", "shared_experts", "experts"}),
}
#: A weight group that stands for ops no group was declared for (``g.weights``): the pool is
#: then assumed to hold its role's weights as well.
UNDECLARED_WEIGHTS = "undeclared"


def weights_per_gpu_bytes(model: ModelConfig, pool: PoolConfig, groups: Mapping[str, int | None] | None = None,
                          redundant: int = 0) -> float:
    """Weight bytes each GPU of the pool holds (with pipeline parallelism, each GPU of its
    most loaded stage): of each weight group its ops read (``groups``: group -> how many GPUs
    split it, from the traced workflow; default its role's groups), ``1/split`` of the group.
    A group's usual split (None) is the pool's dense TP for attention, embeddings, dense FFNs
    and shared experts, and its GPUs per stage for routed experts (EP x expert TP).
    ``redundant`` expert replicas (EPLB, ``redundant_experts``) add their weights on an
    expert-parallel pool: each EP rank holds (experts + redundant) / ep expert slots."""
    return max(stage_weights_per_gpu_bytes(model, pool, groups, redundant))


def stage_weights_per_gpu_bytes(model: ModelConfig, pool: PoolConfig,
                                groups: Mapping[str, int | None] | None = None, redundant: int = 0) -> list[float]:
    """``weights_per_gpu_bytes`` of each pipeline stage: its layers' share of every group
    (``stage_weight_shares``)."""
    placed = dict.fromkeys(WEIGHTS_OF_ROLE[pool.role]) if groups is None else dict(groups)
    if UNDECLARED_WEIGHTS in placed:
        placed = {**dict.fromkeys(WEIGHTS_OF_ROLE[pool.role]), **placed}
    whole = dict(model.weight_bytes())
    if redundant and pool.ep > 1 and model.moe is not None:
        whole["experts"] *= (model.moe.num_experts + redundant) / model.moe.num_experts
    usual = {"experts": pool.gpus_per_stage}
    out = []

    def part(w: Mapping[str, float], *names: str) -> float:
        """The groups' bytes per GPU, summed before one division where they split alike."""
        splits = {name: placed[name] or usual.get(name, pool.dense_tp) for name in names if name in placed}
        if len(set(splits.values())) == 1:
            return sum(w[name] for name in splits) / next(iter(splits.values()))
        return sum(w[name] / split for name, split in splits.items())

    for shares in stage_weight_shares(model, pool):
        w = {name: whole[name] * shares[name] for name in whole}
        out.append(part(w, "attention", "embeddings") + (part(w, "dense_ffn", "shared_experts") + part(w, "experts")))
    return out


def stage_weight_shares(model: ModelConfig, pool: PoolConfig) -> list[dict[str, float]]:
    """The share of each weight group (``ModelConfig.weight_bytes``) that each pipeline stage
    holds: attention by its layers, dense FFNs by its dense layers, experts by its MoE layers;
    the first stage holds the input embedding and the last the LM head (a matrix each, also
    where the model ties them, as vLLM and SGLang load it). One stage holds everything."""
    names = ("attention", "embeddings", "dense_ffn", "shared_experts", "experts")
    if pool.pp == 1:
        return [dict.fromkeys(names, 1.0)]
    ranges = pool.stage_ranges(model.num_layers)
    moe_total = model.num_moe_layers
    dense_total = model.num_layers - moe_total
    matrices = 1 if model.tie_word_embeddings else 2
    out = []
    for k, layers in enumerate(ranges):
        moe = sum(model.is_moe_layer(i) for i in layers)
        ends = (k == 0) + (k == len(ranges) - 1)
        experts = moe / moe_total if moe_total else 0.0
        out.append({"attention": len(layers) / model.num_layers, "embeddings": ends / matrices,
                    "dense_ffn": (len(layers) - moe) / dense_total if dense_total else 0.0,
                    "shared_experts": experts, "experts": experts})
    return out


def check_weights_fit(deployment: Deployment, name: str, groups: Mapping[str, int | None] | None = None) -> None:
    """A ConfigError when pool ``name``'s weights (of ``groups``, default its role's) leave
    no room on its GPUs."""
    config, pool, model = deployment.config, deployment.pools[name], deployment.model
    hw = deployment.pool_hardware[name]
    need = weights_per_gpu_bytes(model, pool, groups, redundant_experts(config.workflow))
    have = hw.gpu.hbm_capacity_bytes * config.scheduler.gpu_memory_utilization
    if need > have:
        raise ConfigError(
            f"{deployment.origin.name}: cluster.pools.{name}: {model.name} needs {need / 2**30:.1f} GiB of weights per "
            f"GPU with tp={pool.dense_tp}, ep={pool.ep}{f', pp={pool.pp}' if pool.pp > 1 else ''} but a {hw.name} GPU "
            f"has {have / 2**30:.1f} GiB usable; raise tp/ep{'/pp' if pool.pp > 1 else ''} or use more GPUs per replica")


def redundant_experts(workflow: WorkflowConfig) -> int:
    """The redundant expert replicas (EPLB) that a workflow's ``routing`` parameter asks for."""
    routing = workflow.params.get("routing")
    value = routing.get("redundant_experts", 0) if isinstance(routing, Mapping) else 0
    return value if isinstance(value, int) and value > 0 else 0  # the routing's own check reports bad values


def check_expert_slots(key: str, ep: int, model: ModelConfig, redundant: int) -> None:
    """Every EP rank holds the same number of expert slots: the model's experts plus the
    redundant replicas (EPLB) divide evenly over ``ep`` ranks (256 + 32 over 72 ranks does)."""
    slots = model.moe.num_experts + redundant
    if slots % min(ep, slots) == 0:
        return
    extra = f" + {redundant} redundant" if redundant else ""
    fit = -model.moe.num_experts % ep or ep
    raise ConfigError(f"{key}.ep: ep={ep} does not divide the {model.moe.num_experts}{extra} experts of {model.name}; "
                      f"use a divisor of {slots}, or set workflow.params.routing.redundant_experts so that experts + "
                      f"redundant is a multiple of {ep} (for example {fit} or {fit + ep})")


def resolve(config: RunConfig, origin: Origin = Origin()) -> Deployment:
    """Resolve names and check that the deployment can exist, before any simulation starts."""
    src = origin.name
    model = config_model(config, origin)
    hardware = config_hardware(origin, config.hardware, "hardware")
    pool_hw = {}
    roles = {p.role for p in config.cluster.pools.values()}
    if "colocated" in roles and roles & {"prefill", "decode"}:
        raise ConfigError(f"{src}: cluster.pools: a colocated pool cannot be combined with prefill/decode pools")
    if ("attention" in roles) != ("ffn" in roles):
        raise ConfigError(f"{src}: cluster.pools: attention/FFN disaggregation needs one attention and one ffn pool")
    if "prefill" in roles and not roles & {"decode", "attention"}:
        raise ConfigError(f"{src}: cluster.pools: a prefill pool needs a decode pool (or attention+ffn pools) to hand requests to")
    if "decode" in roles and "prefill" not in roles:
        raise ConfigError(f"{src}: cluster.pools: a decode pool needs a prefill pool")
    for name, pool in config.cluster.pools.items():
        key = f"{src}: cluster.pools.{name}"
        hw = config_hardware(origin, pool.hardware, f"cluster.pools.{name}.hardware") if pool.hardware else hardware
        pool_hw[name] = hw
        for field, dtype in (("dtype", model.dtype), ("moe_dtype", model.moe_dtype)):
            if dtype is not None and not hw.gpu.supports(dtype):
                try:
                    hw.gpu.peak_flops(dtype)
                except ConfigError as exc:
                    raise ConfigError(f"{key}: model.{field} {dtype} on {hw.name}: {exc}; choose another "
                                      "precision or hardware") from None
        if pool.role != "ffn":
            if model.num_heads % pool.tp:
                raise ConfigError(f"{key}.tp: tp={pool.tp} does not divide the {model.num_heads} attention heads of {model.name}; use a divisor of {model.num_heads}")
            if model.mla is None and pool.tp > model.num_kv_heads and pool.tp % model.num_kv_heads:
                raise ConfigError(f"{key}.tp: tp={pool.tp} must be a multiple of the {model.num_kv_heads} KV heads of {model.name} when larger than them")
        if model.moe is not None and pool.role != "attention":
            check_expert_slots(key, pool.ep, model, redundant_experts(config.workflow))
        if config.scheduler.max_num_seqs * pool.attention_dp > MAX_SEQS_PER_REPLICA:
            raise ConfigError(f"{key}: a replica runs up to scheduler.max_num_seqs x attention-DP ranks = "
                              f"{config.scheduler.max_num_seqs:,} x {pool.attention_dp:,} sequences, above the limit "
                              f"of {MAX_SEQS_PER_REPLICA:,} (a typo? the limits are in docs/configuration.md)")
        if model.moe is None and pool.ep > 1:
            raise ConfigError(f"{key}.ep: {model.name} is dense; expert parallelism needs a MoE model (set ep: 1)")
        if pool.pp > model.num_layers:
            raise ConfigError(f"{key}.pp: pp={pool.pp} stages for the {model.num_layers} layers of {model.name}; a "
                              f"stage holds at least one layer (use pp <= {model.num_layers})")
        if pool.pp_layers is not None and sum(pool.pp_layers) != model.num_layers:
            raise ConfigError(f"{key}.pp_layers: {pool.pp_layers} sum to {sum(pool.pp_layers)} layers but "
                              f"{model.name} has {model.num_layers}; give each stage's layers, first to last")
    notes = check_request_lengths(config, model, *declared_lengths(config.workload), origin=origin)
    if config.engine_overheads is not None and not isinstance(config.engine_overheads, EngineOverheads):
        # the run holds the values it used (its config.yaml stands alone), not the file's name
        try:
            overheads = resolve_overheads(config.engine_overheads, config.scheduler.policy, origin.path)
        except ConfigError as exc:
            raise ConfigError(f"{src}: {exc}") from None
        config = config.model_copy(update={"engine_overheads": overheads})
    deployment = Deployment(config=config, model=model, hardware=hardware, pool_hardware=pool_hw, origin=origin,
                            warnings=tuple(notes))
    for name, pool in config.cluster.pools.items():
        # the halves of a disaggregated model hold what their ops run, known once traced
        # (frontier_dag.dsl.trace checks them then)
        if pool.role not in ("attention", "ffn"):
            check_weights_fit(deployment, name)
    return deployment


def declared_lengths(workload: WorkloadConfig) -> tuple[int | None, int | None]:
    """The longest prompt and the longest prompt + output that the workload's config allows
    (None where a distribution is unbounded: lognormal or trace lengths without ``high``)."""
    def longest(length) -> int | None:
        return length.value if length.kind == "fixed" else length.high

    prompt, output = longest(workload.prompt_tokens), longest(workload.output_tokens)
    return prompt, prompt + output if prompt is not None and output is not None else None


def check_request_lengths(config: RunConfig, model: ModelConfig, prompt: int | None, total: int | None,
                          drawn: str = "", origin: Origin = Origin()) -> list[str]:
    """Check a workload against what a serving engine accepts. A prompt that does not fit one
    step's token budget without chunked prefill is a configuration vLLM refuses: an error. A
    request longer than the model's context (which an engine would reject) is simulated as
    written, a hypothetically longer context, and said: the warning is returned, and the
    deployment, the run's summary and the iteration report carry it. ``prompt`` is the longest prompt and
    ``total`` the longest prompt + output (None: unknown); ``drawn`` says where they come
    from when not from the config."""
    src, sched = origin.name, config.scheduler
    notes = []
    context = sched.max_model_len or model.max_context_tokens
    limit = (f"scheduler.max_model_len={context:,}" if sched.max_model_len else
             f"{model.name}'s context of {context:,} tokens (its max_context_tokens)") if context else ""
    longest = f"the longest {drawn}" if drawn else "the longest"
    for what, tokens in (("prompt", prompt), ("request (prompt + output)", total)):
        if context is not None and tokens is not None and tokens > context:
            notes.append(f"{src}: workload: {longest} {what} has {tokens:,} tokens, beyond {limit}; a serving "
                         "engine rejects such requests, and this run simulates them as if the context were longer. "
                         "Set workload.prompt_tokens.high and workload.output_tokens.high (or shorter lengths) so "
                         "that every request fits, or raise scheduler.max_model_len to say the longer context is "
                         "meant (as vLLM's VLLM_ALLOW_LONG_MAX_MODEL_LEN allows)")
            break
    if not sched.chunked_prefill and prompt is not None and prompt > sched.max_num_batched_tokens:
        raise ConfigError(f"{src}: scheduler: chunked_prefill is false, so a prompt is prefilled in one step, but "
                          f"max_num_batched_tokens={sched.max_num_batched_tokens:,} is below {longest} prompt "
                          f"({prompt:,} tokens), and vLLM refuses such a configuration: raise "
                          f"scheduler.max_num_batched_tokens to at least {prompt:,}, set scheduler.chunked_prefill: "
                          "true, or cap workload.prompt_tokens.high")
    return notes


def config_model(config: RunConfig, origin: Origin = Origin()) -> ModelConfig:
    """The config's model; an error in it names the config file and the ``model`` key."""
    try:
        return load_model(config.model, base_dir=origin.base_dir) if isinstance(config.model, str) \
            else load_model(config.model)
    except ConfigError as exc:
        raise _in_config(origin, "model", exc) from None


def config_hardware(origin: Origin, spec: str | dict, key: str) -> HardwareConfig:
    """A GPU system of the config (``key``: where it is written); errors name the file and key."""
    try:
        return load_hardware(spec)
    except ConfigError as exc:
        raise _in_config(origin, key, exc) from None


def _in_config(origin: Origin, key: str, exc: ConfigError) -> ConfigError:
    """``exc`` (about a model or hardware, "model: num_layers: ...") as an error of the
    config file at ``key`` ("run.yaml: model.num_layers: ...")."""
    lines = []
    for line in str(exc).splitlines():
        head, sep, rest = line.partition(": ")
        if sep and head in ("model", "hardware"):
            inner, sep2, tail = rest.partition(": ")
            line = f"{key}.{inner}: {tail}" if sep2 and " " not in inner else f"{key}: {rest}"
        else:
            line = f"{key}: {line}"
        lines.append(f"{origin.name}: {line}")
    return ConfigError("\n".join(lines))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if b else math.inf
