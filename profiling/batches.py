"""The batch compositions the profilers measure: sequence lengths and expert loads.

Public profiles time batches of equal-length sequences and evenly loaded experts;
real batches are neither. These samplers draw the heterogeneous ones: attention
lengths from a distribution with a given mean and coefficient of variation, and
per-expert token counts from uniform or power-law routing. numpy only, so that
tests and other layers can use them without torch.
"""

from __future__ import annotations

import numpy as np

#: Length distributions a design can ask for.
LENGTH_DISTRIBUTIONS = ("lognormal", "uniform", "bimodal")
#: Routing models of the grouped-GEMM profiler (the simulator's `routing.kind`, less trace).
ROUTINGS = ("uniform", "power_law")


def draw_lengths(rng: np.random.Generator, n: int, mean: float, cv: float, dist: str,
                 low: int = 1, high: int | None = None) -> np.ndarray:
    """``n`` integer lengths in [low, high] with about the given mean and coefficient of variation.

    ``lognormal`` has a long right tail (typical prompt lengths), ``uniform`` is flat
    around the mean, ``bimodal`` mixes short and long sequences half and half. When
    n >= 2 and the range allows it, the lengths are never all equal: a batch drawn
    here is heterogeneous by construction, which is what these profiles add.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    high = high if high is not None else max(low, int(mean * 20))
    cv = max(float(cv), 0.0)
    if dist == "lognormal":
        sigma = np.sqrt(np.log1p(cv * cv))
        values = rng.lognormal(np.log(mean) - sigma * sigma / 2, sigma, n)
    elif dist == "uniform":
        half_width = min(cv * np.sqrt(3.0), 0.99)  # a uniform on mean*(1 +- w) has CV w/sqrt(3)
        values = rng.uniform(mean * (1 - half_width), mean * (1 + half_width), n)
    elif dist == "bimodal":
        spread = min(cv, 0.95)
        modes = np.where(rng.random(n) < 0.5, 1 - spread, 1 + spread) * mean
        values = modes * rng.lognormal(0.0, 0.1, n)  # jitter, so each mode is not one length
    else:
        raise ValueError(f"unknown length distribution {dist!r}; use one of {', '.join(LENGTH_DISTRIBUTIONS)}")
    return ensure_heterogeneous(np.clip(np.rint(values), low, high).astype(np.int64), low, high)


def ensure_heterogeneous(lengths: np.ndarray, low: int, high: int) -> np.ndarray:
    """``lengths`` with the last one moved by 1 (within [low, high]) when all are equal.

    Tiny means round, and caps scale, many draws onto one value; this keeps every batch
    of two or more sequences heterogeneous.
    """
    if len(lengths) >= 2 and high > low and (lengths == lengths[0]).all():
        lengths = lengths.copy()
        lengths[-1] = lengths[0] - 1 if lengths[0] > low else lengths[0] + 1
    return lengths


def fit_total(lengths: np.ndarray, cap: int, low: int = 1) -> np.ndarray:
    """Scale ``lengths`` down (keeping their proportions, each at least ``low``) so that
    their sum is at most ``cap``; unchanged when it already is."""
    total = int(lengths.sum())
    if total <= cap or len(lengths) == 0:
        return lengths
    scaled = np.maximum(np.floor(lengths * (cap / total)), low).astype(np.int64)
    while scaled.sum() > cap and (scaled > low).any():
        scaled[np.argmax(scaled)] -= 1
    return scaled


def expert_popularity(rng: np.random.Generator, num_experts: int, routing: str, alpha: float) -> np.ndarray:
    """Probability that a routed token picks each expert: equal for ``uniform``; for
    ``power_law`` the expert of popularity rank i gets weight ``i ** -alpha``, in a random
    order so that the hot experts land on any EP rank."""
    if routing == "uniform":
        return np.full(num_experts, 1.0 / num_experts)
    if routing != "power_law":
        raise ValueError(f"unknown routing {routing!r}; use one of {', '.join(ROUTINGS)}")
    weights = rng.permutation(np.arange(1, num_experts + 1, dtype=float) ** -alpha)
    return weights / weights.sum()


def route_tokens(rng: np.random.Generator, num_tokens: int, popularity: np.ndarray, topk: int) -> np.ndarray:
    """Tokens per expert when each of ``num_tokens`` tokens picks ``topk`` distinct experts.

    Sampling without replacement by the Gumbel top-k trick: the k largest of
    ``log p + Gumbel noise`` are a draw of k distinct experts weighted by p.
    """
    num_experts = len(popularity)
    if not 1 <= topk <= num_experts:
        raise ValueError(f"topk={topk} must be between 1 and the number of experts ({num_experts})")
    counts = np.zeros(num_experts, dtype=np.int64)
    chunk = max(1, 2**22 // num_experts)  # bounds the score matrix at a few million entries
    for start in range(0, num_tokens, chunk):
        rows = min(chunk, num_tokens - start)
        scores = np.log(popularity) + rng.gumbel(size=(rows, num_experts))
        chosen = np.argpartition(-scores, topk - 1, axis=1)[:, :topk]
        counts += np.bincount(chosen.ravel(), minlength=num_experts)
    return counts


def local_expert_tokens(counts: np.ndarray, ep: int, rank: int) -> np.ndarray:
    """The counts of the experts that EP rank ``rank`` holds (contiguous blocks, as in
    the simulator's placement without redundant experts)."""
    per_rank = len(counts) // ep
    return counts[rank * per_rank:(rank + 1) * per_rank]
