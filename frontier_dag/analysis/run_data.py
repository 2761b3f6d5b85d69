"""A finished run read back from its directory: the resolved config, the summary, the
request and iteration tables, and what each pool does.

Iterations are sorted into *chains*, one per replica (pool, replica index): a replica's
iterations never overlap, so a chain is a sequence in time. ``chain_lo[c]:chain_hi[c]``
are the rows of chain ``c`` in the sorted iteration table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from frontier_dag.config.overheads import EngineOverheads
from frontier_dag.config.run import Origin, RunConfig
from frontier_dag.cost.queries import CATEGORIES
from frontier_dag.errors import RunDataError

#: Per-iteration category columns of iterations.parquet (they sum to duration_us).
CATEGORY_COLUMNS = tuple(f"{c}_us" for c in CATEGORIES)


@dataclass(frozen=True)
class PoolInfo:
    """A pool that runs iterations: its stage, what it serves and the pools it steps with."""

    name: str
    role: str
    stage: str
    serves: str  # prefill | decode | both
    replicas: int
    gpus: int
    members: tuple[str, ...]  # pool names the stage steps together (AF: attention and ffn)
    micro_batches: int = 1


@dataclass
class RunData:
    run_dir: Path | None  # None: a run in memory, not written
    config: RunConfig
    summary: dict[str, Any]
    requests: pd.DataFrame
    iterations: pd.DataFrame  # sorted by chain, then start
    pools: dict[str, PoolInfo]  # pools that log iterations, in the log's pool order
    entries: tuple[str, ...]  # the pools new requests enter (requests.parquet's prefill_pool says which)
    handoff: str | None  # the entry pool whose prefills hand their KV to ``decode`` (PD's prefill pool)
    decode: str | None  # the pool that decodes after a hand-off (PD), else None
    link: str | None  # name of the KV link ("prefill->decode") when KV moves between pools
    chains: list[tuple[str, int]] = field(default_factory=list)  # chain -> (pool, replica)
    chain_lo: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    chain_hi: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    log_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # sorted row -> file row
    origin: Origin = Origin()  # where the config's relative paths are taken from

    @property
    def label(self) -> str:
        """The run's name in drawings and messages: its directory, or its config's origin."""
        return str(self.run_dir) if self.run_dir is not None else self.origin.name

    def chain_of(self, pool: str, replica: int) -> int:
        return self.chains.index((pool, int(replica)))

    def chain_index(self) -> np.ndarray:
        """Chain of every iteration row."""
        out = np.empty(len(self.iterations), dtype=np.int64)
        for c, (lo, hi) in enumerate(zip(self.chain_lo, self.chain_hi, strict=True)):
            out[lo:hi] = c
        return out

    @property
    def attributed(self) -> bool:
        cats = self.iterations[list(CATEGORY_COLUMNS)].to_numpy(dtype=np.float64).sum(axis=1)
        dur = self.iterations["duration_us"].to_numpy()
        return bool(len(dur) == 0 or cats.sum() >= 0.5 * dur.sum())

    @property
    def clients(self) -> int | None:
        return self.config.workload.clients

    def entry_of(self) -> np.ndarray:
        """The entry pool of every request (its prefill ran there), by request id."""
        return self.requests["prefill_pool"].astype(str).to_numpy()
    @property
    def overheads(self) -> EngineOverheads | None:
        """The engine overhead model the run was simulated with (its config inlines it)."""
        value = self.config.engine_overheads
        return value if isinstance(value, EngineOverheads) else None

    @property
    def intake_us(self) -> float:
        """Each request's time from its arrival to the scheduler's queue (``request_us``)."""
        return self.overheads.request_us if self.overheads is not None else 0.0

    @property
    def handoff_us(self) -> float:
        """Each hand-off's time from its KV's arrival to the decode server's queue."""
        return self.overheads.handoff_us if self.overheads is not None else 0.0

    def prefill_end_s(self) -> np.ndarray:
        """When each request's prompt was in: its first token in the engine (with an overhead
        model, a PD request's first token reaches the client later, from the decode server)."""
        rq = self.requests
        return rq["prefill_done_s" if "prefill_done_s" in rq else "first_token_s"].to_numpy(dtype=np.float64)


