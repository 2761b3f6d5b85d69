"""Per-expert token counts behind MoE profile rows that only describe their routing.

A ``moe_grouped_gemm`` query carries ``expert_tokens``, the tokens reaching each
local expert of the measured EP rank. Public MoE tables do not list them:

* aiconfigurator's collector draws its routing synthetically, ``balanced`` (a fixed
  round-robin pattern) or ``power_law_<alpha>`` (expert loads sampled from a bounded
  power law, the most-loaded EP rank measured, latency averaged over 5 draws). We
  replay that procedure with numpy: exactly for ``balanced``, and for power laws as
  the average of the 5 draws' sorted local loads (the draws themselves are random).
* Frontier's moe.csv gives summary statistics of the local loads (total, share of
  active experts, min/max load ratios, CV). We rebuild a load vector that has
  exactly that total, active count, maximum and minimum and approximately that CV,
  with normal order statistics in between (the shape of random top-k routing).
"""

from __future__ import annotations

import math
import zlib
from functools import lru_cache
from statistics import NormalDist

import numpy as np

POWER_LAW_DRAWS = 5


def balanced_expert_tokens(num_tokens: int, num_experts: int, topk: int, ep: int) -> np.ndarray:
    """Local loads of EP rank 0 under the collector's balanced routing: token i picks
    experts ``i + j * stride`` (mod experts), stride = ceil(experts / topk)."""
    stride = math.ceil(num_experts / topk)
    slots = np.arange(topk) * stride
    if num_tokens >= stride:
        # slot j hands every expert num_tokens // experts tokens, plus one more to the
        # experts e with (e - j * stride) mod experts < num_tokens mod experts
        experts = np.arange(num_experts)[:, None]
        extra = ((experts - slots[None, :]) % num_experts < num_tokens % num_experts).sum(axis=1)
        counts = topk * (num_tokens // num_experts) + extra
    else:
        tokens = np.arange(num_tokens, dtype=float)[:, None]
        experts = (tokens * stride / num_tokens + slots[None, :]) % num_experts
        counts = np.bincount(experts.astype(np.int64).ravel(), minlength=num_experts)
    return counts[: num_experts // ep].astype(np.int64)


def _power_law_draws(rng: np.random.Generator, draws: int, num_tokens: int, num_experts: int, topk: int,
                     ep: int, alpha: float, shuffle_ties: bool = False) -> np.ndarray:
    """``draws`` draws of the collector's power-law routing, each the most-loaded rank's loads.
    ``shuffle_ties``: experts of equal count are nudged in random order (torch's default,
    unstable sort) instead of by index."""
    if num_tokens * topk > num_experts:
        low, high = 1.0, num_tokens * 0.8
    else:
        low, high = 0.01, 2.0
    u = rng.random((draws, num_experts))
    weights = ((high ** (1 - alpha) - low ** (1 - alpha)) * u + low ** (1 - alpha)) ** (1 / (1 - alpha))
    target = num_tokens * topk
    counts = np.round(weights / weights.sum(axis=1, keepdims=True) * target).astype(np.int64)
    for row in counts:
        # the collector nudges experts one token at a time: the largest ones up, the smallest
        # non-empty ones down, cycling when the difference exceeds the number of experts
        delta = int(target - row.sum())
        if shuffle_ties:
            shuffled = rng.permutation(num_experts)
            order = shuffled[np.argsort(-row[shuffled], kind="stable")]
        else:
            order = np.argsort(-row, kind="stable")
        if delta > 0:
            np.add.at(row, order[np.arange(delta) % num_experts], 1)
        elif delta < 0:
            donors = order[::-1][row[order[::-1]] > 0]
            np.subtract.at(row, donors[np.arange(-delta) % len(donors)], 1)
            np.clip(row, 0, None, out=row)
    per_rank = counts.reshape(draws, ep, num_experts // ep)
    return per_rank[np.arange(draws), np.argmax(per_rank.sum(axis=2), axis=1)]


def power_law_expert_tokens(num_tokens: int, num_experts: int, topk: int, ep: int, alpha: float,
                            draws: int = POWER_LAW_DRAWS, shuffle_ties: bool = False) -> np.ndarray:
    """The measured rank's local loads under power-law routing: the mean over ``draws``
    draws of the loads sorted in descending order, rounded (seeded by the shape);
    ``shuffle_ties`` as in ``_power_law_draws``."""
    seed = zlib.crc32(f"{num_tokens},{num_experts},{topk},{ep},{alpha}".encode())
    local = _power_law_draws(np.random.default_rng(seed), draws, num_tokens, num_experts, topk, ep, alpha,
                             shuffle_ties)
    return np.round(np.sort(local, axis=1)[:, ::-1].mean(axis=0)).astype(np.int64)


@lru_cache(maxsize=1024)
def _normal_scores(n: int) -> np.ndarray:
    """Blom's approximation of the expected order statistics of n standard normals, descending."""
    normal = NormalDist()
    return np.array([normal.inv_cdf((n - i + 0.625) / (n + 0.25)) for i in range(1, n + 1)]) if n > 1 else np.zeros(n)


def expert_tokens_from_stats(num_local: int, total: int, active_share: float, min_ratio: float,
                             max_ratio: float, cv: float) -> np.ndarray:
    """A load vector over ``num_local`` experts with the given total, share of active
    experts, min and max load relative to the mean, and (approximately) CV."""
    mean = total / num_local
    active = int(np.clip(round(active_share * num_local), 1 if total > 0 else 0, num_local))
    if active == 0:
        return np.zeros(num_local, dtype=np.int64)
    high = max_ratio * mean
    low = min_ratio * mean if active == num_local else 0.0
    mean_active = total / active
    # CV over all experts (zeros included) -> spread among the active ones
    second_moment = (cv**2 + 1) * mean**2 * num_local / active
    spread = math.sqrt(max(second_moment - mean_active**2, 0.0))
    loads = np.clip(mean_active + spread * _normal_scores(active), max(low, 1.0), max(high, 1.0))
    loads[0] = high
    if active == num_local and active > 1:
        loads[-1] = low
    loads = np.round(loads).astype(np.int64)
    _fix_total(loads, total)
    return np.concatenate([loads, np.zeros(num_local - active, dtype=np.int64)])


def _fix_total(loads: np.ndarray, total: int) -> None:
    """Add or remove single tokens on the middle experts (never the extremes) until the
    loads sum to ``total``."""
    middle = np.arange(1, len(loads) - 1) if len(loads) > 2 else np.arange(len(loads))
    delta = int(total - loads.sum())
    step = 1 if delta > 0 else -1
    i = 0
    while delta != 0 and i < 100 * len(loads) + abs(total):
        j = middle[i % len(middle)]
        if step > 0 or loads[j] > 1:
            loads[j] += step
            delta -= step
        i += 1
