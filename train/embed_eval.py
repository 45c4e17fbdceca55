"""Validation of the embedder: retrieval recall@K and MRR over the whole catalog, in memory (numpy, no Chroma).

For each validation query (:class:`~train.embed_pairs.ValTarget`) every catalog item is scored in one of two ways:

- ``item2item`` (default): what the pipeline's item-to-item source does (``retrieval.candidates.ItemToItemSource``):
  each seed (the user's liked items, weighted by rating and recency, ``ValTarget.seeds``) retrieves its
  ``fetch_k + len(seen)`` nearest items by cosine, and an item scores the weight-averaged similarity over the seeds
  that retrieved it; an item no seed retrieved is not retrieved (a target there is a miss).
- ``recent``: the mean of the L2-normalised embeddings of the last ``history`` items before the target, renormalised,
  dot product with every item.

The items the user saw before the target are excluded, and the target's rank gives recall@K (share of queries whose
target is in the top K, over queries) and MRR (mean reciprocal rank; a miss counts 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from retrieval.config import FusionConfig
from train.embed_pairs import ValQuery, ValTarget

__all__ = ["KS", "RecallEvaluator", "better", "retrieval_metrics"]

KS = (20, 50)
FETCH_K = FusionConfig().k  # results the pipeline asks of each source
PRIMARY = "recall@20"


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _recent_scores(items: np.ndarray, index: dict[str, int], case: ValTarget) -> np.ndarray | None:
    rows = [index[i] for i in case.history if i in index]
    if not rows:
        return None
    return items @ _normalize(items[rows].mean(axis=0))


def _item2item_scores(items: np.ndarray, index: dict[str, int], case: ValTarget, fetch_k: int) -> np.ndarray | None:
    seeds = [(index[i], w) for i, w in case.seeds if i in index]
    if not seeds:
        return None
    rows = np.asarray([r for r, _ in seeds])
    weights = np.asarray([w for _, w in seeds], dtype=np.float64)
    sims = items @ items[rows].T  # (items, seeds) cosine similarities
    n = min(len(items), fetch_k + len(case.seen))
    total = np.zeros(len(items), dtype=np.float64)
    retrieved = np.zeros(len(items), dtype=bool)
    for col, weight in enumerate(weights):
        top = np.argpartition(-sims[:, col], n - 1)[:n] if n < len(items) else np.arange(len(items))
        total[top] += weight * sims[top, col]
        retrieved[top] = True
    return np.where(retrieved, total / weights.sum(), -np.inf)


def retrieval_metrics(
    vectors: np.ndarray,
    item_ids: Sequence[str],
    targets: Sequence[ValTarget],
    ks: Sequence[int] = KS,
    *,
    query: ValQuery = "item2item",
    fetch_k: int = FETCH_K,
) -> dict[str, float]:
    """recall@K for ``ks`` and MRR of ``targets`` against the item ``vectors`` (rows in ``item_ids`` order), with the
    ``query`` of the module docstring (``item2item`` or ``recent``)."""
    if query not in ("item2item", "recent"):
        raise ValueError(f"unknown validation query {query!r}: use item2item or recent")
    index = {item: row for row, item in enumerate(item_ids)}
    items = _normalize(np.asarray(vectors, dtype=np.float32))
    ranks: list[float] = []
    for case in targets:
        scores = (
            _item2item_scores(items, index, case, fetch_k)
            if query == "item2item"
            else _recent_scores(items, index, case)
        )
        if case.target not in index or scores is None:
            ranks.append(np.inf)  # unrankable: a miss (reciprocal rank 0)
            continue
        excluded = [index[i] for i in case.seen if i in index]
        scores[excluded] = -np.inf
        target_score = scores[index[case.target]]
        ranks.append(np.inf if target_score == -np.inf else int(np.sum(scores > target_score)) + 1)
    arr = np.asarray(ranks, dtype=np.float64)
    out = {f"recall@{k}": float(np.mean(arr <= k)) if len(arr) else 0.0 for k in ks}
    out["mrr"] = float(np.mean(1.0 / arr)) if len(arr) else 0.0
    return {k: round(v, 6) for k, v in out.items()}


def better(a: dict[str, float], b: dict[str, float] | None) -> bool:
    """Whether metrics ``a`` beat ``b``: a higher recall@20, ties broken by a higher MRR."""
    if b is None:
        return True
    return (a[PRIMARY], a["mrr"]) > (b[PRIMARY], b["mrr"])


class RecallEvaluator(SentenceEvaluator):  # type: ignore[misc]
    """A sentence-transformers evaluator (``SentenceEvaluator`` interface) that embeds the catalog documents with
    the model being trained and returns :func:`retrieval_metrics`; ``primary_metric`` is recall@20."""

    def __init__(
        self,
        item_ids: Sequence[str],
        documents: Sequence[str],
        targets: Sequence[ValTarget],
        *,
        batch_size: int = 64,
        ks: Sequence[int] = KS,
        query: ValQuery = "item2item",
        fetch_k: int = FETCH_K,
    ) -> None:
        super().__init__()
        self.item_ids = list(item_ids)
        self.documents = list(documents)
        self.targets = list(targets)
        self.batch_size = batch_size
        self.ks = tuple(ks)
        self.query, self.fetch_k = query, fetch_k
        self.greater_is_better = True
        self.primary_metric = PRIMARY
        self.calls = 0
        self.seconds = 0.0

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1
    ) -> dict[str, float]:
        import time

        import torch

        started = time.perf_counter()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            vectors = model.encode(
                self.documents,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        if was_training:
            model.train()
        metrics = retrieval_metrics(
            np.asarray(vectors), self.item_ids, self.targets, self.ks, query=self.query, fetch_k=self.fetch_k
        )
        self.calls += 1
        self.seconds += time.perf_counter() - started
        return metrics
