"""How many KV-cache tokens a replica holds."""

from __future__ import annotations

from collections.abc import Mapping

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.model import ModelConfig
from frontier_dag.config.run import PoolConfig, SchedulerConfig, stage_weights_per_gpu_bytes
from frontier_dag.errors import ConfigError

#: Memory per GPU kept for activations, CUDA graphs and NCCL buffers besides weights and KV
#: (aiconfigurator's "other_mem" allowance of 3.5 GB plus its 392 MB NCCL allowance).
RESERVED_BYTES_PER_GPU = 3.5 * 2**30 + 392 * 2**20


def kv_shards(model: ModelConfig, tp: int) -> int:
    """GPUs among which one token's KV is split: TP splits KV heads; MLA's latent KV is whole on each."""
    return 1 if model.mla is not None else min(tp, model.num_kv_heads)


def kv_capacity_tokens(model: ModelConfig, pool: PoolConfig, hardware: HardwareConfig, scheduler: SchedulerConfig,
                       where: str, weights: Mapping[str, int | None] | None = None, redundant: int = 0) -> int:
    """KV tokens one replica of ``pool`` holds: ``kv_capacity_tokens`` when given, otherwise
    what is left of each GPU's memory after weights (of the groups its ops read,
    ``EventGraph.weight_groups``; default its role's, with ``redundant`` EPLB expert replicas)
    and the reserve, summed over the
    replica's attention-DP ranks. With pipeline parallelism each stage's GPUs hold the KV
    of its own layers after its own weights, and the tightest stage sets the replica's
    capacity (a token needs a slot in every stage)."""
    if pool.kv_capacity_tokens is not None:
        return pool.kv_capacity_tokens
    usable = hardware.gpu.hbm_capacity_bytes * scheduler.gpu_memory_utilization
    stage_weights = stage_weights_per_gpu_bytes(model, pool, weights, redundant)
    if pool.pp == 1:
        per_token = [model.kv_bytes_per_token / kv_shards(model, pool.tp)]
    else:
        per_token = [model.kv_bytes_per_token_per_layer * sum(model.attention_window(i) is None for i in layers)
                     / kv_shards(model, pool.tp) for layers in pool.stage_ranges(model.num_layers)]
    tokens = []
    for k, (weights_k, per_token_k) in enumerate(zip(stage_weights, per_token, strict=True)):
        free = usable - weights_k - RESERVED_BYTES_PER_GPU
        if free <= per_token_k * 16:
            stage = f" (pipeline stage {k})" if pool.pp > 1 else ""
            raise ConfigError(
                f"{where}: no memory is left for the KV cache on a {hardware.name} GPU{stage} after {model.name}'s "
                f"weights ({weights_k / 2**30:.1f} GiB per GPU); raise tp/ep{'/pp' if pool.pp > 1 else ''}, or set "
                "kv_capacity_tokens")
        if per_token_k > 0:  # a stage of sliding-window layers only keeps a bounded window per sequence
            tokens.append(int(free // per_token_k))
    return min(tokens) * pool.attention_dp
