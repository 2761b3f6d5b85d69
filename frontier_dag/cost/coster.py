"""Pricing an iteration: the costs of a compiled stage's templates for one batch.

Per iteration the simulator hands over the stage's micro-batches (each sequence's
new tokens ``q`` and cached context ``ctx``) and, for MoE stages, the routed token
counts. Templates fall in three kinds, each priced with one batched call per
operator family:

* scalar templates (GEMMs, norms, collectives, transfers) whose sizes are Syms over
  the batch statistics: memoised on the values of those statistics, so a batch size
  seen before costs a dictionary lookup;
* attention templates, priced on the micro-batch's sequence lengths (with attention
  data parallelism, on the most loaded DP rank's share);
* expert templates, one per (layer, EP rank), priced on that rank's routed tokens.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from frontier_dag.cost.protocol import CostModel
from frontier_dag.cost.queries import QUERY_COLUMNS, attention_family
from frontier_dag.ir.compile import CompiledStage
from frontier_dag.ir.graph import EventGraph
from frontier_dag.ir.symbols import Sym

#: Template fields that shape how a batch is read rather than being query columns.
BATCH_FIELDS = ("dp_ranks",)


@dataclass
class MicroBatchLoad:
    """One micro-batch of an iteration: per sequence, new tokens and cached tokens."""

    q: np.ndarray
    ctx: np.ndarray
    kv_out_tokens: int = 0  # KV tokens of sequences whose prefill completes now
    expert_loads: np.ndarray | None = None  # (layers, ranks, experts per rank) routed tokens

    def stats(self) -> dict[str, int]:
        q, ctx = self.q, self.ctx
        prefill = q > 1
        tokens = int(q.sum())
        ctx_tokens = int(ctx.sum())
        prefill_tokens = int(q[prefill].sum())
        prefill_seqs = int(prefill.sum())
        return {"tokens": tokens, "seqs": len(q), "prefill_tokens": prefill_tokens, "prefill_seqs": prefill_seqs,
                "decode_seqs": len(q) - prefill_seqs, "ctx_tokens": ctx_tokens, "kv_tokens": ctx_tokens + tokens,
                "kv_out_tokens": int(self.kv_out_tokens)}


def split_micro_batches(q: np.ndarray, ctx: np.ndarray, parts: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deal sequences into ``parts`` micro-batches with balanced tokens (longest first)."""
    order = np.argsort(-q, kind="stable")
    buckets: list[list[int]] = [[] for _ in range(parts)]
    load = np.zeros(parts)
    for i in order:
        j = int(np.argmin(load))
        buckets[j].append(i)
        load[j] += q[i]
    return [(q[b], ctx[b]) for b in (np.array(b, dtype=np.int64) for b in buckets)]


def stage_env(stage: str, loads: list[MicroBatchLoad]) -> tuple[dict[str, int], dict[str, MicroBatchLoad]]:
    env, batches = {}, {}
    for i, load in enumerate(loads):
        key = f"{stage}.mb{i}"
        batches[key] = load
        for stat, value in load.stats().items():
            env[f"{key}.{stat}"] = value
    return env, batches


def dp_share(q: np.ndarray, ctx: np.ndarray, dp: int) -> tuple[np.ndarray, np.ndarray]:
    """The sequences of the most loaded of ``dp`` attention-DP ranks when sequences are dealt
    out longest first (the scheduler balances ranks; rank 0 gets the largest share)."""
    if dp <= 1 or len(q) <= 1:
        return q, ctx
    order = np.argsort(-(q * (ctx + q) + ctx), kind="stable")[::dp]
    return q[order], ctx[order]


