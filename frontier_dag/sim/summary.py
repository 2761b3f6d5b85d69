"""The run summary: latency percentiles, throughput, goodput, utilisation, waits; over the
whole run and, under ``steady``, over the steady window (``frontier_dag.sim.steady``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from frontier_dag.config.run import Deployment
from frontier_dag.sim.columns import Columns
from frontier_dag.sim.steady import TokenTimes, find_window, nanmin, percentiles, steady_figures


def summarize(deployment: Deployment, requests: Columns, controller, wall_time_s: float) -> dict[str, Any]:
    """The summary of a finished run; ``requests``: requests.parquet's columns."""
    cfg = deployment.config
    warmup = cfg.workload.warmup_requests
    finish = requests["finish_s"]
    done = np.flatnonzero(np.isfinite(finish[warmup:])) + warmup  # the measured requests that finished
    start = nanmin(requests["arrival_s"][warmup:])
    end = float(finish[done].max()) if len(done) else 0.0
    window = max(end - start, 1e-12)
    out_tokens = float(requests["output_tokens"][done].sum())
    all_tokens = out_tokens + float(requests["prompt_tokens"][done].sum())
    ttft, tpot, e2e = (requests[c][done] for c in ("ttft_ms", "tpot_ms", "e2e_ms"))
    good = int(np.count_nonzero((ttft <= cfg.slo.ttft_ms) & ((tpot <= cfg.slo.tpot_ms) | np.isnan(tpot))))
    simulated = float(np.nanmax(finish)) if np.isfinite(finish).any() else 0.0
    utilization, stall, transfer_wait, kv_peak, iterations = {}, {}, {}, {}, 0
    for name, worker in controller.workers.items():
        busy = sum(r.busy_s for r in worker.replicas)
        utilization[name] = float(busy / (len(worker.replicas) * simulated)) if simulated > 0 else 0.0
        if name in controller.pipelines:  # a lane's iterations overlap its siblings': count the stages' work
            utilization[name] = float(np.mean(pipeline_busy(controller.pipelines[name], simulated)))
        stall[name] = float(sum(r.stall_s for r in worker.replicas))
        kv_peak[name] = max(r.kv.peak / max(r.kv.capacity, 1) for r in worker.replicas)
        iterations += sum(r.iterations for r in worker.replicas)
        transfer_wait[name] = 0.0
    waits = requests["transfer_wait_s"]
    waits = np.where(np.isnan(waits), 0.0, waits)
    for worker in controller.entries:
        if worker.replicas[0].serves == "prefill":  # it hands its prefills' KV off, and waits for decode blocks
            transfer_wait[worker.name] = float(waits.sum())
    gpus = deployment.total_gpus
    # replicas of a pool share one predictor; the transfer stage has its own
    usage = {key: u for name, w in controller.workers.items() for key, u in w.replicas[0].predictor.usages(name).items()}
    if controller.transfer is not None:
        usage[controller.transfer.stage] = controller.transfer.coster.usage
    tokens = TokenTimes.of(controller.log.to_columns(), requests)
    steady = steady_figures(requests, tokens, find_window(requests, tokens, cfg.workload), gpus=gpus,
                            slo_ttft_ms=cfg.slo.ttft_ms, slo_tpot_ms=cfg.slo.tpot_ms,
                            warmup_requests=cfg.workload.warmup_requests)
    out = {
        "num_requests": len(requests),
        "num_completed": int(np.isfinite(finish).sum()),
        "num_measured": int(len(done)),
        "simulated_time_s": simulated,
        "wall_time_s": float(wall_time_s),
        "iterations": int(iterations),
        "throughput_tokens_per_s": all_tokens / window,
        "output_tokens_per_s": out_tokens / window,
        "output_tokens_per_s_per_gpu": out_tokens / window / gpus,
        "requests_per_s": len(done) / window,
        "ttft_ms": percentiles(ttft),
        "tpot_ms": percentiles(tpot),
        "e2e_ms": percentiles(e2e),
        "goodput_requests_per_s": good / window,
        "slo": {"ttft_ms": cfg.slo.ttft_ms, "tpot_ms": cfg.slo.tpot_ms, "attained": good / max(len(done), 1)},
        "steady": steady,
        "utilization": utilization,
        "kv_peak_usage": kv_peak,
        "kv_transfer_wait_s": transfer_wait,
        "backpressure_stall_s": stall,
        "preemptions": int(requests["preemptions"].sum()),
        "prefix_cached_tokens": int(requests["cached_tokens"].sum()),
        "predictor_out_of_range": int(sum(u.out_of_range for u in usage.values())),
        "predictor_sources": _merge_sources(usage.values()),
        "predictor_prices_by": {name: dict(sorted(u.by_family().items())) for name, u in usage.items()},
        "predictor_out_of_range_by": {name: {f: int(n) for f, n in sorted(u.out_of_range_by.items()) if n}
                                      for name, u in usage.items()},
        "gpus": gpus,
        "pools": fleet(deployment),
        **({"pipeline": {name: pipeline_figures(p, simulated) for name, p in controller.pipelines.items()}}
           if controller.pipelines else {}),
        "cost": cost(deployment, out_tokens / window),
        "seed": cfg.seed,
    }
    if len(controller.entries) > 1:  # which pools requests entered, and by which rule
        router = controller.router
        out["entry"] = {"rule": router.entry.describe(), "requests": router.counts()}
    return out


