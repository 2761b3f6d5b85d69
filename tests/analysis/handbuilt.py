"""Run directories written by hand: a config, requests and iterations whose critical paths
are known exactly (times in microseconds here, seconds on disk as the simulator writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from frontier_dag.cost.queries import CATEGORIES
from frontier_dag.sim.iteration_log import Cause, Node
from tests.conftest import TINY_DENSE, make_config

NAN = float("nan")


def request(arrival, first_scheduled, first_token, finish, iterations, prompt=64, output=2, prefill_replica=0,
            decode_replica=-1, transfer_start=NAN, transfer_end=NAN, decode_admitted=NAN, decode_admitted_iteration=-1,
            transfer_waited_for=(Node.NONE, -1)) -> dict[str, Any]:
    """One request row; times in µs; ``iterations``: the rows of the iterations that first
    scheduled it, emitted its first token and its last."""
    return {"arrival": arrival, "first_scheduled": first_scheduled, "first_token": first_token, "finish": finish,
            "iterations": iterations, "prompt": prompt, "output": output, "prefill_replica": prefill_replica,
            "decode_replica": decode_replica, "transfer_start": transfer_start, "transfer_end": transfer_end,
            "decode_admitted": decode_admitted, "decode_admitted_iteration": decode_admitted_iteration,
            "transfer_waited_for": transfer_waited_for}


def iteration(pool, replica, start, cause="continue", cause_request=-1, seqs=1, prefill_tokens=0, decode_seqs=0,
              **categories) -> dict[str, Any]:
    """One iteration row; ``categories`` are µs per category (their sum is the duration). It
    waited for its replica's previous row, or for the arrival or KV transfer of its cause."""
    unknown = set(categories) - set(CATEGORIES)
    assert not unknown, unknown
    return {"pool": pool, "replica": replica, "start": start, "cause": Cause[cause.upper()],
            "cause_request": cause_request, "seqs": seqs, "prefill_tokens": prefill_tokens, "decode_seqs": decode_seqs,
            "categories": categories}


def _waited_for(iterations: list[dict]) -> list[tuple[int, int]]:
    last: dict[tuple[str, int], int] = {}
    out = []
    for row, it in enumerate(iterations):
        if it["cause"] == Cause.ARRIVAL:
            out.append((Node.ARRIVAL, it["cause_request"]))
        elif it["cause"] in (Cause.KV_ARRIVED, Cause.MEMORY_FREED):
            out.append((Node.TRANSFER, it["cause_request"]))
        else:
            out.append((Node.ITERATION, last[it["pool"], it["replica"]]))
        last[it["pool"], it["replica"]] = row
    return out


