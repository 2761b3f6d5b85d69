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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from frontier_dag.config.hardware import HardwareConfig, load_hardware
from frontier_dag.config.loading import Strict, apply_overrides, read_yaml, validate
from frontier_dag.config.model import ModelConfig, load_model
from frontier_dag.config.workload import WorkloadConfig
from frontier_dag.errors import ConfigError

Role = Literal["colocated", "prefill", "decode", "attention", "ffn"]


class PoolConfig(Strict):
    """A pool of identical GPUs with one role. A replica is one copy of the model (or, for
    ``attention``/``ffn``, one copy of its half); ``gpus`` is the pool's total."""

    role: Role
    gpus: PositiveInt
    tp: PositiveInt = Field(1, description="tensor parallel size of attention and dense layers")
    ep: PositiveInt = Field(1, description="expert parallel size of MoE layers")
    dp: PositiveInt | None = Field(None, description="attention data parallel; default gpus per replica / tp")
    replicas: PositiveInt = 1
    hardware: str | None = Field(None, description="GPU system of this pool; default the top-level hardware")
    kv_capacity_tokens: PositiveInt | None = Field(None, description="KV cache per replica; default from memory")

    @model_validator(mode="after")
    def _shape(self) -> PoolConfig:
        if self.gpus % self.replicas:
            raise ValueError(f"gpus={self.gpus} is not divisible by replicas={self.replicas}")
        per_replica = self.gpus // self.replicas
        if per_replica % self.ep and self.role != "attention":
            raise ValueError(f"ep={self.ep} does not divide the gpus per replica ({per_replica})")
        if self.role == "ffn":  # no attention: tp and dp do not apply
            return self
        if per_replica % self.tp:
            raise ValueError(f"gpus per replica ({per_replica}) is not divisible by tp={self.tp}")
        dp = self.dp if self.dp is not None else per_replica // self.tp
        if dp * self.tp != per_replica:
            raise ValueError(f"tp={self.tp} x dp={dp} must equal the gpus per replica ({per_replica})")
        return self

    @property
    def gpus_per_replica(self) -> int:
        return self.gpus // self.replicas

    @property
    def attention_dp(self) -> int:
        return self.dp if self.dp is not None else self.gpus_per_replica // self.tp

    @property
    def moe_tp(self) -> int:
        """Tensor parallel size inside each expert (gpus per replica / ep)."""
        return max(1, self.gpus_per_replica // self.ep)


class ClusterConfig(Strict):
    pools: dict[str, PoolConfig]
    kv_link: Literal["auto", "nvlink", "network"] = Field(
        "auto", description="link that carries KV between pools; auto: nvlink when both fit in one node")

    @model_validator(mode="after")
    def _roles(self) -> ClusterConfig:
        if not self.pools:
            raise ValueError("cluster.pools is empty; add at least one pool")
        return self

    def pools_with_role(self, role: str) -> list[str]:
        return [name for name, pool in self.pools.items() if pool.role == role]


class WorkflowConfig(Strict):
    name: str = "colocated"
    params: dict[str, Any] = {}
    path: str | None = Field(None, description="a Python file defining the workflow, for your own strategies")


class SchedulerConfig(Strict):
    policy: Literal["vllm", "sglang"] = "vllm"
    max_num_seqs: PositiveInt = 256
    max_num_batched_tokens: PositiveInt = 8192
    max_prefill_tokens: PositiveInt | None = Field(
        None, description="SGLang's --max-prefill-tokens: a prompt after the first joins a prefill batch only whole "
                          "and within this many prompt tokens (the first is chunked by max_num_batched_tokens); "
                          "none: only max_num_batched_tokens")
    chunked_prefill: bool = True
    block_size: PositiveInt = 16
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


class PredictorConfig(Strict):
    source: str = Field("aiconfigurator", description="aiconfigurator, roofline, or a profile directory")
    backend: str = "vllm"
    system: str | None = Field(None, description="kernel tables' system; default the hardware's")
    path: str | None = Field(None, description="folder of the CSVs for source frontier-csv or vidur-csv")
    jitter: bool = Field(False, description="sample kernel time spread instead of using the median")


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
    seed: int = 0

    #: The file this config was read from (not a key of the file).
    _source: str = "config"
    _base_dir: Path | None = None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


@dataclass(frozen=True)
class Deployment:
    """A RunConfig with names resolved and feasibility checked."""

    config: RunConfig
    model: ModelConfig
    hardware: HardwareConfig
    pool_hardware: dict[str, HardwareConfig]

    @property
    def pools(self) -> dict[str, PoolConfig]:
        return self.config.cluster.pools

    @property
    def total_gpus(self) -> int:
        return sum(p.gpus for p in self.pools.values())


def load_run_config(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Read and validate a run config YAML, applying ``key.path=value`` overrides."""
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides)
    config = validate(RunConfig, data, str(path))
    config._source = str(path)
    config._base_dir = path.parent
    return config


def run_config_from_dict(data: dict[str, Any], overrides=(), source: str = "config") -> RunConfig:
    config = validate(RunConfig, apply_overrides(data, overrides), source)
    config._source = source
    return config


def weights_per_gpu_bytes(model: ModelConfig, pool: PoolConfig) -> float:
    """Weight bytes each GPU of the pool holds: attention, embeddings and dense FFNs are
    sharded by TP; routed experts are spread over every GPU of the replica (EP x expert TP).
    An ``attention`` pool holds no FFN weights and an ``ffn`` pool no attention weights."""
    w = model.weight_bytes()
    attention = (w["attention"] + w["embeddings"]) / pool.tp
    ffn = (w["dense_ffn"] + w["shared_experts"]) / pool.tp + w["experts"] / pool.gpus_per_replica
    if pool.role == "attention":
        return attention
    if pool.role == "ffn":
        return (w["dense_ffn"] + w["shared_experts"] + w["experts"]) / pool.gpus_per_replica
    return attention + ffn


def resolve(config: RunConfig) -> Deployment:
    """Resolve names and check that the deployment can exist, before any simulation starts."""
    src = config._source
    model = load_model(config.model, base_dir=config._base_dir) if isinstance(config.model, str) else load_model(config.model)
    hardware = load_hardware(config.hardware)
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
        hw = load_hardware(pool.hardware) if pool.hardware else hardware
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
        if model.moe is not None and pool.role != "attention" and model.moe.num_experts % min(pool.ep, model.moe.num_experts):
            raise ConfigError(f"{key}.ep: ep={pool.ep} does not divide the {model.moe.num_experts} experts of {model.name}")
        if model.moe is None and pool.ep > 1:
            raise ConfigError(f"{key}.ep: {model.name} is dense; expert parallelism needs a MoE model (set ep: 1)")
        need = weights_per_gpu_bytes(model, pool)
        have = hw.gpu.hbm_capacity_bytes * config.scheduler.gpu_memory_utilization
        if need > have:
            raise ConfigError(
                f"{key}: {model.name} needs {need / 2**30:.1f} GiB of weights per GPU with tp={pool.tp}, "
                f"ep={pool.ep} but a {hw.name} GPU has {have / 2**30:.1f} GiB usable; raise tp/ep or use more GPUs per replica")
    return Deployment(config=config, model=model, hardware=hardware, pool_hardware=pool_hw)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if b else math.inf
