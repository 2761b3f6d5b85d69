"""TensorRT-LLM's capacity scheduler, GUARANTEED_NO_EVICT (its default).

In-flight batching mixes context and generation requests in one iteration as vLLM does, but
a request is admitted only when every running request can run to its last token: the KV of
the whole remaining outputs stays reserved (``reserve_output`` = 1), for new prompts and, on
the generation servers of a disaggregated deployment, for KV transfers alike. Nothing is
ever preempted for lack of memory. Prompts are split only with ``chunked_prefill`` (off by
default in TensorRT-LLM, on by default in the config: set it).
"""

from __future__ import annotations

from dataclasses import replace

from frontier_dag.config.run import PoolConfig, SchedulerConfig
from frontier_dag.errors import ConfigError
from frontier_dag.sim.policies import register
from frontier_dag.sim.policies.base import Limits
from frontier_dag.sim.policies.vllm import VLLMPolicy

#: Scheduler keys of other engines' policies, and the value that leaves them unused.
NOT_USED = {"reserve_output_min": 0.0, "reserve_output_decay_steps": 0, "decode_reserve_tokens": 0,
            "max_prefill_tokens": None}


@register
class TensorRTLLMPolicy(VLLMPolicy):
    name = "trtllm"

    @classmethod
    def from_config(cls, scheduler: SchedulerConfig, pool: PoolConfig) -> TensorRTLLMPolicy:
        if scheduler.reserve_output not in (0.0, 1.0):
            raise ConfigError(f"scheduler.reserve_output={scheduler.reserve_output}: policy trtllm reserves every "
                              "running request's whole output (GUARANTEED_NO_EVICT); drop the key, or use policy "
                              "vllm or sglang for a partial reservation")
        for key, unused in NOT_USED.items():
            if getattr(scheduler, key) != unused:
                raise ConfigError(f"scheduler.{key} is not a setting of policy trtllm (TensorRT-LLM's "
                                  "GUARANTEED_NO_EVICT scheduler); drop it, or use policy sglang")
        limits = Limits.of(scheduler, pool)
        return cls(replace(limits, reserve_output=0.0 if pool.role == "prefill" else 1.0))
