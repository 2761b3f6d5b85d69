"""The ExecutionPredictor: how long one iteration of a stage takes for a given batch.

It binds the batch's statistics to the stage's Syms, draws the expert routing for
MoE stages, prices the templates (one call per operator family) and evaluates
the compiled DAG. Nothing here loops over the DAG's nodes.
"""

from __future__ import annotations

from collections import Counter
from operator import itemgetter

import numpy as np

from frontier_dag.config.run import Deployment
from frontier_dag.cost.batch import (
    STAT_NAMES,
    BatchSummary,
    MicroBatchLoad,
    coster_memo_is_bucketed,
    decode_key_runs,
    split_micro_batches,
)
from frontier_dag.cost.coster import StageCoster
from frontier_dag.cost.protocol import CostModel
from frontier_dag.cost.queries import CATEGORIES, CATEGORY_OF_FAMILY
from frontier_dag.cost.routing import Router, RoutingSpec
from frontier_dag.ir.compile import CompiledStage
from frontier_dag.ir.graph import EventGraph
from frontier_dag.streams import stream


def stage_router(graph: EventGraph, deployment: Deployment, stage: str, seed: int) -> Router | None:
    """The router that draws expert loads for ``stage``, if it has expert ops."""
    if deployment.model.moe is None or not any(
        graph.templates[graph.graph.nodes[n]["template"]].routing for n in graph.stage_nodes(stage)
    ):
        return None
    pools = graph.stages[stage].pools
    # each pipeline stage with expert layers has streams for the same ranks: count one stage's
    by_stage = Counter(r.pp_stage for r in graph.resources.values() if r.rank is not None and r.pool in pools)
    ranks = max(by_stage.values(), default=0) or 1
    spec = graph.routing if isinstance(graph.routing, RoutingSpec) else RoutingSpec()
    moe = deployment.model.moe
    return Router(spec, moe.num_experts, moe.top_k, ranks, deployment.model.num_layers, seed,
                  queries_per_seq=graph.stages[stage].queries_per_seq)


#: Expert-parallel ranks priced per layer and iteration, by each of two loads (see StageCoster).
CRITICAL_RANKS = 2
#: Decode steps of a routed stretch drawn and priced together: enough to share the calls,
#: few enough that the routed counts (layers x experts per step) stay in the CPU's caches.
ROUTED_CHUNK = 8


