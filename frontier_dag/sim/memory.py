"""How many KV-cache tokens a replica holds."""

from __future__ import annotations

from collections.abc import Mapping

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.model import ModelConfig
from frontier_dag.config.run import PoolConfig, SchedulerConfig, weights_per_gpu_bytes
from frontier_dag.errors import ConfigError

#: Memory per GPU kept for activations, CUDA graphs and NCCL buffers besides weights and KV
#: (aiconfigurator's "other_mem" allowance of 3.5 GB plus its 392 MB NCCL allowance).
RESERVED_BYTES_PER_GPU = 3.5 * 2**30 + 392 * 2**20


def kv_shards(model: ModelConfig, tp: int) -> int:
    """GPUs among which one token's KV is split: TP splits KV heads; MLA's latent KV is whole on each."""
    return 1 if model.mla is not None else min(tp, model.num_kv_heads)


def kv_capacity_tokens(model: ModelConfig, pool: PoolConfig, hardware: HardwareConfig, scheduler: SchedulerConfig,
                       where: str, weights: Mapping[str, int | None] | None = None) -> int:
    """KV tokens one replica of ``pool`` holds: ``kv_capacity_tokens`` when given, otherwise
    what is left of each GPU's memory after weights (of the groups its ops read,
    ``EventGraph.weight_groups``; default its role's) and the reserve, summed over the
    replica's attention-DP ranks."""
    if pool.kv_capacity_tokens is not None:
        return pool.kv_capacity_tokens
    usable = hardware.gpu.hbm_capacity_bytes * scheduler.gpu_memory_utilization
    free = usable - weights_per_gpu_bytes(model, pool, weights) - RESERVED_BYTES_PER_GPU
    per_token = model.kv_bytes_per_token / kv_shards(model, pool.tp)
    if free <= per_token * 16:
        raise ConfigError(
            f"{where}: no memory is left for the KV cache on a {hardware.name} GPU after {model.name}'s weights "
            f"({weights_per_gpu_bytes(model, pool, weights) / 2**30:.1f} GiB per GPU); raise tp/ep, or set kv_capacity_tokens")
    return int(free // per_token) * pool.attention_dp
