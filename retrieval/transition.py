"""The ``transition`` source: which items follow which in the users' sequences.

Fit: for every user's interactions in time order and every gap ``g = 1..window``, the pair (item at t, item at
t+g) counts ``gap_decay ** (g - 1)`` (and the reverse pair ``backward`` times that). The counts are normalised by
``normalize``: ``none``; ``source`` (divided by the source item's interactions, an estimate of P(b follows a));
``sqrt`` (divided by sqrt(n_a * n_b), which damps popular targets). Score for a user: the rows of their last
``max_history`` items, the most recent weighing 1 and each step back ``history_decay`` times less.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from retrieval.fitcache import Arrays, FitCache
from retrieval.interactions import Interactions
from retrieval.seqsource import LogItemSource

__all__ = ["TransitionConfig", "TransitionSource", "fit_transitions"]


class TransitionConfig(BaseModel):
    """Settings of the transition source (chosen on the validation part, docs/retrieval.md)."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(5, ge=1, le=50, description="Pairs up to this many steps apart count.")
    gap_decay: float = Field(1.0, gt=0, le=1, description="A pair g steps apart counts gap_decay**(g-1).")
    backward: float = Field(0.3, ge=0, le=1, description="Weight of the reverse pair (b before a); 0 = directed.")
    normalize: Literal["none", "source", "sqrt"] = Field("source", description="Normalisation of the counts.")
    history_decay: float = Field(0.7, gt=0, le=1, description="Each step back in the history weighs this much less.")
    max_history: int = Field(20, ge=1, description="Most recent history items that score.")


def fit_transitions(interactions: Interactions, config: TransitionConfig) -> sp.csr_matrix:
    """Items x items matrix of normalised, gap-decayed transition counts (row: earlier item, column: later)."""
    users, items, n = interactions.users, interactions.items.astype(np.int64), interactions.n_items
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for gap in range(1, config.window + 1):
        if gap >= len(items):
            break
        same = users[:-gap] == users[gap:]
        a, b = items[:-gap][same], items[gap:][same]
        weight = np.full(len(a), config.gap_decay ** (gap - 1))
        rows += [a, b] if config.backward > 0 else [a]
        cols += [b, a] if config.backward > 0 else [b]
        vals += [weight, weight * config.backward] if config.backward > 0 else [weight]
    if not rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    counts = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    matrix = counts.tocsr()
    matrix.sum_duplicates()
    matrix.setdiag(0)
    matrix.eliminate_zeros()
    pop = np.bincount(items, minlength=n).astype(np.float64)
    inv = np.divide(1.0, pop, out=np.zeros(n), where=pop > 0)
    if config.normalize == "source":
        matrix = sp.diags(inv) @ matrix
    elif config.normalize == "sqrt":
        root = np.sqrt(inv)
        matrix = sp.diags(root) @ matrix @ sp.diags(root)
    return sp.csr_matrix(matrix, dtype=np.float32)


def _to_arrays(matrix: sp.csr_matrix) -> Arrays:
    return {"data": matrix.data, "indices": matrix.indices, "indptr": matrix.indptr, "shape": np.array(matrix.shape)}


def _from_arrays(arrays: Arrays) -> sp.csr_matrix:
    shape = tuple(int(s) for s in arrays["shape"])
    return sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)


class TransitionSource(LogItemSource):
    """Items that followed the user's recent items in other users' sequences."""

    name = "transition"

    def __init__(
        self,
        interactions: Interactions,
        config: TransitionConfig | None = None,
        *,
        cache_dir: Path | None = None,
        fingerprint: str | None = None,
    ) -> None:
        super().__init__(interactions, fingerprint)
        self.config = config or TransitionConfig()
        fitted = FitCache(cache_dir).get_or_fit(
            self.fingerprint,
            self.config.model_dump(mode="json"),
            lambda: _to_arrays(fit_transitions(interactions, self.config)),
        )
        self.origin = fitted.origin
        self.matrix = _from_arrays(fitted.arrays)
        if self.matrix.shape != (interactions.n_items, interactions.n_items):
            self.origin = "fit"  # a cached state of another shape cannot belong to this log: refit
            self.matrix = fit_transitions(interactions, self.config)

    def raw_scores(self, indices: np.ndarray) -> np.ndarray:
        recent = indices[-self.config.max_history :]
        weights = self.config.history_decay ** np.arange(len(recent) - 1, -1, -1, dtype=np.float64)
        return np.asarray(self.matrix[recent].T @ weights).ravel()
