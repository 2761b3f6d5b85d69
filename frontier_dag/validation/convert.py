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

#: Expert parallelism as the three engines run it without DeepEP, which none of the rows
#: names: tokens gathered on every GPU of the expert group, outputs summed by an all-reduce
#: (reduce-scatter with attention DP); see the ``colocated`` workflow's ``ep_comm``.
EP_COMM = "gather"


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
               overheads: EngineOverheads | None = None) -> Converted:
    """The RunConfig that replays ``row``; raises Unsupported with the reason when it cannot.
    ``ramp_s`` > 0: the clients' first requests at random times within it, the first round
    (one request per client) left out of the statistics (see ``runner.PHASES``).
    ``overheads``: the engine's time outside the kernels (``engine_overheads``; none: the
    kernels alone)."""
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
    data = {
        "model": model,
        "hardware": row.system,
        "cluster": {"pools": pools},
        "workflow": workflow,
        "workload": {"clients": row.concurrency, "prompt_tokens": {"kind": "fixed", "value": row.isl},
                     "output_tokens": {"kind": "fixed", "value": row.osl}, "num_requests": requests,
                     **({"ramp_s": ramp_s, "warmup_requests": row.concurrency} if ramp_s > 0 else {})},
        "scheduler": scheduler_settings(row),
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