def pipeline_busy(pipelines, simulated_s: float) -> list[float]:
    """The busy share of each pipeline stage, averaged over a pool's replicas."""
    if simulated_s <= 0:
        return [0.0] * len(pipelines[0].busy_s)
    return [float(np.mean([p.busy_s[k] for p in pipelines]) / simulated_s) for k in range(len(pipelines[0].busy_s))]


def pipeline_figures(pipelines, simulated_s: float) -> dict[str, Any]:
    """A pipelined pool's stages: each one's busy share, the slowest (busiest) stage, and
    each stage's bubbles: the share of the run it idles while the slowest stage works."""
    busy = pipeline_busy(pipelines, simulated_s)
    slowest = int(np.argmax(busy))
    return {"stage_busy": busy, "slowest_stage": slowest, "bubbles": [busy[slowest] - b for b in busy]}


def fleet(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """Each pool's role, GPU and GPU count."""
    return {name: {"role": pool.role, "gpu": deployment.pool_hardware[name].name, "gpus": pool.gpus}
            for name, pool in deployment.pools.items()}


def cost(deployment: Deployment, output_tokens_per_s: float) -> dict[str, Any] | None:
    """The deployment's price per hour and output tokens per unit of currency, from
    ``gpu_hour_prices``; None unless every pool's GPU has a price (none is assumed)."""
    prices = deployment.config.gpu_hour_prices
    gpus_by_type: dict[str, int] = {}
    for name, pool in deployment.pools.items():
        gpu = deployment.pool_hardware[name].name
        gpus_by_type[gpu] = gpus_by_type.get(gpu, 0) + pool.gpus
    if not prices or any(gpu not in prices for gpu in gpus_by_type):
        return None
    per_hour = sum(prices[gpu] * n for gpu, n in gpus_by_type.items())
    return {"per_hour": per_hour, "output_tokens_per_unit": output_tokens_per_s * 3600 / per_hour,
            "gpu_hour_prices": {gpu: prices[gpu] for gpu in gpus_by_type}}


def _merge_sources(usages) -> dict[str, int]:
    """Prices used per source (memo hits included), over every stage."""
    merged: dict[str, float] = {}
    for u in usages:
        for k, v in u.by_source().items():
            merged[k] = merged.get(k, 0.0) + v
    return {k: int(round(v)) for k, v in sorted(merged.items(), key=lambda kv: -kv[1])}
