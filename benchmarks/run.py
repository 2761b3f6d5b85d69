"""Simulator speed and memory on the workloads of issue 4.

    python benchmarks/run.py [--only startup|colocated|deepseek|memory|examples|vidur|pricer] [--requests N] [--source SRC]

Each benchmark runs in a fresh process so that its peak memory (max RSS, which includes
the interpreter and numpy/pandas/numba) is its own. The cost model is built (or loaded
from the predictor cache) before the clock starts, and a 100-request run of the same
config then warms the process up (printed as ``warm-up``); the timed part is ``simulate()``: tracing, compiling, generating the
workload and every iteration.

startup    Whole processes of the CLI, as a user runs them: ``frontier-dag simulate
           examples/colocated_llama3_8b.yaml`` of 10 requests on a fitted system (target
           <= 0.4 CPU-s and <= 150 MB), ``frontier-dag --help`` and ``frontier-dag
           workflows`` (target < 0.3 s): CPU seconds (user + system) and peak memory, the
           median of 3 runs after one untimed run (which fits the predictors or builds the
           compiled kernels where this machine has none yet, and writes the modules' bytecode
           even where PYTHONDONTWRITEBYTECODE is set, as installing the package does).
colocated  Llama-2-7B on one A100 (aiconfigurator's a100_sxm kernel tables, used here for
           speed only), splitwise_conv lengths, Poisson arrivals, vLLM-style scheduling with
           chunked prefill 512 and 128 sequences, 10,000 requests: scheduler iterations per
           CPU-second (target >= 50,000) and peak memory (target < 300 MB).
deepseek   DeepSeek-V3, PD + EP-MoE on 1,024 H200s, 100,000 requests: wall time (target
           < 5 min on 2 cores) and peak memory (target < 4 GB).
memory     The colocated workload at 5,000 and 20,000 requests: memory beyond the result
           rows must not grow with the number of requests.
examples   (only with --only) The PD, AF, AF + EP-MoE and PD + EP-MoE examples of examples/ at 300
           requests each: CPU seconds and iterations (no target; to follow the general paths:
           deep dense models, ping-pong grids, EP routing).
vidur      (only with --only, and --vidur-script SCRIPT) Side by side with Microsoft's Vidur on
           its own workload, through the side-by-side script (``vidur_side_by_side.sh``, which
           builds Vidur's environment and replays Vidur's requests into frontier-dag): 2,000
           requests at 3/s and 10/s, 10,000 at 3/s (targets: Vidur's whole-process CPU over
           ours >= 5x, 5x and 10x; our peak <= 250 MB); ``--runs`` pairs each (default 1).
pricer     (only with --only) One call of the direct attention pricer the simulator makes on a
           memo miss (``FittedCostModel.ragged_pricer``), on the colocated workload's decode
           model (a100_sxm, vLLM; Llama-2-7B's heads), by batch shape: µs per call, and the
           compiled kernel's part (the median of 3 loops of 20,000 calls, ``time.process_time``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


EXAMPLES = ("pd_llama3_70b.yaml", "af_pingpong_llama3_70b.yaml", "af_ep_moe_deepseek_v3.yaml",
            "pd_ep_moe_deepseek_v3.yaml")


def run_one(config: str, requests: int, source: str | None) -> dict:
    """In this process: simulate and report CPU time, iterations and peak RSS."""
    from frontier_dag.sim.assembly import assemble
    from frontier_dag.sim.run import simulate

    overrides = [f"workload.num_requests={requests}"] + ([f"predictor.source={source}"] if source else [])
    warm_up = time.process_time()
    simulate(assemble(HERE / config, overrides=[*overrides, "workload.num_requests=100"]))
    warm_up = time.process_time() - warm_up
    assembly = assemble(HERE / config, overrides=overrides)
    cpu, wall = time.process_time(), time.perf_counter()
    result = simulate(assembly)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    s = result.summary
    rows = result.request_table.nbytes + result.iteration_table.nbytes
    return {"config": config, "requests": requests, "iterations": s["iterations"], "cpu_s": cpu, "wall_s": wall,
            "warm_up_cpu_s": warm_up,
            "iterations_per_cpu_s": s["iterations"] / cpu, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "result_rows_mb": rows / 2**20, "ttft_p50_ms": s["ttft_ms"]["p50"], "tpot_p50_ms": s["tpot_ms"]["p50"],
            "predictor_sources": s["predictor_sources"]}


def cli_process(*args: str, runs: int = 3) -> dict:
    """Median CPU seconds (user + system) and peak RSS of ``frontier-dag ARGS`` run as its own
    process, after one untimed run."""
    script = Path(sys.executable).with_name("frontier-dag")  # the installed command, as a user starts it
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "frontier_dag.cli.main"]
    command += args
    samples = []
    for i in range(runs + 1):
        # the untimed run writes the bytecode an installed package has (pip compiles it): with
        # PYTHONDONTWRITEBYTECODE set and none written, every run would compile the modules anew
        env = {k: v for k, v in os.environ.items() if i or k != "PYTHONDONTWRITEBYTECODE"}
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        if status != 0:
            raise SystemExit(f"frontier-dag {' '.join(args)} failed:\n{child.stderr.read().decode()[-3000:]}")
        child.stderr.close()
        if i:
            samples.append((usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024))
    return {"cpu_s": statistics.median(c for c, _ in samples), "peak_rss_mb": statistics.median(m for _, m in samples)}


def startup() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = cli_process("simulate", str(HERE.parent / "examples" / "colocated_llama3_8b.yaml"), "--out",
                          f"{tmp}/run", "--overwrite", "--no-progress", "--set", "workload.num_requests=10")
    print(f"start-up: simulate of 10 requests (colocated_llama3_8b) {run['cpu_s']:.2f} CPU-s, peak "
          f"{run['peak_rss_mb']:.0f} MB (target <= 0.4 CPU-s, <= 150 MB)")
    for args in (("--help",), ("workflows",)):
        r = cli_process(*args)
        print(f"start-up: frontier-dag {args[0]} {r['cpu_s']:.2f} CPU-s, peak {r['peak_rss_mb']:.0f} MB (target < 0.3 s)")


#: (requests, arrivals per second, target ratio of Vidur's CPU seconds to ours)
SIDE_BY_SIDE = ((2_000, 3, 5), (2_000, 10, 5), (10_000, 3, 10))


def side_by_side(script: Path, runs: int) -> None:
    """Run the side-by-side script on each workload and print its figures beside the targets."""
    frontier_dag = Path(sys.executable).with_name("frontier-dag")
    for requests, rate, target in SIDE_BY_SIDE:
        env = {**os.environ, "FD": str(frontier_dag), "N": str(requests), "RATE": str(rate), "RUNS": str(runs)}
        out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=False)
        last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        if out.returncode != 0 or "ratio=" not in last:
            raise SystemExit(f"{script} (N={requests}, RATE={rate}) failed:\n{(out.stderr or out.stdout)[-3000:]}")
        r = dict(field.split("=", 1) for field in last.split())
        print(f"side by side, {requests:,} requests at {rate}/s: Vidur {float(r['vidur_cpu_s']):.2f} CPU-s, frontier-dag "
              f"{float(r['fd_cpu_s']):.2f} CPU-s = {float(r['ratio']):.2f}x (target >= {target}x); iterations "
              f"{int(float(r['vidur_iters'])):,} / {int(float(r['fd_iters'])):,}; peak {float(r['vidur_rss_mb']):.0f} / "
              f"{float(r['fd_rss_mb']):.0f} MB (target <= 250)")


#: (rows, sequences per row) of the pricer benchmark: most memo misses price 1 to 8 rows
PRICER_SHAPES = ((0, 0), (1, 20), (1, 60), (4, 20), (16, 20))


def pricer() -> None:
    """µs per call of the direct attention pricer and of its compiled kernel, by batch shape."""
    import numpy as np

    from frontier_dag.config.hardware import load_hardware
    from frontier_dag.config.run import PredictorConfig
    from frontier_dag.predictors import features
    from frontier_dag.predictors.registry import fitted_cost_model

    model = fitted_cost_model(PredictorConfig(source="aiconfigurator", backend="vllm"), load_hardware("a100_sxm"))
    constants = {"num_heads": 32, "num_kv_heads": 32, "head_dim": 128, "dtype": "fp16", "kv_dtype": "fp16"}
    price = model.ragged_pricer("attention_decode", constants)
    compiled = model._compiled_family("attention_decode")
    featurizer = compiled.featurizer
    bound = (featurizer.attention_rows({c: [v] for c, v in constants.items()}, 1), featurizer.tables.consts,
             *compiled.model)
    kernel, calls = features.kernel.resolve("predict_rows"), 20_000

    def per_call(fn, args) -> float:
        times = []
        for _ in range(3):
            start = time.process_time()
            for _ in range(calls):
                fn(*args)
            times.append((time.process_time() - start) / calls * 1e6)
        return statistics.median(times)

    rng = np.random.default_rng(0)
    for rows, seqs in PRICER_SHAPES:
        ctx = rng.integers(1, 2_000, rows * seqs).astype(np.float64)
        new, lengths = np.ones(rows * seqs), np.full(rows, seqs, dtype=np.int64)
        whole = per_call(price, (new, ctx, lengths))
        inner = per_call(kernel, (featurizer.kind, rows, new, ctx, lengths, *bound))
        print(f"pricer: {rows} rows of {seqs} decoding sequences: {whole:.2f} µs a call, {inner:.2f} in the kernel")


def in_subprocess(config: str, requests: int, source: str | None) -> dict:
    args = [sys.executable, __file__, "--child", config, str(requests)] + ([source] if source else [])
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(run_one(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["startup", "colocated", "deepseek", "memory", "examples", "vidur",
                                                     "pricer"])
    parser.add_argument("--requests", type=int, help="override the number of requests")
    parser.add_argument("--source", help="predictor source (default: each config's)")
    parser.add_argument("--vidur-script", type=Path, help="with --only vidur: the side-by-side script (vidur_side_by_side.sh)")
    parser.add_argument("--runs", type=int, default=1, help="with --only vidur: timed pairs per workload (default 1)")
    args = parser.parse_args()
    if args.only == "vidur":
        if args.vidur_script is None or not args.vidur_script.is_file():
            parser.error("--only vidur needs --vidur-script SCRIPT, the side-by-side script vidur_side_by_side.sh")
        side_by_side(args.vidur_script, args.runs)
        return
    if args.only == "pricer":
        pricer()
        return
    todo = [args.only] if args.only else ["startup", "colocated", "memory", "deepseek"]
    if "startup" in todo:
        startup()
    if "colocated" in todo:
        r = in_subprocess("colocated_llama2_7b_a100.yaml", args.requests or 10_000, args.source)
        print(f"colocated Llama-2-7B/A100: {r['requests']:,} requests, {r['iterations']:,} iterations in "
              f"{r['cpu_s']:.1f} CPU-s = {r['iterations_per_cpu_s']:,.0f} iterations per CPU-second "
              f"(target >= 50,000; warm-up {r['warm_up_cpu_s']:.1f} CPU-s); peak memory {r['peak_rss_mb']:.0f} MB "
              f"(target < 300)")
    if "memory" in todo:
        small = in_subprocess("colocated_llama2_7b_a100.yaml", 5_000, args.source)
        large = in_subprocess("colocated_llama2_7b_a100.yaml", 20_000, args.source)
        growth = (large["peak_rss_mb"] - small["peak_rss_mb"]) - (large["result_rows_mb"] - small["result_rows_mb"])
        print(f"memory: 5,000 requests peak {small['peak_rss_mb']:.0f} MB, 20,000 requests peak "
              f"{large['peak_rss_mb']:.0f} MB; result rows grew {large['result_rows_mb'] - small['result_rows_mb']:.1f} MB; "
              f"growth beyond the rows {growth:.1f} MB")
    if "examples" in todo:
        for example in EXAMPLES:
            r = in_subprocess(f"../examples/{example}", args.requests or 300, args.source)
            print(f"{example}: {r['requests']:,} requests, {r['iterations']:,} iterations in {r['cpu_s']:.1f} CPU-s "
                  f"({r['iterations_per_cpu_s']:,.0f} per CPU-second; warm-up {r['warm_up_cpu_s']:.1f} CPU-s)")
    if "deepseek" in todo:
        r = in_subprocess("pd_ep_moe_deepseek_v3_1024.yaml", args.requests or 100_000, args.source)
        print(f"DeepSeek-V3 PD+EP on 1,024 GPUs: {r['requests']:,} requests, {r['iterations']:,} iterations in "
              f"{r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} CPU-s (target < 300 s); peak memory {r['peak_rss_mb'] / 1024:.2f} GB (target < 4)")


if __name__ == "__main__":
    main()
