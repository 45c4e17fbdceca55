"""Score arithmetic: rank normalisation, the LLM/retrieval blend, popularity penalty, MMR, rank agreement.

Normalisation is rank-based on both sides: a candidate at (average, for ties) rank ``r`` of ``n`` gets
``1 - (r - 1) / (n - 1)`` (1 for the best, 0 for the worst, 1 when ``n == 1``). Log-probabilities of different
strategies, Borda counts and fused RRF scores live on unrelated scales; ranks do not, and a single extreme
log-prob cannot swamp the blend. ``final = w * llm_norm + (1 - w) * retrieval_norm``; ties keep the retrieval
order, so ``w == 0`` returns the retrieval order exactly and ``w == 1`` the LLM order (ties by retrieval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

__all__ = [
    "average_ranks",
    "blend_scores",
    "kendall_tau",
    "mean_pairwise_tau",
    "mmr_order",
    "popularity_shares",
    "rank_normalize",
]


def average_ranks(scores: Sequence[float]) -> list[float]:
    """1-based ranks by decreasing score; tied scores share their average rank."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for pos in range(start, end + 1):
            ranks[order[pos]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def rank_normalize(ranks: Sequence[float]) -> list[float]:
    n = len(ranks)
    if n <= 1:
        return [1.0] * n
    return [1.0 - (r - 1.0) / (n - 1.0) for r in ranks]


def blend_scores(llm_scores: Sequence[float] | None, n: int, llm_weight: float) -> list[float]:
    """Final scores of candidates given in retrieval order (position 0 = retrieval rank 1)."""
    retrieval = rank_normalize([float(i + 1) for i in range(n)])
    if llm_scores is None or llm_weight == 0.0:
        return retrieval
    llm = rank_normalize(average_ranks(llm_scores))
    return [llm_weight * a + (1.0 - llm_weight) * b for a, b in zip(llm, retrieval, strict=True)]


def popularity_shares(ids: Sequence[str], popularity: Mapping[str, float] | None) -> list[float]:
    """``log1p(count) / log1p(max count)`` per candidate (0 for unknown items)."""
    if not popularity:
        return [0.0] * len(ids)
    counts = [max(0.0, float(popularity.get(i, 0.0))) for i in ids]
    top = max(counts, default=0.0)
    if top <= 0:
        return [0.0] * len(ids)
    return [math.log1p(c) / math.log1p(top) for c in counts]


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na > 0 and nb > 0 else 0.0


def mmr_order(
    order: Sequence[int], relevance: Sequence[float], vectors: Sequence[Sequence[float] | None], lam: float, k: int
) -> list[int]:
    """Greedy maximal marginal relevance: pick ``argmax lam * rel - (1 - lam) * max cos(selected)``; ties keep
    ``order`` (the blended order). Items without a vector count as dissimilar to everything."""
    remaining = list(order)
    chosen: list[int] = []
    while remaining and len(chosen) < k:
        best, best_value = remaining[0], -math.inf
        for i in remaining:
            vec = vectors[i]
            others = [v for v in (vectors[j] for j in chosen) if v is not None]
            sim = max((_cosine(vec, v) for v in others), default=0.0) if vec else 0.0
            value = lam * relevance[i] - (1.0 - lam) * sim
            if value > best_value + 1e-12:
                best, best_value = i, value
        chosen.append(best)
        remaining.remove(best)
    return chosen


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two score vectors over the same items (1: same order, -1: reversed)."""
    concordant = discordant = ties_a = ties_b = 0
    for i, j in combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if da == 0:
            ties_a += 1
        elif db == 0:
            ties_b += 1
        elif (da > 0) == (db > 0):
            concordant += 1
        else:
            discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denom if denom > 0 else 0.0


def mean_pairwise_tau(vectors: Sequence[Sequence[float]]) -> float | None:
    """Mean Kendall tau over all pairs of per-order score vectors; None with fewer than two orders."""
    if len(vectors) < 2:
        return None
    pairs = [kendall_tau(a, b) for a, b in combinations(vectors, 2)]
    return sum(pairs) / len(pairs)
