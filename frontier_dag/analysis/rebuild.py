"""One recorded iteration of a run, rebuilt as a DAG with its critical path.

The iteration log keeps a batch's statistics (sequences, prefill tokens, decoding
sequences, cached tokens), not its sequences. The rebuilt batch has those totals, and its
prefilling sequences are found in requests.parquet (``prefill_sequences``): a prompt
prefilled whole keeps its own length, chunks of longer prompts share the rest. The
decoding sequences share the cached tokens evenly and MoE routing is drawn afresh, so the
rebuilt DAG's time is close to, not exactly, the recorded one (both are reported).

The rebuild reads the run's own copy of its workflow file and model (``run_inputs``) and
prices with the run's predictor. A rebuilt iteration further than ``TOLERANCE`` from its
recorded time is a warning naming both: the DAG drawn is then not the one that was
simulated (another predictor or kernel tables than the run's, a workflow that draws
differently at run time, a damaged run).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from frontier_dag.analysis.iteration import IterationReport, analyze_iteration, make_router
from frontier_dag.analysis.run_data import RunData
from frontier_dag.config.run import Deployment
from frontier_dag.cost.batch import MicroBatchLoad, split_micro_batches
from frontier_dag.cost.protocol import CostModel
from frontier_dag.errors import FrontierDagWarning
from frontier_dag.ir.graph import EventGraph
from frontier_dag.streams import stream


@dataclass
class RebuiltIteration:
    row: int  # row of the sorted iteration table
    pool: str
    replica: int
    start_us: float
    recorded_us: float  # the iteration's recorded duration (with host overhead; pipelined: less its waits for busy stages)
    deployment: Deployment
    graph: EventGraph  # the stage's subgraph
    report: IterationReport
    overhead_us: float = 0.0  # the host overhead the recorded duration includes (``host_us``)

    @property
    def rebuilt_us(self) -> float:
        """The rebuilt DAG's time with the host overhead, as the recorded duration counts it."""
        return self.report.iteration_time_us + self.overhead_us

    @property
    def difference(self) -> float:
        """Rebuilt over recorded, less one (0.02: the rebuilt iteration is 2% longer)."""
        return self.rebuilt_us / self.recorded_us - 1.0 if self.recorded_us > 0 else 0.0

    def check(self) -> dict[str, Any]:
        """The comparison the reports carry: both times, the difference and, beyond
        ``TOLERANCE``, the warning."""
        off = abs(self.difference) > TOLERANCE
        return {"pool": self.pool, "replica": self.replica, "start_s": self.start_us / 1e6,
                "recorded_us": self.recorded_us, "rebuilt_us": self.rebuilt_us, "difference": self.difference,
                "warning": self.warning() if off else None}

    def warning(self) -> str:
        return (f"the rebuilt iteration of {self.pool}[{self.replica}] at {self.start_us / 1e6:,.3f} s takes "
                f"{self.rebuilt_us / 1e3:,.2f} ms where the run recorded {self.recorded_us / 1e3:,.2f} ms "
                f"({self.difference * 100:+.1f}%, beyond the {TOLERANCE * 100:g}% a rebuilt batch may differ): the DAG "
                "shown is not priced as the run was (a predictor or kernel tables that changed since, or a run "
                "simulated with another cost model)")


#: How far a rebuilt iteration's time may be from the recorded one before it is a warning.
#: On the examples (``python benchmarks/bench_rebuild.py``: 150 requests; each pool's
#: slowest, median and 25 random iterations) rebuilt iterations were within 0.5% of their
#: records for dense models (co-located, also with chunked 30k-token prompts; PD; AF),
#: 2.1% for EP-MoE (routing drawn afresh) and 5.9% for AF + EP-MoE DeepSeek-V3 (routing
#: drawn afresh for decode batches of a few tokens over 256 experts). 10% is above
#: all of those, and below what a changed DAG or changed prices give (another GPU's
#: roofline: -44% on a decode iteration of examples/pd_llama3_70b.yaml).
TOLERANCE = 0.10


