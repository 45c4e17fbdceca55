"""Evaluation metrics: one small function per metric, over plain data (ranx style).

Ranking metrics take one case's relevance judgments ``qrel`` (``{item_id: relevance}``, relevance > 0 = relevant)
and its ranking (a list of item ids, best first, or a run dict ``{item_id: score}``), plus a cutoff ``k``.
:func:`evaluate` / :func:`per_case` apply metrics named by strings (``"ndcg@10"``, ``"recall@20"``) to whole
qrels/runs ``{case_id: ...}``. Conventions follow ranx: NDCG uses linear gains (``rel / log2(rank + 1)``), MAP@k
divides by the number of relevant items, cases absent from the run score 0.

Beyond accuracy: :func:`catalog_coverage`, :func:`intra_list_diversity`, :func:`novelty`, :func:`popularity_bias`.
LLM behaviour and cost: :func:`llm_failure_rates`, :func:`cost_summary` over the per-case records the runner writes.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from agent.errors import InputError

__all__ = [
    "RANKING_METRICS",
    "Ranking",
    "catalog_coverage",
    "cost_summary",
    "evaluate",
    "f1",
    "hit_rate",
    "intra_list_diversity",
    "llm_failure_rates",
    "mean_average_precision",
    "mrr",
    "ndcg",
    "novelty",
    "parse_metric",
    "per_case",
    "percentile",
    "popularity_bias",
    "precision",
    "ranked_ids",
    "recall",
]

Ranking = Sequence[str] | Mapping[str, float]
Qrel = Mapping[str, float]


def ranked_ids(ranking: Ranking) -> list[str]:
    """Item ids best first: a list as given; a run dict sorted by decreasing score (ties by id, like ranx)."""
    if isinstance(ranking, Mapping):
        return [i for i, _ in sorted(ranking.items(), key=lambda kv: (-kv[1], kv[0]))]
    return list(ranking)


def _top(ranking: Ranking, k: int) -> list[str]:
    if k < 1:
        raise InputError(f"metric cutoff k must be >= 1, got {k}", hint="name metrics like 'ndcg@10'")
    return ranked_ids(ranking)[:k]


def _relevant(qrel: Qrel) -> dict[str, float]:
    return {i: float(r) for i, r in qrel.items() if r > 0}


# ------------------------------------------------------------------------------------------------ ranking metrics
def hit_rate(qrel: Qrel, ranking: Ranking, k: int) -> float:
    """1 when at least one relevant item is in the top ``k``."""
    rel = _relevant(qrel)
    return float(any(i in rel for i in _top(ranking, k)))


def precision(qrel: Qrel, ranking: Ranking, k: int) -> float:
    """Relevant items in the top ``k`` divided by ``k``."""
    rel = _relevant(qrel)
    return sum(i in rel for i in _top(ranking, k)) / k


def recall(qrel: Qrel, ranking: Ranking, k: int) -> float:
    """Relevant items in the top ``k`` divided by all relevant items (0 when there are none)."""
    rel = _relevant(qrel)
    if not rel:
        return 0.0
    return sum(i in rel for i in _top(ranking, k)) / len(rel)


def f1(qrel: Qrel, ranking: Ranking, k: int) -> float:
    p, r = precision(qrel, ranking, k), recall(qrel, ranking, k)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def mrr(qrel: Qrel, ranking: Ranking, k: int) -> float:
    """1 / rank of the first relevant item in the top ``k`` (0 if none)."""
    rel = _relevant(qrel)
    for rank, item in enumerate(_top(ranking, k), start=1):
        if item in rel:
            return 1.0 / rank
    return 0.0


def ndcg(qrel: Qrel, ranking: Ranking, k: int) -> float:
    """DCG@k / ideal DCG@k with linear gains ``rel / log2(rank + 1)`` (ranx's ``ndcg``)."""
    rel = _relevant(qrel)
    if not rel:
        return 0.0
    dcg = sum(rel.get(item, 0.0) / math.log2(rank + 1) for rank, item in enumerate(_top(ranking, k), start=1))
    ideal = sorted(rel.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg


def mean_average_precision(qrel: Qrel, ranking: Ranking, k: int) -> float:
    """Average precision at k: sum of precision@r at each relevant rank r <= k, divided by all relevant items."""
    rel = _relevant(qrel)
    if not rel:
        return 0.0
    hits, total = 0, 0.0
    for rank, item in enumerate(_top(ranking, k), start=1):
        if item in rel:
            hits += 1
            total += hits / rank
    return total / len(rel)


MetricFn = Callable[[Qrel, Ranking, int], float]
RANKING_METRICS: dict[str, MetricFn] = {
    "hit_rate": hit_rate,
    "hits": hit_rate,
    "precision": precision,
    "recall": recall,
    "f1": f1,
    "mrr": mrr,
    "ndcg": ndcg,
    "map": mean_average_precision,
}
_NAME = re.compile(r"^([a-z_0-9]+)@(\d+)$")


def parse_metric(name: str) -> tuple[MetricFn, int]:
    """``"ndcg@10"`` -> (ndcg, 10); InputError naming the known metrics otherwise."""
    match = _NAME.match(name.strip().lower())
    if not match or match.group(1) not in RANKING_METRICS or int(match.group(2)) < 1:
        raise InputError(
            f"unknown metric {name!r}",
            hint=f"use NAME@K with K >= 1 and NAME one of {', '.join(sorted(RANKING_METRICS))} (e.g. ndcg@10)",
        )
    return RANKING_METRICS[match.group(1)], int(match.group(2))


def per_case(
    qrels: Mapping[str, Qrel], run: Mapping[str, Ranking], metrics: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{case_id: {metric: value}}`` for every case of ``qrels`` (a case missing from ``run`` scores 0)."""
    parsed = [(m, *parse_metric(m)) for m in metrics]
    return {case: {name: fn(qrel, run.get(case, []), k) for name, fn, k in parsed} for case, qrel in qrels.items()}


def evaluate(qrels: Mapping[str, Qrel], run: Mapping[str, Ranking], metrics: Sequence[str]) -> dict[str, float]:
    """Mean of each metric over the cases of ``qrels``."""
    if not qrels:
        raise InputError("no cases to evaluate", hint="check the dataset and the split (users, min history)")
    table = per_case(qrels, run, metrics)
    return {m: float(np.mean([row[m] for row in table.values()])) for m in metrics}


# ------------------------------------------------------------------------------------------------ beyond accuracy
def catalog_coverage(rankings: Iterable[Ranking], catalog_size: int, k: int) -> float:
    """Share of the catalog that appears in at least one top-``k`` list."""
    if catalog_size <= 0:
        return 0.0
    shown = {i for r in rankings for i in _top(r, k)}
    return len(shown) / catalog_size


def _jaccard_distance(a: set[str], b: set[str]) -> float:
    union = a | b
    return 0.0 if not union else 1.0 - len(a & b) / len(union)


def intra_list_diversity(
    ranking: Ranking,
    k: int,
    *,
    attributes: Mapping[str, Iterable[str]] | None = None,
    vectors: Mapping[str, Sequence[float] | np.ndarray] | None = None,
) -> float | None:
    """Mean pairwise distance in the top ``k``: Jaccard over ``attributes`` (e.g. genres), or cosine distance when
    ``vectors`` are given. None when fewer than two items can be compared."""
    top = _top(ranking, k)
    if vectors is not None:
        rows = [np.asarray(vectors[i], dtype=np.float64) for i in top if i in vectors]
        if len(rows) < 2:
            return None
        mat = np.stack(rows)
        mat = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
        sims = mat @ mat.T
        n = len(rows)
        return float((n * n - sims.sum()) / (n * (n - 1)))  # mean of 1 - cos over ordered pairs i != j
    if attributes is None:
        raise InputError("intra_list_diversity needs attributes or vectors", hint="pass item genres or embeddings")
    sets = [set(attributes.get(i, ())) for i in top]
    if len(sets) < 2:
        return None
    dists = [_jaccard_distance(sets[a], sets[b]) for a in range(len(sets)) for b in range(a + 1, len(sets))]
    return float(np.mean(dists))


def novelty(ranking: Ranking, popularity: Mapping[str, float], k: int) -> float | None:
    """Mean self-information ``-log2(share)`` of the top ``k``, share = item interactions / all interactions
    (an item never seen counts as 1 interaction, so the value stays finite)."""
    total = float(sum(popularity.values()))
    top = _top(ranking, k)
    if not top or total <= 0:
        return None
    return float(np.mean([-math.log2(max(popularity.get(i, 0.0), 1.0) / total) for i in top]))


def popularity_percentiles(popularity: Mapping[str, float]) -> dict[str, float]:
    """Each item's popularity percentile in [0, 1] (share of items strictly less popular; ties share a value)."""
    values = np.array(sorted(popularity.values()))
    n = len(values)
    return {i: float(np.searchsorted(values, v, side="left") / max(n - 1, 1)) for i, v in popularity.items()}


def popularity_bias(ranking: Ranking, percentiles: Mapping[str, float], k: int) -> float | None:
    """Mean popularity percentile of the top ``k`` (items absent from the log count as 0)."""
    top = _top(ranking, k)
    return float(np.mean([percentiles.get(i, 0.0) for i in top])) if top else None


# ------------------------------------------------------------------------------------------------ LLM behaviour, cost
def _sum(records: Sequence[Mapping[str, Any]], key: str) -> float:
    return float(sum(r.get(key) or 0 for r in records))


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def llm_failure_rates(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Failure rates over per-case records (keys as written by the runner: ``llm_calls``, ``parse_failures``,
    ``off_candidate``, ``duplicates``, ``appended_missing``, ``fallback_reason``, ``grounded`` (list of
    True/False/None per returned item), ``agreement``, ``ranked``).

    - parse_failure_rate: parse failures per LLM ranking call;
    - off_candidate_rate / duplicate_rate / appended_rate: per returned item;
    - fallback_rate: share of cases that fell back; fallback_by_reason: that share per reason (the reason's
      text before the first ':');
    - grounding_rate: grounded justifications / checked justifications;
    - position_agreement: mean Kendall tau between candidate orders (None with a single order);
      position_sensitivity = 1 - agreement;
    - llm_feature_missing_rate: share of cases of the learned ranker with the LLM feature whose LLM score was
      missing (the pass fell back: ``llm_feature_missing``); None for arms without that feature.
    """
    n = len(records)
    items = float(sum(len(r.get("ranked") or []) for r in records))
    reasons = Counter(str(r["fallback_reason"]).split(":", 1)[0] for r in records if r.get("fallback_reason"))
    checked = [g for r in records for g in (r.get("grounded") or []) if g is not None]
    agreements = [float(r["agreement"]) for r in records if r.get("agreement") is not None]
    agreement = float(np.mean(agreements)) if agreements else None
    return {
        "parse_failure_rate": _ratio(_sum(records, "parse_failures"), _sum(records, "llm_calls")),
        "off_candidate_rate": _ratio(_sum(records, "off_candidate"), items),
        "duplicate_rate": _ratio(_sum(records, "duplicates"), items),
        "appended_rate": _ratio(_sum(records, "appended_missing"), items),
        "fallback_rate": _ratio(float(sum(reasons.values())), n),
        "fallback_by_reason": {k: v / n for k, v in sorted(reasons.items())} if n else {},
        "grounding_rate": _ratio(float(sum(bool(g) for g in checked)), len(checked)),
        "position_agreement": agreement,
        "position_sensitivity": None if agreement is None else 1.0 - agreement,
        "llm_feature_missing_rate": _feature_missing_rate(records),
    }


def _feature_missing_rate(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Share of learned-ranker cases whose LLM feature was missing; None when no case used that feature (the
    runner writes ``llm_feature_missing`` only for the learned strategy with ``ltr_llm_strategy`` set)."""
    used = [r for r in records if "llm_feature_missing" in r]
    return _ratio(float(sum(bool(r.get("llm_feature_missing")) for r in used)), len(used))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation), None for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def cost_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Tokens per case (mean, total) and latency per case (p50/p95 of ``latency_ms``)."""
    n = len(records)
    latencies = [float(r["latency_ms"]) for r in records if r.get("latency_ms") is not None]
    return {
        "prompt_tokens_mean": _ratio(_sum(records, "prompt_tokens"), n),
        "completion_tokens_mean": _ratio(_sum(records, "completion_tokens"), n),
        "prompt_tokens_total": _sum(records, "prompt_tokens"),
        "completion_tokens_total": _sum(records, "completion_tokens"),
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p95": percentile(latencies, 95),
    }
