"""Full-catalog next-item metrics of the sequential model: every item ranked, the history masked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from retrieval.seqmodel import SASRec, right_aligned

__all__ = ["next_item_metrics", "target_ranks"]


@torch.no_grad()
def target_ranks(
    model: SASRec, histories: Sequence[Sequence[int]], targets: Sequence[int], *, batch_size: int = 256
) -> np.ndarray:
    """0-based rank of each target token among all items (history items masked, ties counted against the target)."""
    was_training = model.training
    model.eval()
    ranks = np.zeros(len(targets), np.int64)
    length = model.config.max_len
    for start in range(0, len(targets), batch_size):
        hist = histories[start : start + batch_size]
        tokens = torch.from_numpy(right_aligned(hist, length))
        scores = model.next_item_logits(tokens)
        for row, seq in enumerate(hist):
            seen = torch.tensor(sorted(set(seq)), dtype=torch.long) - 1
            scores[row, seen] = -torch.inf
        target = torch.tensor(targets[start : start + batch_size], dtype=torch.long) - 1
        own = scores.gather(1, target[:, None])
        ranks[start : start + len(hist)] = (scores >= own).sum(dim=1).numpy() - 1
    model.train(was_training)
    return ranks


def next_item_metrics(ranks: np.ndarray, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """NDCG@k and Recall@k (= hit rate: one target per user) from 0-based target ranks, and the MRR."""
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)))
        out[f"recall@{k}"] = float(np.mean(hit))
    out["mrr"] = float(np.mean(1.0 / (ranks + 1.0)))
    return out
