"""The ``ease`` source: EASE (Steck 2019), a linear item-item model with a closed form.

With ``X`` the binary users x items matrix, ``P = (X^T X + l2 I)^-1`` and ``B = I - P diag(1/diag(P))`` (so
``B_ij = -P_ij / P_jj`` off the diagonal and ``diag(B) = 0``); a user's scores are ``x_u B``. ``B`` is dense:
``n^2`` floats, and the fit peaks at about 32 bytes per ``n^2`` (float64 Gram matrix, inverse, LAPACK's copy).
Up to ``max_items`` interacted items the model covers them all; above it, only the ``max_items`` most interacted
items get a dense row/column. The others (the tail) get sparse EASE columns fitted on their ``tail_neighbors`` most
co-occurring items (:mod:`retrieval.ease_tail`; ``tail_neighbors`` 0: they score 0, the earlier plan); tail items
in the history still count for nothing in the dense scores. The memory and time of the fit are measured in
docs/benchmarks.md (bench/learned_sources.py, bench/ease_tail.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from retrieval.ease_tail import fit_tail, tail_matrix
from retrieval.fitcache import Arrays, FitCache
from retrieval.interactions import Interactions
from retrieval.seqsource import LogItemSource

log = logging.getLogger(__name__)

__all__ = ["EaseConfig", "EaseSource", "fit_ease"]


class EaseConfig(BaseModel):
    """Settings of the EASE source (l2 chosen on the validation part, docs/retrieval.md)."""

    model_config = ConfigDict(extra="forbid")

    l2: float = Field(50.0, gt=0, description="L2 regularisation lambda added to the Gram matrix's diagonal.")
    max_items: int = Field(
        12_000,
        ge=2,
        description="Most interacted items the dense model covers (measured peak memory ~32 bytes * n^2: 12,000 -> "
        "~4.3 GiB; docs/benchmarks.md); items beyond get sparse columns (tail_neighbors).",
    )
    tail_neighbors: int = Field(
        100,
        ge=0,
        description="Above max_items: each other item's EASE column is fitted on its this many most co-occurring "
        "items (a k x k ridge system per item; docs/benchmarks.md); 0 = those items score 0.",
    )

    def cache_settings(self, n_active: int) -> dict[str, object]:
        """The settings that shape the fit of a log with ``n_active`` interacted items (the cache key): the tail's
        only matter above ``max_items``."""
        out = self.model_dump(mode="json")
        if n_active <= self.max_items:
            out.pop("tail_neighbors")
        return out


def fit_ease(interactions: Interactions, config: EaseConfig) -> Arrays:
    """``{"items": log item indices covered, "weights": B (float32, len(items) x len(items))}``."""
    matrix = interactions.matrix(binary=True).tocsc()
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    active = np.nonzero(counts > 0)[0]
    if len(active) > config.max_items:
        order = np.lexsort((active, -counts[active]))  # most interacted first, ties by index
        active = np.sort(active[order[: config.max_items]])
        log.info("EASE: %d interacted items, the %d most interacted are modelled", len(counts), config.max_items)
    sub = matrix[:, active]
    gram = np.asarray((sub.T @ sub).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += config.l2
    inverse = np.linalg.inv(gram)
    del gram
    weights = inverse / (-np.diag(inverse))[None, :]
    np.fill_diagonal(weights, 0.0)
    out: Arrays = {"items": active.astype(np.int64), "weights": weights.astype(np.float32)}
    interacted = np.nonzero(counts > 0)[0]
    tail = np.setdiff1d(interacted, active)
    if len(tail) and config.tail_neighbors > 0:
        out.update(fit_tail(matrix, interacted, tail, config.l2, config.tail_neighbors, progress=len(tail) > 1000))
    return out


class EaseSource(LogItemSource):
    """Items a linear model of the whole log predicts from the user's set of items."""

    name = "ease"

    def __init__(
        self,
        interactions: Interactions,
        config: EaseConfig | None = None,
        *,
        cache_dir: Path | None = None,
        fingerprint: str | None = None,
    ) -> None:
        super().__init__(interactions, fingerprint)
        self.config = config or EaseConfig()
        n_active = int(np.count_nonzero(np.bincount(interactions.items, minlength=interactions.n_items)))
        fitted = FitCache(cache_dir).get_or_fit(
            self.fingerprint, self.config.cache_settings(n_active), lambda: fit_ease(interactions, self.config)
        )
        self.origin = fitted.origin
        self.items, self.weights = fitted.arrays["items"], fitted.arrays["weights"]
        arrays = fitted.arrays
        if len(self.items) and int(self.items.max()) >= interactions.n_items:
            self.origin = "fit"  # a cached state that cannot belong to this log: refit
            arrays = fit_ease(interactions, self.config)
            self.items, self.weights = arrays["items"], arrays["weights"]
        self.tail_items = arrays.get("tail_items", np.zeros(0, np.int64))
        self.tail = tail_matrix(arrays, interactions.n_items)
        self.position = np.full(interactions.n_items, -1, dtype=np.int64)
        self.position[self.items] = np.arange(len(self.items))

    def raw_scores(self, indices: np.ndarray) -> np.ndarray:
        rows = np.unique(self.position[indices])
        rows = rows[rows >= 0]
        out = np.zeros(self.interactions.n_items)
        if len(rows):
            out[self.items] = self.weights[rows].sum(axis=0, dtype=np.float64)
        if self.tail is not None:
            out[self.tail_items] = np.asarray(self.tail[np.unique(indices)].sum(axis=0), dtype=np.float64).ravel()
        return out