def write_run(out: Path, config, requests: list[dict], iterations: list[dict], **summary) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config.to_yaml())
    s = lambda key: np.array([r[key] for r in requests], dtype=float) * 1e-6  # noqa: E731
    arrival, fs, ft, fin = s("arrival"), s("first_scheduled"), s("first_token"), s("finish")
    ts, te, da = s("transfer_start"), s("transfer_end"), s("decode_admitted")
    out_tokens = np.array([r["output"] for r in requests])
    tpot = (fin - ft) / np.maximum(out_tokens - 1, 1)
    frame = pd.DataFrame({
        "request_id": np.arange(len(requests)), "arrival_s": arrival,
        "prompt_tokens": [r["prompt"] for r in requests], "output_tokens": out_tokens,
        "first_scheduled_s": fs, "first_token_s": ft, "prefill_done_s": ft, "transfer_start_s": ts,
        "transfer_end_s": te, "decode_admitted_s": da, "finish_s": fin, "queue_s": fs - arrival,
        "transfer_wait_s": ts - ft, "transfer_s": te - ts, "decode_wait_s": da - te,
        "ttft_ms": (ft - arrival) * 1e3, "tpot_ms": np.where(out_tokens > 1, tpot * 1e3, np.nan),
        "e2e_ms": (fin - arrival) * 1e3, "cached_tokens": 0, "preemptions": 0,
        "prefill_replica": np.array([r["prefill_replica"] for r in requests], dtype=np.int32),
        "decode_replica": np.array([r["decode_replica"] for r in requests], dtype=np.int32),
        "first_scheduled_iteration": [r["iterations"][0] for r in requests],
        "first_token_iteration": [r["iterations"][1] for r in requests],
        "handoff_iteration": [r["iterations"][1] if r["decode_replica"] >= 0 else -1 for r in requests],
        "decode_admitted_iteration": [r["decode_admitted_iteration"] for r in requests],
        "finish_iteration": [r["iterations"][2] for r in requests],
        "transfer_waited_for_kind": np.array([r["transfer_waited_for"][0] for r in requests], dtype=np.int16),
        "transfer_waited_for": [r["transfer_waited_for"][1] for r in requests],
        "follows_request": -1,
    })
    frame.to_parquet(out / "requests.parquet", index=False)
    pools = list(dict.fromkeys(i["pool"] for i in iterations))
    rows = []
    for it, (kind, after) in zip(iterations, _waited_for(iterations), strict=True):
        cats = it["categories"]
        row = {"pool": it["pool"], "replica": it["replica"], "start_s": it["start"] * 1e-6,
               "duration_us": float(sum(cats.values())), "num_seqs": it["seqs"], "prefill_tokens": it["prefill_tokens"],
               "decode_seqs": it["decode_seqs"], "ctx_tokens": 0, "kv_usage": 0.1, "cause": int(it["cause"]),
               "cause_request": it["cause_request"], "waited_for_kind": int(kind), "waited_for": after}
        row.update({f"{c}_us": float(cats.get(c, 0.0)) for c in CATEGORIES})
        rows.append(row)
    table = pd.DataFrame(rows)
    table["pool"] = pd.Categorical(table["pool"], categories=pools)
    for col, dtype in (("replica", np.int32), ("num_seqs", np.int32), ("prefill_tokens", np.int32),
                       ("decode_seqs", np.int32), ("cause", np.int16), ("cause_request", np.int64),
                       ("waited_for_kind", np.int16), ("waited_for", np.int64)):
        table[col] = table[col].astype(dtype)
    table.to_parquet(out / "iterations.parquet", index=False)
    busy = {p: 0.5 for p in pools}
    base = {"num_requests": len(requests), "iterations": len(iterations), "utilization": busy,
            "kv_peak_usage": dict.fromkeys(pools, 0.1), "output_tokens_per_s": 1000.0}
    base.update(summary)
    (out / "summary.json").write_text(json.dumps(base))
    return out


def colocated_run(tmp_path: Path) -> Path:
    """Two replicas. Replica 0: r0 arrives at 0 and prefills in it0 (1000 µs); r1 arrives at
    500, queues behind it0, prefills in it1 (with r0's first decode step), decodes in it2 and
    it3 and finishes last at 2100. Replica 1 serves r2 alone (200 µs of in-iteration
    transfers, finishing at 300): off every critical path and out of the tail."""
    config = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 2, "replicas": 2}}, "colocated")
    requests = [
        request(0, 0, 1000, 1900, (0, 0, 2), output=3),
        request(500, 1000, 1500, 2100, (1, 1, 3), output=3),
        request(100, 100, 300, 300, (4, 4, 4), output=1, prefill_replica=1),
    ]
    iterations = [
        iteration("main", 0, 0, "arrival", 0, prefill_tokens=64, dense_gemm=600, attention=400),
        iteration("main", 0, 1000, seqs=2, prefill_tokens=64, decode_seqs=1, dense_gemm=300, attention=100,
                  collectives=100),
        iteration("main", 0, 1500, seqs=2, decode_seqs=2, dense_gemm=400),
        iteration("main", 0, 1900, decode_seqs=1, elementwise=200),
        iteration("main", 1, 100, "arrival", 2, prefill_tokens=64, transfers=200),
    ]
    return write_run(tmp_path / "colocated", config, requests, iterations)