def _spread(total: int, parts: int) -> np.ndarray:
    base = np.full(parts, total // parts, dtype=np.int64)
    base[: total % parts] += 1
    return base


def batch_of(row, serves: str, prefill: tuple[np.ndarray, np.ndarray] | None = None
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """``(q, ctx, kv_out_tokens)`` with the totals of an iteration row. ``prefill``: the new
    and cached tokens of each prefilling sequence (``prefill_sequences``), the decoding
    sequences then sharing the rest of the cached tokens; without it, or where it does not
    add up to the row's totals, the prefill tokens are split evenly over the prefilling
    sequences and the cached tokens over the decoding ones (over the prefilling ones when
    none decodes)."""
    seqs, decode = int(row["num_seqs"]), int(row["decode_seqs"])
    prefill_seqs = max(0, seqs - decode)
    prefill_tokens, ctx_tokens = int(row["prefill_tokens"]), int(row["ctx_tokens"])
    ones = np.ones(decode, dtype=np.int64)
    if prefill is not None and len(prefill[0]) == prefill_seqs and int(prefill[0].sum()) == prefill_tokens:
        pq, pctx = prefill
        rest = ctx_tokens - int(pctx.sum())
        if decode and rest >= 0:
            return np.concatenate([ones, pq]), np.concatenate([_spread(rest, decode), pctx]), _kv_out(prefill_tokens, serves)
        if not decode and rest == 0:
            return pq.copy(), pctx.copy(), _kv_out(prefill_tokens, serves)
    q = np.concatenate([ones, np.maximum(_spread(prefill_tokens, prefill_seqs), 1) if prefill_seqs
                        else np.zeros(0, np.int64)])
    holders = decode if decode else prefill_seqs
    ctx = np.zeros(len(q), dtype=np.int64)
    ctx[:holders] = _spread(ctx_tokens, holders) if holders else np.zeros(0, np.int64)
    return q, ctx, _kv_out(prefill_tokens, serves)


def _kv_out(prefill_tokens: int, serves: str) -> int:
    return prefill_tokens if serves == "prefill" else 0


#: Iterations of a replica looked back at for the chunks a prompt computed before.
MAX_LOOKBACK = 4096


def prefill_sequences(run: RunData, row: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The new and cached tokens of each sequence that iteration ``row`` prefilled, from
    requests.parquet: the prompts on its replica whose prefill spans the iteration. A prompt
    first scheduled at its start and done at its end was prefilled whole: its own length,
    its prefix-cached tokens as context. The others are chunks of longer prompts, found as
    the replica's iterations since the prompt was first scheduled are walked through in
    order: a chunk's context is its prompt's cached tokens and earlier chunks, the chunk
    that ends a prompt is what was left of it, and other chunks share the prefill tokens
    left evenly. None where the requests do not account for the batch's prefilling
    sequences (a preempted request prefilled again, a pool that does not receive requests)."""
    found = _prefilling(run, row)
    if found is None:
        return None
    before = _computed_before(run, row, found)
    q = _chunks(int(run.iterations["prefill_tokens"].iat[row]), found, before)
    return None if q is None else (q, found[2] + before)


def _prefilling(run: RunData, row: int):
    """Iteration ``row``'s prefilling prompts: request rows, prompt and cached tokens, and
    whether each was first scheduled at the iteration's start and done at its end."""
    it = run.iterations.iloc[row]
    rq = run.requests
    wanted = max(0, int(it["num_seqs"]) - int(it["decode_seqs"]))
    pool = str(it["pool"])
    if pool not in run.entries or not wanted or \
            not {"prefill_replica", "first_scheduled_s", "prefill_done_s", "cached_tokens"} <= set(rq.columns):
        return None
    start = float(it["start_s"])
    end = start + float(it["duration_us"]) * 1e-6
    tol = 1e-9 * max(1.0, abs(end))
    first, done = rq["first_scheduled_s"].to_numpy(), rq["prefill_done_s"].to_numpy()
    idx = np.flatnonzero((rq["prefill_replica"].to_numpy() == int(it["replica"])) & (run.entry_of() == pool)
                         & (first <= start + tol) & (done >= end - tol))
    if len(idx) != wanted:
        return None
    return (idx, rq["prompt_tokens"].to_numpy()[idx].astype(np.int64),
            rq["cached_tokens"].to_numpy()[idx].astype(np.int64),
            np.abs(first[idx] - start) <= tol, np.abs(done[idx] - end) <= tol)


def _chunks(prefill_tokens: int, found, before: np.ndarray) -> np.ndarray | None:
    """The new tokens of each prefilling prompt of an iteration (``found``), given what each
    computed ``before`` it."""
    _, prompt, cached, starts, ends = found
    whole = starts & ends
    chunk = np.flatnonzero(~whole)
    q = np.where(whole, prompt - cached, 0)
    left = prefill_tokens - int(q.sum())
    last, rest = chunk[ends[chunk]], chunk[~ends[chunk]]
    q[last] = np.maximum(prompt[last] - cached[last] - before[last], 1)
    if len(rest) and left - int(q[last].sum()) >= len(rest):
        q[rest] = _spread(left - int(q[last].sum()), len(rest))
    elif len(rest) or left != int(q[last].sum()):  # the last chunks do not fit the total: share it evenly
        if left < len(chunk):
            return None
        q[chunk] = _spread(left, len(chunk)) if len(chunk) else q[chunk]
    return q


def _computed_before(run: RunData, row: int, found) -> np.ndarray:
    """Prompt tokens each of ``found``'s prompts computed in its replica's iterations before
    ``row``: those iterations walked through in order from the first scheduling of every
    prompt they hold (at most ``MAX_LOOKBACK`` back)."""
    idx, _, _, starts, _ = found
    if starts.all():
        return np.zeros(len(idx), dtype=np.int64)
    lo = int(run.chain_lo[np.searchsorted(run.chain_lo, row, side="right") - 1])
    floor = max(lo, row - MAX_LOOKBACK)
    begins = run.iterations["start_s"].to_numpy()[lo:row]
    first = run.requests["first_scheduled_s"].to_numpy()
    earliest = float(first[idx[~starts]].min())
    window: dict[int, Any] = {}
    k = row
    while True:  # back to the first scheduling of every prompt the window holds
        back = max(floor, lo + int(np.searchsorted(begins, earliest - 1e-9 * max(1.0, abs(earliest)))))
        if back >= k:
            break
        for j in range(back, k):
            window[j] = _prefilling(run, j)
            if window[j] is not None:
                earliest = min(earliest, float(first[window[j][0]].min()))
        k = back
    done: dict[int, int] = {}
    prefill = run.iterations["prefill_tokens"].to_numpy()
    for j in sorted(window):
        if window[j] is None:
            continue
        held = window[j][0]
        q = _chunks(int(prefill[j]), window[j], np.array([done.get(r, 0) for r in held.tolist()], dtype=np.int64))
        if q is not None:
            for r, tokens in zip(held.tolist(), q.tolist(), strict=True):
                done[r] = done.get(r, 0) + tokens
    return np.array([done.get(r, 0) for r in idx.tolist()], dtype=np.int64)


def rebuild_iteration(run: RunData, row: int, cost_model: CostModel | None = None) -> RebuiltIteration:
    """Rebuild iteration ``row`` (of ``run.iterations``) with the run's config and cost model
    (or ``cost_model``). Priced by the run's own cost model, a rebuilt time beyond
    ``TOLERANCE`` of the recorded one is a FrontierDagWarning."""
    own = cost_model is None
    from frontier_dag.sim.assembly import assemble

    assembly = assemble(run.config, run.origin, cost_model=cost_model)
    deployment, graph, cost_model = assembly.deployment, assembly.graph, assembly.cost_model
    it = run.iterations.iloc[row]
    pool = run.pools[str(it["pool"])]
    sub = graph.subgraph(pool.stage)
    stage = sub.stages[pool.stage]
    q, ctx, kv_out = batch_of(it, stage.serves, prefill_sequences(run, row))
    if len(q) == 0:
        q, ctx = np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    loads = []
    for pq, pc in split_micro_batches(q, ctx, stage.micro_batches):
        share = int(kv_out * pq.sum() / max(q.sum(), 1)) if kv_out else 0
        loads.append(MicroBatchLoad(pq, pc, kv_out_tokens=share))
    router = make_router(sub, deployment, pool.stage, run.config.seed)
    if router is not None:
        rng = stream(run.config.seed, "rebuilt_routing", row)
        for load in loads:
            load.expert_loads = router.draw(int(load.q.sum()), rng)
    report = analyze_iteration(sub, deployment, cost_model, {pool.stage: loads})
    recorded = float(it["duration_us"])
    if deployment.pools[pool.name].pp > 1:  # a lane's iteration also waits for stages busy with other lanes' batches
        recorded -= float(it["waits_and_bubbles_us"])
    # with speculative decoding a recorded step is 1 / tokens_per_step of the iteration the DAG
    # prices (the simulator steps one emitted token at a time)
    rebuilt = RebuiltIteration(row, pool.name, int(it["replica"]), float(it["start_s"]) * 1e6,
                               recorded * stage.tokens_per_step, deployment, sub, report,
                               host_us(run, int(it["num_seqs"])))
    if own and abs(rebuilt.difference) > TOLERANCE:
        warnings.warn(rebuilt.warning(), FrontierDagWarning, stacklevel=2)
    return rebuilt


def host_us(run: RunData, sequences: int) -> float:
    """The host time a recorded iteration of ``sequences`` sequences includes: the scheduler's
    ``iteration_overhead_us`` and the engine's per-step overheads (``engine_overheads``)."""
    overhead = run.config.scheduler.iteration_overhead_us
    if run.overheads is None:
        return overhead
    return overhead + run.overheads.step_us + run.overheads.step_per_sequence_us * sequences


def check_rebuilt(run: RunData, cost_model: CostModel | None = None) -> list[dict[str, Any]]:
    """The slowest iteration of every pool (those the drawing and the trace rebuild) rebuilt
    and compared with its record (``RebuiltIteration.check``); a rebuild that fails is
    a warning too, not the end of the analysis."""
    from frontier_dag.errors import FrontierDagError

    out = []
    for pool, row in slowest_iterations(run).items():
        try:
            out.append(rebuild_iteration(run, row, cost_model).check())
        except FrontierDagError as exc:
            note = f"the slowest iteration of {pool} could not be rebuilt: {exc}"
            warnings.warn(note, FrontierDagWarning, stacklevel=2)
            out.append({"pool": pool, "warning": note})
    return out


def slowest_iterations(run: RunData) -> dict[str, int]:
    """Row of the slowest iteration of every pool."""
    it = run.iterations
    out = {}
    for name in run.pools:
        rows = np.flatnonzero(it["pool"].astype(str).to_numpy() == name)
        if len(rows):
            out[name] = int(rows[np.argmax(it["duration_us"].to_numpy()[rows])])
    return out
