"""How each serving engine schedules, as scheduler settings of a run.

Only the engines' documented defaults appear here; the measured runs do not say
what their launch flags were, so a row is simulated with the defaults of its engine
on an 80-141 GB Hopper GPU:

* **vLLM** (v1 engine): running requests first, then waiting prompts, chunked prefill
  within a budget of ``max_num_batched_tokens`` = 8192 tokens per step, up to
  ``max_num_seqs`` = 1024 sequences (the OpenAI-server defaults on GPUs with at least
  70 GiB), ``gpu_memory_utilization`` = 0.9.
* **SGLang**: prefill first: whenever prompts wait and memory allows, the next batch is
  a prefill batch of up to ``chunked_prefill_size`` = 8192 tokens (its default on
  80-160 GB GPUs) and running decodes wait (mixed chunks are off by default);
  ``mem_fraction_static`` about 0.88. A request is admitted only when the KV of its prompt
  and of ``new_token_ratio`` of every running request's remaining output fits:
  ``reserve_output`` = 0.7 (``SGLANG_INIT_NEW_TOKEN_RATIO``), falling linearly over 600
  decode steps (``SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS``) to 0.7 x 0.14 = 0.098
  (``SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR``) while nothing is retracted, back to 0.7 when
  the server is idle, and after a retraction set to the running requests' (decoded tokens
  + 20 each) / output tokens. Its decode server in a disaggregated deployment takes a KV
  transfer only when the free KV covers the prompt plus ``SGLANG_NUM_RESERVED_DECODE_TOKENS``
  = 512 tokens for it and for each request it holds: ``decode_reserve_tokens`` = 512.
* **TensorRT-LLM** (PyTorch flow): in-flight batching mixes context and generation
  requests in one iteration within ``max_num_tokens`` = 8192 and ``max_batch_size`` =
  2048, and never splits a prompt (``enable_chunked_prefill`` is off by default); the KV
  cache takes ``free_gpu_memory_fraction`` = 0.9 of the memory left after the weights,
  about 0.9 of the GPU as well. Its default capacity scheduler
  (``GUARANTEED_NO_EVICT``) admits a request only when every running request can run to
  its last token (``scheduler.policy: trtllm``), for new prompts and, on the generation
  servers of a disaggregated deployment, for KV transfers alike. vLLM reserves nothing and
  preempts instead.

The measured rows were served from deployments that aiconfigurator's generator writes,
and it sets some of these limits from the configuration (its benchmark rules and engine
templates): TensorRT-LLM's ``max_num_tokens`` is the configuration's batch size + ISL + 1500
on aggregated workers and ISL + 1500 on prefill workers, and so is vLLM's
``max-num-batched-tokens`` (its 0.12.0 template alone leaves it at the default; other
versions, and rows that name none, get the general template, which sets it).
``token_budget`` applies that rule where the row gives the batch size. For SGLang the
generator sets ``--max-prefill-tokens`` = ISL + 1500: a prompt after the first joins a
prefill batch only whole and within it (``scheduler.max_prefill_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass

from frontier_dag.validation.silicon import SiliconRow


@dataclass(frozen=True, kw_only=True)
class Engine:
    """An engine's scheduler as the simulator models it: its policy (frontier_dag.sim.policies)
    and the settings of the config's ``scheduler`` section that the policy reads."""

    policy: str
    max_num_batched_tokens: int
    max_num_seqs: int
    chunked_prefill: bool
    gpu_memory_utilization: float
    reserve_output: float = 0.0  # KV kept free for running requests' outputs at admission
    reserve_output_min: float = 0.0  # ... decaying to this share
    reserve_output_decay_steps: int = 0  # ... over this many decode steps (0: constant)
    decode_reserve_tokens: int = 0  # PD decode servers: KV tokens kept free per request held


ENGINES = {
    "vllm": Engine(policy="vllm", max_num_batched_tokens=8192, max_num_seqs=1024, chunked_prefill=True,
                   gpu_memory_utilization=0.90),
    "sglang": Engine(policy="sglang", max_num_batched_tokens=8192, max_num_seqs=4096, chunked_prefill=True,
                     gpu_memory_utilization=0.88, reserve_output=0.7, reserve_output_min=0.7 * 0.14,
                     reserve_output_decay_steps=600, decode_reserve_tokens=512),
    # GUARANTEED_NO_EVICT reserves every running request's whole output (the policy's own rule)
    "trtllm": Engine(policy="trtllm", max_num_batched_tokens=8192, max_num_seqs=2048, chunked_prefill=False,
                     gpu_memory_utilization=0.90),
}


def engine_for(backend: str) -> Engine:
    return ENGINES[backend]


#: Tokens aiconfigurator's generator adds to the prompt length in a worker's token budget.
GENERATOR_TOKEN_SLACK = 1500
#: vLLM versions whose launch template in aiconfigurator's generator sets no token budget.
VLLM_TEMPLATES_WITHOUT_BUDGET = frozenset({"0.12.0"})


def token_budget(backend: str, version: str, mode: str, isl: int, batch_size: int | None) -> int:
    """Tokens per iteration of an aggregated or prefill worker as aiconfigurator's generator
    deploys ``backend`` (module docstring); the engine's default where the generator sets none.

    >>> token_budget("trtllm", "1.0.0rc3", "agg", 1024, 8), token_budget("trtllm", "1.2.0rc6", "disagg", 8192, 1)
    (2532, 9692)
    >>> token_budget("vllm", "0.12.0", "agg", 1024, 8), token_budget("vllm", "0.18.0", "agg", 1024, 8)
    (8192, 2532)
    """
    default = engine_for(backend).max_num_batched_tokens
    sets_budget = backend == "trtllm" or (backend == "vllm" and version not in VLLM_TEMPLATES_WITHOUT_BUDGET)
    if not sets_budget:
        return default
    if mode == "disagg":
        return isl + GENERATOR_TOKEN_SLACK
    return default if batch_size is None else batch_size + isl + GENERATOR_TOKEN_SLACK


def scheduler_settings(row: SiliconRow) -> dict:
    """The ``scheduler`` section of the run config that replays ``row``: its engine's defaults
    with the limits aiconfigurator's generator set for the row's deployment (module docstring)."""
    e = engine_for(row.backend)
    worker = row.agg or row.prefill
    return {"policy": e.policy, "max_num_seqs": e.max_num_seqs,
            "max_num_batched_tokens": token_budget(row.backend, row.backend_version, row.mode, row.isl,
                                                   worker.batch_size),
            "max_prefill_tokens": row.isl + GENERATOR_TOKEN_SLACK if row.backend == "sglang" else None,
            "chunked_prefill": e.chunked_prefill, "gpu_memory_utilization": e.gpu_memory_utilization,
            "prefix_caching": False, "reserve_output": e.reserve_output, "reserve_output_min": e.reserve_output_min,
            "reserve_output_decay_steps": e.reserve_output_decay_steps,
            "decode_reserve_tokens": e.decode_reserve_tokens}