def pd_backpressure_run(tmp_path: Path) -> Path:
    """PD. r0: prefill P0 [0, 1000], KV transfer [1000, 1200], decode D0, D1 to 2200. r1 arrives
    at 200, queues behind P0, prefills in P1 [1000, 1800], then waits for decode KV blocks
    (backpressure) until D1 frees r0's at 2200, transfers [2200, 2500] and decodes in D2 (600
    µs of collectives) to 3100."""
    config = make_config(TINY_DENSE, {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}},
                         "pd")
    requests = [
        request(0, 0, 1000, 2200, (0, 0, 3), output=3, transfer_start=1000, transfer_end=1200, decode_admitted=1200,
                decode_admitted_iteration=2, decode_replica=0),
        request(200, 1000, 1800, 3100, (1, 1, 4), output=2, transfer_start=2200, transfer_end=2500,
                decode_admitted=2500, decode_admitted_iteration=4, decode_replica=0,
                transfer_waited_for=(Node.ITERATION, 3)),  # D1 freed the blocks
    ]
    iterations = [
        iteration("prefill", 0, 0, "arrival", 0, prefill_tokens=64, dense_gemm=1000),
        iteration("prefill", 0, 1000, prefill_tokens=64, dense_gemm=800),
        iteration("decode", 0, 1200, "kv_arrived", 0, decode_seqs=1, dense_gemm=500),
        iteration("decode", 0, 1700, decode_seqs=1, attention=500),
        iteration("decode", 0, 2500, "kv_arrived", 1, decode_seqs=1, collectives=600),
    ]
    return write_run(tmp_path / "pd", config, requests, iterations)


def af_run(tmp_path: Path) -> Path:
    """AF ping-pong (attention and FFN pools stepping together, logged under the attention
    pool): r0 prefills in one iteration of 2000 µs (including 200 µs of pipeline bubble) and
    decodes its second token in 500 µs."""
    config = make_config(TINY_DENSE, {"attention": {"role": "attention", "gpus": 1}, "ffn": {"role": "ffn", "gpus": 1}},
                         "af_pingpong", {"micro_batches": 2})
    requests = [request(0, 0, 2000, 2500, (0, 0, 1), output=2)]
    iterations = [
        iteration("attention", 0, 0, "arrival", 0, prefill_tokens=64, attention=500, dense_gemm=1000, transfers=300,
                  waits_and_bubbles=200),
        iteration("attention", 0, 2000, decode_seqs=1, dense_gemm=300, transfers=200),
    ]
    return write_run(tmp_path / "af", config, requests, iterations)


def pd_decode_bound_run(tmp_path: Path) -> Path:
    """PD whose slowest iteration is a prefill (P0, 1000 µs) but whose critical path is mostly
    decode: r0 prefills in P0, transfers [1000, 1100] and decodes five steps of 300, 400, 500,
    400 and 350 µs (median 400) to 3050."""
    config = make_config(TINY_DENSE, {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}},
                         "pd")
    requests = [request(0, 0, 1000, 3050, (0, 0, 5), output=6, transfer_start=1000, transfer_end=1100,
                        decode_admitted=1100, decode_admitted_iteration=1, decode_replica=0)]
    iterations = [iteration("prefill", 0, 0, "arrival", 0, prefill_tokens=64, dense_gemm=1000)]
    start = 1100
    for k, duration in enumerate((300, 400, 500, 400, 350)):
        iteration_row = iteration("decode", 0, start, "kv_arrived" if k == 0 else "continue", 0 if k == 0 else -1,
                                  decode_seqs=1, dense_gemm=duration)
        iterations.append(iteration_row)
        start += duration
    return write_run(tmp_path / "pd_decode_bound", config, requests, iterations)
