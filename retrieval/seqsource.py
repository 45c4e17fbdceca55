"""What the sources that learn from a log share: the user's item sequence in, a score per log item out.

A :class:`LogItemSource` scores every item of the log it was fitted on from the user's history (oldest first, the
items liked in the conversation last, disliked ones dropped); the items of that history score 0 (never
recommended back), unknown items are ignored, and :func:`retrieval.candidates._top_k` applies the request's
exclusions and constraints. The same ``scores`` serve the evaluator's baselines, so the math exists once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from retrieval.candidates import Scored, SourceRequest, _top_k
from retrieval.fitted import log_fingerprint
from retrieval.interactions import Interactions
from retrieval.types import UserQuery

log = logging.getLogger(__name__)

__all__ = ["LogItemSource", "item_sequence"]


def item_sequence(query: UserQuery) -> list[str]:
    """The user's items oldest first: history by (timestamp, given order), then conversation likes; dislikes
    removed. An item seen twice keeps its latest position."""
    order = sorted(enumerate(query.history), key=lambda p: (p[1].timestamp or 0, p[0]))
    items = [h.item_id for _, h in order] + list(query.liked)
    disliked = set(query.disliked)
    latest = {item: pos for pos, item in enumerate(items)}
    return [item for pos, item in enumerate(items) if latest[item] == pos and item not in disliked]


class LogItemSource:
    """Base of the log-learned sources: ``scores(sequence)`` over ``interactions.item_ids``, seen items at 0."""

    name = "log"

    def __init__(self, interactions: Interactions, fingerprint: str | None = None) -> None:
        self.interactions = interactions
        self.fingerprint = fingerprint or log_fingerprint(interactions)

    def raw_scores(self, indices: np.ndarray) -> np.ndarray:
        """Scores of every log item for the known history items ``indices`` (oldest first); subclasses."""
        raise NotImplementedError

    def scores(self, sequence: Sequence[str]) -> np.ndarray:
        index = self.interactions.item_index
        indices = np.array([index[i] for i in sequence if i in index], dtype=np.int64)
        if len(indices) == 0:
            return np.zeros(self.interactions.n_items)
        out = np.asarray(self.raw_scores(indices), dtype=np.float64).ravel().copy()
        out[indices] = 0.0
        return out

    def retrieve(self, request: SourceRequest) -> Scored:
        sequence = item_sequence(request.query)
        if not any(i in self.interactions.item_index for i in sequence):
            return []
        return _top_k(self.scores(sequence), self.interactions.item_ids, request)