class ExecutionPredictor:
    """Iteration time of one stage, in microseconds, from the batch's sequences."""

    #: an iteration's time depends on its batch only, so a replica may plan decode steps ahead
    plans_ahead = True

    def __init__(self, graph: EventGraph, stage: str, deployment: Deployment, cost_model: CostModel,
                 seed: int = 0, overhead_us: float = 0.0, attribute: bool = True, per_sequence_us: float = 0.0):
        self.stage = stage
        self.compiled = CompiledStage(graph, stage)
        # only the ranks that can be the slowest are priced per iteration (see StageCoster)
        self.coster = StageCoster(graph, self.compiled, cost_model, critical_ranks=CRITICAL_RANKS)
        self.micro_batches = graph.stages[stage].micro_batches
        self.router = stage_router(graph, deployment, stage, seed)
        self.rng = stream(seed, "expert_routing")
        # host time of an iteration, the GPU idle: overhead_us + per_sequence_us x its sequences
        self.overhead_us = overhead_us
        self.per_sequence_us = per_sequence_us
        # split each iteration's time by category (the run-level critical path needs it);
        # off, non-linear stages skip the gradient (iterations then log zero categories)
        self.attribute = attribute
        self._keys = [[f"{stage}.mb{i}.{s}" for s in STAT_NAMES] for i in range(self.micro_batches)]
        self._batch_keys = [f"{stage}.mb{i}" for i in range(self.micro_batches)]
        # a stage whose longest path is a fixed weighted sum of its templates (no parallel
        # branches, e.g. a TP chain) is priced as that sum, with memoised parts
        self.linear = self.compiled.program.linear_coefficients() if self.router is None else None
        # speculative decoding: an iteration (draft and verification) emits tokens_per_step
        # tokens per sequence on average; the simulator steps one token at a time, each step
        # 1 / tokens_per_step of an iteration, so TPOT and throughput count the accepted tokens
        self.steps_per_iteration = graph.stages[stage].tokens_per_step
        if self.steps_per_iteration != 1.0:
            self.linear = None  # every step through _time, which divides
        used = [self._keys[0].index(v) for v in self.coster.scalar_variables] if self.micro_batches == 1 else []
        # the memo key: the one statistic read, or a tuple of them (() when none is)
        self._scalar_key = itemgetter(*used) if used else (lambda stats: ())
        self._scalar_memo: dict = {}
        self._decode_steps: bool | None = None  # whether decode_steps applies (decided on first use)
        self._samples: bool | None = None  # whether a cost model samples its prices (jitter; on first use)
        self._attention_groups: list[tuple[int, float, int]] | None = None
        self._attention_members = 0
        # the attribution category of each template, and the latest iteration's attribution
        families = [graph.templates[t].family for t in self.compiled.templates.tolist()]
        self._category = np.array([CATEGORIES.index(CATEGORY_OF_FAMILY.get(f, "waits_and_bubbles")) for f in families],
                                  dtype=np.int64)
        self.last_categories: tuple[float, ...] = (0.0,) * len(CATEGORIES)
        self._grad: np.ndarray | None = None  # the latest gradient computed (see _time)
        # the templates where it is not 0, its values there and their categories
        self._support = self._support_grad = self._support_category = np.empty(0)
        self._support_grad_nonnegative = True

    def usages(self, pool: str) -> dict:
        """The prices this predictor used (a UsageCounter), by ``pool``'s name."""
        return {pool: self.coster.usage}

    def time_us(self, q: np.ndarray, ctx: np.ndarray, kv_out_tokens: int = 0) -> float:
        """One iteration over sequences with ``q`` new and ``ctx`` cached tokens each."""
        if self.micro_batches == 1:
            return self.time_us_summary(BatchSummary.of(q, ctx), lambda: (q, ctx), kv_out_tokens)
        loads = [MicroBatchLoad(pq, pc, kv_out_tokens if i == 0 else 0)
                 for i, (pq, pc) in enumerate(split_micro_batches(q, ctx, self.micro_batches))]
        return self._time(loads)

    def time_us_summary(self, summary: BatchSummary, materialize, kv_out_tokens: int = 0) -> float:
        """One iteration of a single-micro-batch stage from the batch's sums; ``materialize()``
        returns its ``(q, ctx)`` arrays, built only if a price is not memoised."""
        if self.micro_batches > 1:
            q, ctx = materialize()
            return self.time_us(q, ctx, kv_out_tokens)
        load = MicroBatchLoad(kv_out_tokens=kv_out_tokens, summary=summary, materialize=materialize)
        if self.linear is None:
            return self._time([load])
        # the hot path: a memoised weighted sum of scalar prices plus the attention prices
        entry = self._scalar_entry(summary.stats(kv_out_tokens))
        self.coster.usage.scalar_uses += 1
        if entry[2]:
            self.coster.usage.add_out_of_range(entry[2])
        attention = self.coster.attention_time({self._batch_keys[0]: load}, self.linear)
        cats = entry[1]
        host = self.overhead_us + self.per_sequence_us * summary.seqs
        self.last_categories = (cats[0] + attention, *cats[1:7], host)
        return entry[0] + attention + host

    def _scalar_entry(self, stats: tuple[int, ...]) -> tuple[float, tuple[float, ...], tuple]:
        """A linear stage's scalar part for batch statistics ``stats``: its weighted sum, that
        sum by category, and which of its prices are out of range (memoised)."""
        key = self._scalar_key(stats)
        entry = self._scalar_memo.get(key)
        if entry is None:
            env = dict(zip(self._keys[0], stats, strict=True))
            costs, out_of_range = self.coster.scalar_costs(env)
            weighted = costs * self.linear
            entry = (float(weighted.sum()), tuple(np.bincount(self._category, weights=weighted, minlength=len(CATEGORIES))),
                     out_of_range)
            self._scalar_memo[key] = entry
        return entry

    def decode_steps(self, n: int, contexts: list[int], longest: list[int], materialize) -> tuple[list, list] | None:
        """Durations and attributions of consecutive decode steps of ``n`` sequences whose
        context sums and longest contexts are ``contexts`` and ``longest``; ``materialize(js)``
        gives the cached tokens of every sequence at each step of ``js``, one step after the
        other in one flat array. The attributions are columns in the order of
        ``last_categories``: attention per step, the others one number for every step. None
        when the stage is not a plain chain of one micro-batch (then price the steps one by
        one). The steps share few memo keys (a key spans a 0.5% growth of the contexts): each
        is looked up once, and those the memo lacks are priced together in one call."""
        if self._decode_steps is None:
            plain = self.linear is not None and self.micro_batches == 1 and all(
                kind == "attention" and dp == 1 and not fields.get("window")
                for _, kind, _, dp, fields in self.coster.attention_templates)
            self._decode_steps = plain and coster_memo_is_bucketed()
        if not self._decode_steps:
            return None if self.linear is not None else self._general_steps(n, contexts, longest, materialize)
        # BatchSummary(n, n, 0, 0, ctx, longest, ctx, n, ctx, longest, 0).stats() at the first and the last step
        stats = (n, n, 0, 0, n, contexts[0], contexts[0] + n, 0)
        if self._scalar_key(stats) != self._scalar_key((n, n, 0, 0, n, contexts[-1], contexts[-1] + n, 0)):
            return None  # scalar shapes read the context: price step by step
        scalar = self._scalar_entry(stats)
        if self._attention_groups is None:
            self._attention_groups = self._group_attention()
        runs = decode_key_runs(n, contexts[0], longest[0], len(contexts))
        steps_of = dict(runs)  # steps per key
        first_step: dict[tuple, int] = {}
        steps = 0
        for key, length in runs:  # each key has one run (buckets only grow)
            first_step[key] = steps
            steps += length
        memo, usage = self.coster.attention_memo, self.coster.usage
        attention = dict.fromkeys(first_step, 0.0)
        flagged = 0
        for index, coef, members in self._attention_groups:
            entries = {key: memo.get((index, *key)) for key in first_step}
            missing = [key for key, entry in entries.items() if entry is None]
            if missing:
                ctx = materialize([first_step[key] for key in missing])
                entries.update(self.coster.memoize_decodes(index, missing, ctx, n))
            for key, (price, flag, _) in entries.items():
                attention[key] += coef * price
                if flag:
                    flagged += members * steps_of[key]
        host = self.overhead_us + self.per_sequence_us * n
        base = scalar[0] + host
        cats = scalar[1]
        durations, spent = [], []
        for key, length in runs:
            durations += [base + attention[key]] * length
            spent += [cats[0] + attention[key]] * length
        columns = [spent, *cats[1:7], host]
        usage.scalar_uses += steps
        usage.uses["attention_decode"] += steps * self._attention_members
        usage.out_of_range_by["attention_decode"] += flagged
        if scalar[2]:
            usage.add_out_of_range(scalar[2], steps)
        return durations, columns

    def _general_steps(self, n: int, contexts: list[int], longest: list[int], materialize) -> tuple[list, list] | None:
        """``decode_steps`` of a stage that is not a plain chain (expert routing, micro-batches):
        step j's micro-batches are step 0's with every context grown by j (the split into
        micro-batches does not look at contexts), so the routing of all the steps is drawn in
        one go (the same numbers as step by step) and their expert templates priced in one
        call; the rest is priced and evaluated step by step, exactly as ``_time`` would.
        None where a cost model samples its prices (jitter): they are then drawn step by step."""
        if self._samples is None:
            self._samples = any(getattr(m, "jitter", False) for m in self.coster.models())
        if self._samples:
            return None
        ctx = materialize([0])
        ones = np.ones(n, dtype=np.int64)
        parts = [(ones, ctx)] if self.micro_batches == 1 else split_micro_batches(ones, ctx, self.micro_batches)
        heads = [(n, contexts[0], longest[0])] if self.micro_batches == 1 else \
            [(len(pq), int(pc.sum()), int(pc.max()) if len(pc) else 0) for pq, pc in parts]
        durations, categories = [], []
        for first in range(0, len(contexts), ROUTED_CHUNK):
            steps = range(first, min(first + ROUTED_CHUNK, len(contexts)))
            self._price_steps(parts, heads, steps, durations, categories)
        return durations, [list(column) for column in zip(*categories, strict=True)]

    def _price_steps(self, parts: list, heads: list, steps: range, durations: list, categories: list) -> None:
        """Price decode steps ``steps`` of ``_general_steps`` (appended to ``durations`` and
        ``categories``)."""
        loads = []
        for j in steps:
            step_loads = []
            for (pq, pc), (seqs, total, top) in zip(parts, heads, strict=True):
                if seqs:
                    c, m = total + seqs * j, top + j
                    summary = BatchSummary(seqs, seqs, 0, 0, c, m, c, seqs, c, m, 0)
                else:
                    summary = BatchSummary(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
                step_loads.append(MicroBatchLoad(summary=summary, materialize=lambda pq=pq, pc=pc, j=j: (pq, pc + j),
                                                 stretch=(pc, j)))
            loads.append(step_loads)
        if self.router is not None:
            drawn = self.router.draw_many([load.tokens for step in loads for load in step], self.rng)
            for i, load in enumerate(load for step in loads for load in step):
                load.expert_loads = drawn[i]
        bound = [self._bind(step) for step in loads]
        costs = self.coster.costs_many([env for env, _ in bound], [batches for _, batches in bound])
        for row, step_loads in zip(costs, loads, strict=True):
            durations.append(self._timed(row, step_loads))
            categories.append(self.last_categories)

    def _bind(self, loads: list[MicroBatchLoad]) -> tuple[dict[str, int], dict[str, MicroBatchLoad]]:
        """The statistics (``stage.mb0.tokens`` -> value) and micro-batches of an iteration."""
        env: dict[str, int] = {}
        batches: dict[str, MicroBatchLoad] = {}
        for i, load in enumerate(loads):
            env.update(zip(self._keys[i], load.summary.stats(load.kv_out_tokens), strict=True))
            batches[self._batch_keys[i]] = load
        return env, batches

    def _group_attention(self) -> list[tuple[int, float, int]]:
        """The attention templates of a plain decode chain grouped by identical shape:
        (the first one's index, the sum of their coefficients, how many), so that a step
        prices each shape once (every layer of a dense model has the same attention)."""
        groups: dict[tuple, list] = {}
        for index, kind, batch, dp, fields in self.coster.attention_templates:
            shape = (kind, batch, dp, repr(sorted(fields.items())))
            group = groups.setdefault(shape, [index, 0.0, 0])
            group[1] += float(self.linear[index])
            group[2] += 1
        self._attention_members = sum(g[2] for g in groups.values())
        return [tuple(g) for g in groups.values()]

    def _time(self, loads: list[MicroBatchLoad]) -> float:
        if self.router is not None:
            for load in loads:
                load.expert_loads = self.router.draw(load.tokens, self.rng)
        return self._timed(self.coster.costs(*self._bind(loads)), loads)

    def _timed(self, costs: np.ndarray, loads: list[MicroBatchLoad]) -> float:
        """The iteration's time from its template costs (its attribution in last_categories)."""
        total = self.compiled.iteration_time_one(costs)
        host = self.overhead_us + self.per_sequence_us * sum(load.summary.seqs for load in loads)
        if not self.attribute:
            return self._per_step(total + host)
        # the previous iteration's critical path re-weighted: while it is still a longest path
        # (the usual case from one batch to the next) its gradient is this iteration's too, and
        # the costly backward pass is skipped
        # the templates off the path weigh 0: bincount adds the path's in the same order as
        # over every template, without the zeros (adding 0 changes no sum)
        weighted = None if self._grad is None else self._support_grad * costs[self._support]
        if weighted is None or self._stale(weighted, costs, total):
            self._grad = self.compiled.program.gradient(costs)[1]
            self._support = np.flatnonzero(self._grad)
            self._support_grad = self._grad[self._support]
            self._support_category = self._category[self._support]
            self._support_grad_nonnegative = bool((self._support_grad >= 0).all())
            weighted = self._support_grad * costs[self._support]
        cats = np.bincount(self._support_category, weights=weighted, minlength=len(CATEGORIES))
        cats[-1] = host
        if self.steps_per_iteration != 1.0:
            cats /= self.steps_per_iteration
        self.last_categories = tuple(cats.tolist())
        return self._per_step(total + host)

    def _stale(self, weighted: np.ndarray, costs: np.ndarray, total: float) -> bool:
        """Whether the latest gradient's path is shorter than this iteration's longest path
        ``total`` (beyond a relative 1e-9): the sum of ``weighted``, its gradient times the
        costs over the templates on it. Two
        sums of the same m terms in different orders differ by at most 2 (m - 1) eps times
        the sum of their magnitudes; only a sum that close to the bound is taken again as
        the sum over every template (a product and a sum, not a BLAS dot: a threaded dot on
        a busy machine costs milliseconds), so the answer is that sum's."""
        bound = total - 1e-9 * max(total, 1.0)
        path = float(weighted.sum())
        # the magnitudes' sum: the sum itself where no term is negative (prices are >= 0)
        magnitude = path if self._support_grad_nonnegative else float(np.abs(weighted).sum())
        if abs(path - bound) <= 4 * (len(weighted) + 1) * 2.3e-16 * magnitude:
            path = float((self._grad * costs).sum())
        return path < bound

    def _per_step(self, iteration_us: float) -> float:
        """The time of one simulated step: the whole iteration, or with speculative decoding
        the share of one emitted token."""
        return iteration_us if self.steps_per_iteration == 1.0 else iteration_us / self.steps_per_iteration
