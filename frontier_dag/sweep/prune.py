"""Skipping points that cannot run, before simulating them: a config that does not
validate or resolve is ``invalid``; one whose weights do not fit a GPU, that leaves no
memory for the KV cache, or whose KV cache cannot hold the longest request of the
workload is ``pruned``, with the reason."""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from frontier_dag.config.run import (
    Origin,
    RunConfig,
    check_request_lengths,
    config_hardware,
    config_model,
    redundant_experts,
    resolve,
    run_config_from_dict,
    weights_per_gpu_bytes,
)
from frontier_dag.errors import FrontierDagError, FrontierDagWarning

#: The tokens of a request whose KV a pool of this role holds at once.
KV_HOLDS = {"colocated": "prompt+output", "prefill": "prompt", "decode": "prompt+output",
            "attention": "prompt+output"}


def point_config(config: dict[str, Any], base_dir: Path | None, source: str) -> tuple[RunConfig, Origin]:
    """A point's run config, and where it came from (the sweep file's folder anchors its paths)."""
    return run_config_from_dict(config, source=source), Origin(source, base_dir)


def check(config: dict[str, Any], base_dir: Path | None, source: str) -> tuple[str, str] | None:
    """``("invalid" | "pruned", reason)`` for a point that cannot run, else None. Warnings
    (requests beyond the model's context) are left to the point's run, whose summary keeps
    them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrontierDagWarning)
        return _check(config, base_dir, source)


def _check(config: dict[str, Any], base_dir: Path | None, source: str) -> tuple[str, str] | None:
    try:
        cfg, origin = point_config(config, base_dir, source)
        model = config_model(cfg, origin)
        hardware = config_hardware(origin, cfg.hardware, "hardware")
        for name, pool in cfg.cluster.pools.items():
            hw = config_hardware(origin, pool.hardware, f"cluster.pools.{name}.hardware") if pool.hardware else hardware
            need = weights_per_gpu_bytes(model, pool, redundant=redundant_experts(cfg.workflow))
            have = hw.gpu.hbm_capacity_bytes * cfg.scheduler.gpu_memory_utilization
            if need > have:
                return "pruned", (f"weights: pool {name} needs {need / 2**30:.1f} GiB of {model.name} weights per GPU "
                                  f"(tp={pool.tp}, ep={pool.ep}, {pool.gpus_per_replica} GPUs per replica) but a "
                                  f"{hw.name} GPU has {have / 2**30:.1f} GiB usable")
        deployment = resolve(cfg, origin)
    except FrontierDagError as exc:
        return "invalid", str(exc)
    from frontier_dag.sim.memory import kv_capacity_tokens

    try:
        prompt, total = longest_request(cfg, base_dir)
        check_request_lengths(cfg, deployment.model, prompt, total, "generated", origin)
    except FrontierDagError as exc:
        return "invalid", str(exc)
    for name, pool in cfg.cluster.pools.items():
        holds = KV_HOLDS.get(pool.role)
        if holds is None:
            continue
        try:
            capacity = kv_capacity_tokens(deployment.model, pool, deployment.pool_hardware[name], cfg.scheduler,
                                          f"cluster.pools.{name}", redundant=redundant_experts(cfg.workflow))
        except FrontierDagError as exc:
            return "pruned", f"kv: {exc}"
        need = prompt if holds == "prompt" else total
        if capacity < need:
            return "pruned", (f"kv: pool {name} holds {capacity:,} KV tokens per replica but the longest request "
                              f"needs {need:,} ({holds})")
    return None


def longest_request(cfg: RunConfig, base_dir: Path | None) -> tuple[int, int]:
    """The longest prompt and the longest prompt + output among the workload's requests."""
    workload = json.dumps(cfg.workload.model_dump(mode="json"), sort_keys=True)
    return _longest(workload, cfg.seed, str(base_dir) if base_dir else None)


@lru_cache(maxsize=256)
def _longest(workload_json: str, seed: int, base_dir: str | None) -> tuple[int, int]:
    from frontier_dag.config.workload import WorkloadConfig
    from frontier_dag.sim.workload import generate_requests

    workload = WorkloadConfig.model_validate(json.loads(workload_json))
    requests = generate_requests(workload, seed, Path(base_dir) if base_dir else None)
    if len(requests) == 0:
        return 0, 0
    return int(requests.prompt_tokens.max()), int((requests.prompt_tokens + requests.output_tokens).max())
