"""A silicon row as a RunConfig: the row's model and precision, its system's kernel
tables for its engine, its workers as pools, and a closed-loop client at its
concurrency with fixed prompt and output lengths."""

from __future__ import annotations

from dataclasses import dataclass

from frontier_dag.config.overheads import EngineOverheads
from frontier_dag.config.run import Deployment, Origin, RunConfig, resolve, run_config_from_dict
from frontier_dag.errors import FrontierDagError
from frontier_dag.predictors.aiconfigurator import BACKENDS
from frontier_dag.validation.engines import scheduler_settings
from frontier_dag.validation.models import Unsupported, row_model
from frontier_dag.validation.silicon import SiliconRow, Worker

#: Rounds of the concurrency the client sends: ``rounds x concurrency`` requests, at
#: least ``MIN_REQUESTS``, from a cold start (all clients at once).
ROUNDS = 4
MIN_REQUESTS = 8
#: Rounds the measured benchmark sends: aiconfigurator's benchmark script runs ``aiperf
#: --concurrency C --num-requests 50C --warmup-request-count 2C``, and aiperf waits for the
#: warm-up responses before it starts the measured phase, so that phase is a burst of C
#: followed by 49 more rounds. The simulated rounds after the first stand for the rest
#: (``runner.benchmark_means``).
BENCHMARK_ROUNDS = 50
#: The benchmark's warm-up, in rounds of the concurrency (``--warmup-request-count 2C``).
WARMUP_ROUNDS = 2
#: Distinct prompts the benchmark sends: aiperf generates ``--num-dataset-entries`` synthetic
#: prompts, 100 by default, which the script does not set, and reuses them until the run ends;
#: the generator's benchmark rules leave each engine's prefix cache on
#: (``disable_prefix_cache = false``), so a prompt sent again can hit it.
DATASET_PROMPTS = 100

#: Expert parallelism as the three engines run it without DeepEP, which none of the rows
#: names: tokens gathered on every GPU of the expert group, outputs summed by an all-reduce
#: (reduce-scatter with attention DP); see the ``colocated`` workflow's ``ep_comm``.
EP_COMM = "gather"


def dataset_first_pass(concurrency: int, dataset: int) -> int:
    """Measured requests (after the warm-up) that send a prompt for the first time, the
    first round at least (the measured phase's cold burst)."""
    return max(concurrency, dataset - WARMUP_ROUNDS * concurrency)


def dataset_requests(concurrency: int, rounds: int, dataset: int) -> int:
    """Measured requests to simulate: the dataset's first pass, then ``rounds - 1`` rounds (at
    least two), the last of which drains (``runner.benchmark_means``)."""
    return dataset_first_pass(concurrency, dataset) + max(rounds - 1, 2) * concurrency


@dataclass(frozen=True)
class Converted:
    deployment: Deployment  # the row's RunConfig, resolved
    notes: tuple[str, ...]

    @property
    def config(self) -> RunConfig:
        return self.deployment.config


def _pool(role: str, w: Worker, replicas: int) -> dict:
    return {"role": role, "gpus": w.gpus * replicas, "replicas": replicas, "tp": w.tp, "dp": w.dp, "ep": w.moe_ep,
            "pp": w.pp}


def row_config(row: SiliconRow, rounds: int = ROUNDS, seed: int = 0, ramp_s: float = 0.0,
               overheads: EngineOverheads | None = None, dataset: int | None = None) -> Converted:
    """The RunConfig that replays ``row``; raises Unsupported with the reason when it cannot.
    ``ramp_s`` > 0: the clients' first requests at random times within it, the first round
    (one request per client) left out of the statistics (see ``runner.PHASES``).
    ``overheads``: the engine's time outside the kernels (``engine_overheads``; none: the
    kernels alone). ``dataset``: the clients send prompts from a dataset of this many, reused,
    with the engine's prefix cache on, after the benchmark's warm-up of ``WARMUP_ROUNDS``
    rounds (left out of the statistics); ``rounds`` then counts the measured rounds after the
    dataset's first pass (``dataset_requests``)."""
    if row.backend not in BACKENDS:
        raise Unsupported(f"backend {row.backend!r} has no kernel tables (only {', '.join(BACKENDS)})")
    if row.concurrency is None or row.concurrency < 1:
        raise Unsupported("the row gives no silicon_concurrency (its batch-size columns are aiconfigurator's "
                          "estimate, not the benchmark's client count)")
    model, notes = row_model(row.model_path, row.system, row.backend, row.gemm_quant, row.moe_quant)
    if row.mode == "agg":
        pools = {"worker": _pool("colocated", row.agg, 1)}
        workflow = {"name": "colocated", "params": {"ep_comm": EP_COMM, "all_reduce": "auto"}}
    elif row.mode == "disagg":
        pools = {"prefill": _pool("prefill", row.prefill, row.prefill.workers),
                 "decode": _pool("decode", row.decode, row.decode.workers)}
        workflow = {"name": "pd", "params": {"kv_transfer": "per_request", "ep_comm": EP_COMM, "all_reduce": "auto"}}
    else:
        raise Unsupported(f"mode {row.mode!r} is neither agg nor disagg")
    requests = max(row.concurrency * rounds, MIN_REQUESTS)
    scheduler = scheduler_settings(row)
    workload = {"clients": row.concurrency, "prompt_tokens": {"kind": "fixed", "value": row.isl},
                "output_tokens": {"kind": "fixed", "value": row.osl}, "num_requests": requests,
                **({"ramp_s": ramp_s, "warmup_requests": row.concurrency} if ramp_s > 0 else {})}
    if dataset is not None:
        warmup = WARMUP_ROUNDS * row.concurrency
        workload |= {"prompt_pool": {"size": dataset}, "warmup_requests": warmup,
                     "num_requests": warmup + dataset_requests(row.concurrency, rounds, dataset)}
        scheduler["prefix_caching"] = True
    data = {
        "model": model,
        "hardware": row.system,
        "cluster": {"pools": pools},
        "workflow": workflow,
        "workload": workload,
        "scheduler": scheduler,
        "predictor": {"source": "aiconfigurator", "backend": row.backend},
        "seed": seed,
    }
    if overheads is not None:
        data["engine_overheads"] = overheads.model_dump()
    source = f"silicon row {row.index} ({row.id})"
    try:
        deployment = resolve(run_config_from_dict(data, source=source), Origin(source))
    except FrontierDagError as exc:
        raise Unsupported(str(exc)) from None
    return Converted(deployment, tuple(row.notes) + tuple(notes))
