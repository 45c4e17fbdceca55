"""Validation of the embedder: retrieval recall@K and MRR over the whole catalog, in memory (numpy, no Chroma).

For each validation user (:class:`~train.embed_pairs.ValTarget`) the query is the mean of the L2-normalised
embeddings of the last ``history`` items before the target, renormalised; every catalog item is scored by dot
product, the items the user saw before the target are excluded, and the target's rank gives recall@K (share of users
whose target is in the top K) and MRR (mean reciprocal rank over the full ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from train.embed_pairs import ValTarget

__all__ = ["KS", "RecallEvaluator", "better", "retrieval_metrics"]

KS = (20, 50)
PRIMARY = "recall@20"


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def retrieval_metrics(
    vectors: np.ndarray, item_ids: Sequence[str], targets: Sequence[ValTarget], ks: Sequence[int] = KS
) -> dict[str, float]:
    """recall@K for ``ks`` and MRR of ``targets`` against the item ``vectors`` (rows in ``item_ids`` order)."""
    index = {item: row for row, item in enumerate(item_ids)}
    items = _normalize(np.asarray(vectors, dtype=np.float32))
    ranks: list[int] = []
    for case in targets:
        rows = [index[i] for i in case.history if i in index]
        if case.target not in index or not rows:
            ranks.append(len(item_ids) + 1)  # unrankable: counts as a miss
            continue
        query = _normalize(items[rows].mean(axis=0))
        scores = items @ query
        excluded = [index[i] for i in case.seen if i in index]
        scores[excluded] = -np.inf
        target_score = scores[index[case.target]]
        ranks.append(int(np.sum(scores > target_score)) + 1)
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
    ) -> None:
        super().__init__()
        self.item_ids = list(item_ids)
        self.documents = list(documents)
        self.targets = list(targets)
        self.batch_size = batch_size
        self.ks = tuple(ks)
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
        metrics = retrieval_metrics(np.asarray(vectors), self.item_ids, self.targets, self.ks)
        self.calls += 1
        self.seconds += time.perf_counter() - started
        return metrics
