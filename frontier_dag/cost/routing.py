"""Expert routing: how many tokens reach each expert of each EP rank, per layer and iteration.

The popularity of experts is a per-layer model: ``uniform``, ``power_law`` (the
expert of popularity rank i gets weight ``i ** -alpha``; which expert is hot differs
by layer), or ``trace`` (popularity counted from recorded expert ids). Each iteration
draws the ``tokens x top_k`` assignments of every layer from it. Redundant experts
(EPLB) replicate the hottest experts and place replicas to balance the ranks'
expected load; a replicated expert's tokens split evenly over its copies.

>>> spec = RoutingSpec(kind="power_law", alpha=1.2)
>>> router = Router(spec, num_experts=8, top_k=2, ep=4, layers=2, seed=0)
>>> loads = router.draw(tokens=100, rng=np.random.default_rng(0))
>>> loads.shape                 # layers x EP ranks x experts per rank
(2, 4, 2)
>>> 350 < int(loads.sum()) < 450     # about 2 layers x 100 tokens x top-2 picks
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from frontier_dag.errors import ConfigError
from frontier_dag.streams import stream


@dataclass(frozen=True)
class RoutingSpec:
    kind: Literal["uniform", "power_law", "trace"] = "uniform"
    alpha: float = 1.2
    path: str | None = None
    redundant_experts: int = 0

    @staticmethod
    def parse(value: dict | None, where: str = "workflow.params.routing") -> RoutingSpec:
        value = dict(value or {})
        unknown = set(value) - {"kind", "alpha", "path", "redundant_experts"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key; routing takes kind, alpha, path, redundant_experts")
        spec = RoutingSpec(**value)
        if spec.kind not in ("uniform", "power_law", "trace"):
            raise ConfigError(f"{where}.kind: {spec.kind!r} is not uniform, power_law or trace")
        if spec.kind == "trace" and not spec.path:
            raise ConfigError(f"{where}.path: routing kind trace needs the path of recorded expert ids (.npy or .csv)")
        if spec.alpha <= 0:
            raise ConfigError(f"{where}.alpha: the power-law exponent must be > 0, got {spec.alpha}")
        if spec.redundant_experts < 0:
            raise ConfigError(f"{where}.redundant_experts: must be >= 0")
        return spec


def _trace_popularity(path: str, num_experts: int, layers: int) -> np.ndarray:
    """Per-layer expert frequencies from recorded ids: a .npy array (layers, tokens, top_k)
    or a CSV with columns layer, expert (one row per routed token)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"routing.path: no such file {file}")
    counts = np.zeros((layers, num_experts))
    if file.suffix == ".npy":
        ids = np.load(file)
        if ids.ndim != 3:
            raise ConfigError(f"{file}: expected an array of shape (layers, tokens, top_k), got {ids.shape}")
        for layer in range(layers):
            counts[layer] = np.bincount(ids[layer % ids.shape[0]].ravel(), minlength=num_experts)[:num_experts]
    else:
        import pandas as pd

        frame = pd.read_csv(file)
        if not {"layer", "expert"} <= set(frame.columns):
            raise ConfigError(f"{file}: needs columns layer and expert (one row per routed token)")
        recorded = frame["layer"].max() + 1
        for layer in range(layers):
            ids = frame.loc[frame["layer"] == layer % recorded, "expert"].to_numpy()
            counts[layer] = np.bincount(ids, minlength=num_experts)[:num_experts]
    if (ids_max := counts.shape[1]) != num_experts:
        raise ConfigError(f"{file}: recorded ids cover {ids_max} experts; the model has {num_experts}")
    return (counts + 1e-9) / (counts + 1e-9).sum(axis=1, keepdims=True)


def _place(expected: np.ndarray, ep: int, redundant: int) -> tuple[np.ndarray, np.ndarray]:
    """Assign experts (plus ``redundant`` replicas of the hottest) to ``ep`` ranks with equal
    slots, as DeepSeek's EPLB does with its global policy (``replicate_experts``, then
    ``balanced_packing``): each redundant slot goes to the expert with the largest expected
    load per copy; then the copies, heaviest first, each go to the least-loaded rank that has
    a free slot, so a hot expert's replicas land on different, lightly loaded ranks. A
    replica receives an equal share of its expert's tokens. Returns (slot_expert,
    slot_share): the expert in each rank's slot and the fraction of that expert's tokens the
    slot receives."""
    num_experts = len(expected)
    replicas = np.ones(num_experts, dtype=int)
    for _ in range(redundant):
        replicas[np.argmax(expected / replicas)] += 1
    slots = (num_experts + redundant) // ep
    copies = np.repeat(np.arange(num_experts), replicas)
    weight = (expected / replicas)[copies]
    order = np.argsort(-weight, kind="stable")
    load = np.zeros(ep)
    used = np.zeros(ep, dtype=int)
    slot_expert = np.zeros((ep, slots), dtype=int)
    for copy in order:
        open_ranks = np.flatnonzero(used < slots)
        rank = open_ranks[np.argmin(load[open_ranks])]
        slot_expert[rank, used[rank]] = copies[copy]
        used[rank] += 1
        load[rank] += weight[copy]
    return slot_expert, 1.0 / replicas[slot_expert]


