"""vLLM's scheduler (v1 engine): running sequences first, then waiting prompts FCFS.

Every decoding sequence takes one token and every prompt in prefill its next chunk;
waiting requests are admitted while seats, ``max_num_batched_tokens`` and KV blocks for
their first chunk last, so prefill and decode share iterations (chunked prefill). When the
running sequences' KV does not fit, the newest is preempted and recomputed later. This is
``SchedulingPolicy`` as it stands; ``reserve_output`` (and its decay), ``max_prefill_tokens``
and ``decode_reserve_tokens`` apply on top when a config sets them.
"""

from __future__ import annotations

from frontier_dag.sim.policies import register
from frontier_dag.sim.policies.base import SchedulingPolicy


@register
class VLLMPolicy(SchedulingPolicy):
    name = "vllm"