@dataclass
class UsageCounter:
    """How many template prices came from outside the fitted data, and from which sources."""

    priced: int = 0
    out_of_range: int = 0
    sources: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class StageCoster:
    """Prices the templates of one compiled stage; ``costs(batch)`` returns ``(T,)`` in µs."""

    def __init__(self, graph: EventGraph, stage: CompiledStage, cost_model: CostModel):
        self.stage = stage
        self.cost_model = cost_model
        self.usage = UsageCounter()
        templates = [graph.templates[t] for t in stage.templates.tolist()]
        self.num_templates = len(templates)
        self._scalar: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        self._attention: list[tuple[int, str, str, int, dict]] = []
        self._experts: dict[tuple[str, str], list[tuple[int, int, int, dict]]] = defaultdict(list)
        variables: set[str] = set()
        for i, t in enumerate(templates):
            fields = dict(t.fields)
            if t.family == "sync":
                continue
            if t.family in ("attention", "mla"):
                dp = int(fields.pop("dp_ranks", 1))
                self._attention.append((i, t.family, t.batch, dp, fields))
            elif t.routing is not None:
                mb, layer, rank = t.routing
                self._experts[(mb, t.family)].append((i, layer, rank, fields))
            else:
                for value in fields.values():
                    if isinstance(value, Sym):
                        variables.update(value.variables())
                self._scalar[t.family].append((i, fields))
        self._variables = tuple(sorted(variables))
        self._num_scalar = sum(len(v) for v in self._scalar.values())
        self._memo: dict[tuple, tuple[np.ndarray, int]] = {}

    # -- public --------------------------------------------------------------------------------
    def costs(self, env: dict[str, int], batches: dict[str, MicroBatchLoad]) -> np.ndarray:
        """Template costs for an iteration whose statistics are ``env`` (``stage.mb0.tokens``
        -> value) and whose micro-batches are ``batches`` (``stage.mb0`` -> load)."""
        out = np.zeros(self.num_templates)
        key = tuple(env[v] for v in self._variables)
        cached = self._memo.get(key)
        if cached is None:
            cached = self._price_scalar(env)
            self._memo[key] = cached
        scalar_costs, scalar_oor = cached
        out += scalar_costs
        self.usage.priced += self._num_scalar
        self.usage.out_of_range += scalar_oor
        if self._attention:
            self._price_attention(batches, out)
        if self._experts:
            self._price_experts(env, batches, out)
        return out

    # -- the three kinds -----------------------------------------------------------------------
    def _price_scalar(self, env: dict[str, int]) -> tuple[np.ndarray, int]:
        out = np.zeros(self.num_templates)
        oor = 0
        for family, members in self._scalar.items():
            query = {c: [] for c in QUERY_COLUMNS[family]}
            for _, fields in members:
                for c in query:
                    value = fields.get(c)
                    query[c].append(value.evaluate(env) if isinstance(value, Sym) else value)
            pred = self.cost_model.predict(family, query)
            idx = [i for i, _ in members]
            # an op on an empty micro-batch does not run
            empty = np.array([_is_empty(fields, env) for _, fields in members])
            out[idx] = np.where(empty, 0.0, pred.latency_us)
            oor += int(np.count_nonzero(pred.out_of_range & ~empty))
            self.usage.sources[pred.source] += len(idx)
        return out, oor

    def _price_attention(self, batches: dict[str, MicroBatchLoad], out: np.ndarray) -> None:
        rows: dict[str, tuple[list[int], dict[str, list]]] = {}

        def add(family: str, index: int, fields: dict, q: np.ndarray, ctx: np.ndarray) -> None:
            idx, query = rows.setdefault(family, ([], {c: [] for c in QUERY_COLUMNS[family]}))
            idx.append(index)
            for c in query:
                query[c].append(q if c == "q_lens" else ctx if c == "ctx_lens" else fields[c])

        for index, kind, batch, dp, fields in self._attention:
            load = batches[batch]
            if len(load.q) == 0:
                continue
            q, ctx = dp_share(load.q, load.ctx, dp)
            family = attention_family(q)
            if kind == "mla":
                # MLA kernels run prefill and decode sequences as separate launches
                decode = q == 1
                if decode.any():
                    add("mla_decode", index, fields, q[decode], ctx[decode])
                if not decode.all():
                    add("mla_prefill", index, fields, q[~decode], ctx[~decode])
            else:
                add(family, index, fields, q, ctx)
        for family, (idx, query) in rows.items():
            pred = self.cost_model.predict(family, query)
            np.add.at(out, idx, pred.latency_us)
            self.usage.priced += len(idx)
            self.usage.out_of_range += int(np.count_nonzero(pred.out_of_range))
            self.usage.sources[pred.source] += len(idx)

    def _price_experts(self, env: dict[str, int], batches: dict[str, MicroBatchLoad], out: np.ndarray) -> None:
        for (batch, family), members in self._experts.items():
            loads = batches[batch].expert_loads
            if loads is None or env[f"{batch}.tokens"] == 0:
                continue
            idx = [i for i, *_ in members]
            layers = np.array([layer for _, layer, _, _ in members])
            ranks = np.array([rank for _, _, rank, _ in members])
            query = {c: [fields.get(c) for *_, fields in members] for c in QUERY_COLUMNS[family] if c != "expert_tokens"}
            for c, values in query.items():
                if values and isinstance(values[0], Sym):
                    query[c] = [v.evaluate(env) for v in values]
            query["expert_tokens"] = list(loads[layers % loads.shape[0], ranks])
            pred = self.cost_model.predict(family, query)
            busy = loads[layers % loads.shape[0], ranks].sum(axis=1) > 0
            out[idx] = np.where(busy, pred.latency_us, 0.0)
            self.usage.priced += len(idx)
            self.usage.out_of_range += int(np.count_nonzero(pred.out_of_range & busy))
            self.usage.sources[pred.source] += len(idx)


def _is_empty(fields: dict, env: dict[str, int]) -> bool:
    """An op sized by a statistic that is zero this iteration (no tokens) does not run."""
    for column in ("m", "num_tokens", "bytes"):
        value = fields.get(column)
        if isinstance(value, Sym) and value.evaluate(env) <= 0:
            return True
    return False