class Router:
    """Draws per-layer, per-rank, per-local-expert token counts for one micro-batch."""

    def __init__(self, spec: RoutingSpec, num_experts: int, top_k: int, ep: int, layers: int, seed: int = 0,
                 queries_per_seq: int = 1):
        if (num_experts + spec.redundant_experts) % ep:
            raise ConfigError(
                f"routing: {num_experts} experts + {spec.redundant_experts} redundant do not divide over ep={ep} ranks; "
                f"choose redundant_experts so that the sum is a multiple of {ep}")
        self.spec, self.num_experts, self.top_k, self.ep, self.layers = spec, num_experts, top_k, ep, layers
        # a decode step that verifies draft tokens routes every one of them (g.speculate)
        self.queries_per_seq = queries_per_seq
        rng = stream(seed, "expert_popularity")
        if spec.kind == "uniform":
            self.popularity = np.full((layers, num_experts), 1.0 / num_experts)
        elif spec.kind == "power_law":
            weights = np.arange(1, num_experts + 1, dtype=float) ** -spec.alpha
            self.popularity = np.stack([rng.permutation(weights) for _ in range(layers)])
            self.popularity /= self.popularity.sum(axis=1, keepdims=True)
        else:
            self.popularity = _trace_popularity(spec.path, num_experts, layers)
        if spec.redundant_experts:
            placed = [_place(p, ep, spec.redundant_experts) for p in self.popularity]
            self.slot_expert = np.stack([p[0] for p in placed])
            self.slot_share = np.stack([p[1] for p in placed])
        else:
            contiguous = np.arange(num_experts).reshape(ep, num_experts // ep)
            self.slot_expert = np.broadcast_to(contiguous, (layers, *contiguous.shape))
            self.slot_share = np.ones(self.slot_expert.shape)
        self._placement: tuple[np.ndarray, ...] | None = None  # the kernel's contiguous arrays
        self._uniforms = np.empty(0)

    @property
    def experts_per_rank(self) -> int:
        return self.slot_expert.shape[2]

    def draw(self, tokens: int, rng: np.random.Generator) -> np.ndarray:
        """Token counts of shape (layers, ep, experts per rank) for ``tokens`` tokens (each
        of them ``queries_per_seq`` tokens when a decode step verifies draft tokens).

        A layer routes ``tokens x top_k`` picks, a multinomial draw over its experts. For
        many layers x experts, expert e's count is drawn as Poisson with mean
        ``picks x popularity[e]`` (the many-category limit of the multinomial), through its
        normal limit where the mean is 10 or more, by a compiled kernel that takes one
        uniform of ``rng``'s stream (one 64-bit number) per count (frontier_dag.cost.kernels.draw_counts).
        The top-k constraint that a token's picks differ is not modelled.
        """
        return self.draw_many([tokens], rng)[0]

    def draw_many(self, tokens: list[int], rng: np.random.Generator) -> np.ndarray:
        """``np.stack([self.draw(t, rng) for t in tokens])``, the same numbers from ``rng`` in
        one call (a decode stretch routes the same batch sizes step after step): the draws
        take their numbers from the stream one after the other, as the calls one by one
        would."""
        picks = np.array([max(int(t), 0) for t in tokens], dtype=np.int64) * (self.queries_per_seq * self.top_k)
        if self.popularity.size <= 2048:  # few layers x experts: the exact multinomial is cheap
            out = np.zeros((len(tokens), *self.slot_expert.shape), dtype=np.int64)
            live = np.flatnonzero(picks)
            if len(live):
                per_expert = rng.multinomial(picks[live][:, None], self.popularity)
                layer_index = np.arange(self.layers)[:, None, None]
                share = per_expert[:, layer_index, self.slot_expert] * self.slot_share
                out[live] = np.ceil(share - 1e-9).astype(np.int64) if self.spec.redundant_experts else \
                    share.astype(np.int64)
            return out
        from frontier_dag.cost.kernels import draw_counts

        if self._placement is None:
            popularity = np.ascontiguousarray(self.popularity, dtype=np.float64)
            # experts of equal popularity share the kernel's CDF tables (a uniform layer, the
            # power law's weights in every layer)
            values, value_of = np.unique(popularity, return_inverse=True)
            self._placement = (np.ascontiguousarray(self.slot_expert, dtype=np.int64),
                               np.ascontiguousarray(self.slot_share, dtype=np.float64), popularity,
                               np.ascontiguousarray(value_of.reshape(popularity.shape), dtype=np.int64),
                               np.ascontiguousarray(values))
        slot_expert, slot_share, popularity, value_of, values = self._placement
        # one uniform per count, from one 64-bit number each (the top 53 bits): filled into a
        # buffer kept from call to call (a fresh megabyte array costs its page faults)
        size = int(np.count_nonzero(picks)) * popularity.size
        if len(self._uniforms) < size:
            self._uniforms = np.empty(size)
        uniforms = self._uniforms[:size]
        rng.random(out=uniforms)
        out = np.empty((len(tokens), *self.slot_expert.shape), dtype=np.int64)
        draw_counts(picks, popularity, uniforms, slot_expert, slot_share, int(bool(self.spec.redundant_experts)),
                    value_of, values, out)
        return out

    def expected(self, tokens: int) -> np.ndarray:
        """Mean counts, for a deterministic single-iteration view."""
        per_expert = tokens * self.queries_per_seq * self.top_k * self.popularity
        layer_index = np.arange(self.layers)[:, None, None]
        return np.rint(per_expert[layer_index, self.slot_expert] * self.slot_share).astype(np.int64)