def categories_with_rest(run: RunData) -> np.ndarray:
    """Category µs of every iteration plus a last column ``unattributed``: what the
    per-category columns do not cover (all of an iteration logged without attribution)."""
    it = run.iterations
    cats = it[list(CATEGORY_COLUMNS)].to_numpy(dtype=np.float64)
    dur = it["duration_us"].to_numpy(dtype=np.float64)
    total = cats.sum(axis=1)
    ok = total > 1e-6 * np.maximum(dur, 1e-12)
    scale = np.where(ok, dur / np.where(ok, total, 1.0), 0.0)
    cats = cats * scale[:, None]
    rest = np.where(ok, 0.0, dur)
    return np.concatenate([cats, rest[:, None]], axis=1)


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory written by ``frontier-dag simulate``."""
    from frontier_dag.sim.run_dir import read_run

    run_dir = Path(run_dir)
    files = read_run(run_dir)
    return run_data(files.config, Origin.of_file(run_dir / "config.yaml"), files.summary, files.requests,
                    files.iterations, run_dir)


def run_data(config: RunConfig, origin: Origin, summary: dict[str, Any], requests: pd.DataFrame,
             iterations: pd.DataFrame, run_dir: Path | None = None) -> RunData:
    """A run's tables organised for analysis (``load_run`` reads them from a directory; a run
    still in memory passes them directly)."""
    from frontier_dag.dsl import trace_config
    from frontier_dag.sim.run_dir import unreadable
    from frontier_dag.sim.run_inputs import SUMMARY_KEY, changed

    gone = changed(config, origin, summary.get(SUMMARY_KEY) or {})
    if gone:
        raise RunDataError(f"{run_dir or origin.name}: {'; '.join(gone)}, and the analysis rebuilds the run's "
                           "iterations from it; analyse the run directory the run was saved to (it keeps a copy: "
                           "`--out RUN_DIR`, `Run.save`), or simulate again")
    deployment, graph = trace_config(config, origin)
    name_of_role = {p.role: name for name, p in deployment.pools.items()}
    pools: dict[str, PoolInfo] = {}
    decode = link = None
    for stage_name, stage in graph.stages.items():
        if stage.serves == "transfer":
            link = "->".join(name_of_role[r] for r in stage.pools[:2])
            continue
        name = name_of_role[stage.pools[0]]
        cfg = deployment.pools[name]
        pools[name] = PoolInfo(name, cfg.role, stage_name, stage.serves, cfg.replicas,
                               sum(deployment.pools[name_of_role[r]].gpus for r in stage.pools),
                               tuple(name_of_role[r] for r in stage.pools), stage.micro_batches)
    entries = tuple(name_of_role[r] for r in graph.entry.pools)
    handoff = next((name for name in entries if pools[name].serves == "prefill"), None)
    if handoff is not None:  # its KV moves to the one pool that decodes (dsl.entry checked it)
        decode = next(name for name, p in pools.items() if p.serves != "prefill")
        # per-layer KV streaming: no transfer stage, the KV is there when the prefill ends
        link = link or f"{handoff}->{decode}"
    if "prefill_pool" not in requests.columns:  # a run written before requests recorded their entry pool
        if len(entries) > 1:
            raise unreadable(run_dir, "requests.parquet", "no prefill_pool column, but the run's requests could "
                             f"enter {' or '.join(entries)}")
        requests = requests.assign(prefill_pool=entries[0])
    pool_names = list(pools)
    strangers = sorted(set(iterations["pool"].astype(str)) - set(pool_names))
    if strangers:
        raise unreadable(run_dir, "iterations.parquet", f"iterations of pools {', '.join(strangers[:3])} that "
                         f"config.yaml does not have ({', '.join(pool_names)})")
    log_rows = np.arange(len(iterations))
    if len(iterations):
        iterations["pool"] = pd.Categorical(iterations["pool"].astype(str), categories=pool_names)
        iterations = iterations.sort_values(["pool", "replica", "start_s"], kind="stable")
        log_rows = iterations.index.to_numpy()
        iterations = iterations.reset_index(drop=True)
    chains, lo, hi = [], [], []
    if len(iterations):
        codes = iterations["pool"].cat.codes.to_numpy().astype(np.int64)
        key = codes * (1 << 32) + iterations["replica"].to_numpy().astype(np.int64)
        bounds = np.flatnonzero(np.diff(key)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(key)]])
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            chains.append((pool_names[codes[s]], int(iterations["replica"].iat[s])))
            lo.append(s)
            hi.append(e)
    return RunData(run_dir, config, summary, requests.sort_values("request_id").reset_index(drop=True), iterations,
                   pools, entries, handoff, decode, link, chains, np.array(lo, dtype=np.int64), np.array(hi, dtype=np.int64),
                   log_rows.astype(np.int64), origin)
