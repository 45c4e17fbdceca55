"""Features of a (user, fused candidate) pair for the learned ranker: one module for training and serving.

One row per candidate of a user's fused list, as a ``{name: value}`` dict (a missing value is simply absent and
becomes NaN in the matrix, which the gradient-boosting library treats as "missing"):

- ``fused.score``, ``fused.rank``, ``fused.n_sources``: the fusion's RRF score, the position in the fused list, the
  number of sources that found the candidate;
- ``src.<source>.rank`` / ``src.<source>.score``: every source's rank and score (``Candidate.sources``): generic,
  so a new source of the fusion shows up as new features by itself;
- ``item.pop`` / ``item.pop_recent`` / ``item.mean_rating``: log(1 + interactions) of the item in the log, the same
  over the log's latest tenth (by time), the item's mean rating;
- ``item.days_since_last`` / ``user.days_item_first`` / ``user.days_item_last``: how long before the log's end the
  item was last interacted with, and how old the item was (first / last interaction in the log) at the user's
  latest history entry (logs without timestamps: absent);
- ``user.history``: log(1 + history length);
- ``meta.<field>`` / ``meta.<field>.vs_user``: every numeric metadata field of the item (e.g. year) and its
  difference to the mean over the user's recent history;
- ``sim.mean`` / ``sim.max`` / ``sim.last``: cosine of the item's stored embedding to the mean of the user's recent
  history embeddings, the best one, and the latest one;
- ``llm.score``: the LLM strategy's score, when one ran (absent otherwise).

:func:`feature_matrix` turns rows into a matrix over a fixed list of names (the trained model's), so rows built
with more or fewer sources than at training time still line up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from retrieval.interactions import Interactions
from retrieval.types import Candidate, HistoryEntry, Item

__all__ = ["FeatureBuilder", "ItemSource", "LogStats", "Row", "feature_matrix", "feature_names"]

Row = dict[str, float]
_DAY = 86400.0
_BASE_ORDER = ("fused.", "src.", "item.", "user.", "meta.", "sim.", "llm.")


class ItemSource(Protocol):
    """What the builder reads from a collection (an :class:`~retrieval.store.ItemCollection` fits)."""

    def get_items(self, ids: Sequence[str]) -> dict[str, Item]: ...

    def get_embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class LogStats:
    """Per-item statistics of an interaction log (built once per log)."""

    index: Mapping[str, int]
    pop: np.ndarray
    pop_recent: np.ndarray
    mean_rating: np.ndarray
    first_ts: np.ndarray
    last_ts: np.ndarray
    end_ts: int
    timed: bool

    @classmethod
    def of(cls, log: Interactions, recent_share: float = 0.1) -> LogStats:
        n = log.n_items
        counts = np.bincount(log.items, minlength=n).astype(np.float64)
        ts = log.timestamps
        timed = bool(len(ts)) and bool(np.any(ts != 0))
        cut = float(np.quantile(ts, 1.0 - recent_share)) if timed else math.inf
        recent = np.bincount(log.items[ts >= cut], minlength=n).astype(np.float64)
        rated = ~np.isnan(log.ratings)
        sums = np.bincount(log.items[rated], weights=log.ratings[rated].astype(np.float64), minlength=n)
        n_rated = np.bincount(log.items[rated], minlength=n)
        mean = np.divide(sums, n_rated, out=np.full(n, np.nan), where=n_rated > 0)
        first = np.full(n, np.iinfo(np.int64).max, np.int64)
        last = np.full(n, np.iinfo(np.int64).min, np.int64)
        np.minimum.at(first, log.items, ts)
        np.maximum.at(last, log.items, ts)
        return cls(log.item_index, np.log1p(counts), np.log1p(recent), mean, first, last,
                   int(ts.max()) if len(ts) else 0, timed)  # fmt: skip


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _numeric(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(float(value)) else None


class FeatureBuilder:
    """Builds the feature rows of one user's fused candidates against one log and one collection."""

    def __init__(self, log: Interactions | None, collection: ItemSource, *, recent: int = 10) -> None:
        self.stats = LogStats.of(log) if log is not None and len(log) else None
        self.collection = collection
        self.recent = recent

    def rows(
        self,
        history: Sequence[HistoryEntry],
        candidates: Sequence[Candidate],
        *,
        items: Mapping[str, Item] | None = None,
        llm_scores: Sequence[float] | None = None,
    ) -> list[Row]:
        """One row per candidate (same order). ``history`` is the user's, any order; ``items`` saves a lookup of
        item fields already read; ``llm_scores`` (one per candidate) adds ``llm.score``."""
        ordered = sorted(enumerate(history), key=lambda p: (p[1].timestamp or 0, p[0]))
        recent_ids = list(dict.fromkeys(h.item_id for _, h in reversed(ordered)))[: self.recent]
        cand_ids = [c.item_id for c in candidates]
        wanted = list(dict.fromkeys(cand_ids + recent_ids))
        have = dict(items or {})
        missing = [i for i in wanted if i not in have]
        if missing:
            have.update(self.collection.get_items(missing))
        vectors = self.collection.get_embeddings(wanted)
        user_last = max((h.timestamp or 0 for h in history), default=0)
        base: Row = {"user.history": math.log1p(len(history))}
        meta_mean = self._meta_means([have[i] for i in recent_ids if i in have])
        hist_vecs = [_unit(vectors[i]) for i in recent_ids if i in vectors]
        out = []
        for pos, cand in enumerate(candidates):
            row = dict(base)
            row.update(self._fused(cand, pos))
            row.update(self._log(cand.item_id, user_last))
            item = have.get(cand.item_id)
            if item is not None:
                row.update(self._meta(item, meta_mean))
            vec = vectors.get(cand.item_id)
            if vec is not None and hist_vecs:
                row.update(self._similarity(_unit(vec), hist_vecs))
            if llm_scores is not None:
                row["llm.score"] = float(llm_scores[pos])
            out.append(row)
        return out

    @staticmethod
    def _fused(cand: Candidate, pos: int) -> Row:
        row: Row = {"fused.score": cand.score, "fused.rank": float(pos + 1), "fused.n_sources": len(cand.sources)}
        for name, hit in cand.sources.items():
            row[f"src.{name}.rank"] = float(hit.rank)
            row[f"src.{name}.score"] = float(hit.score)
        return row

    def _log(self, item_id: str, user_last: int) -> Row:
        s = self.stats
        index = s.index.get(item_id) if s is not None else None
        if s is None or index is None:
            return {"item.pop": 0.0, "item.pop_recent": 0.0}
        row: Row = {"item.pop": float(s.pop[index]), "item.pop_recent": float(s.pop_recent[index])}
        if not math.isnan(s.mean_rating[index]):
            row["item.mean_rating"] = float(s.mean_rating[index])
        if s.timed:
            row["item.days_since_last"] = (s.end_ts - int(s.last_ts[index])) / _DAY
            if user_last:
                row["user.days_item_first"] = (user_last - int(s.first_ts[index])) / _DAY
                row["user.days_item_last"] = (user_last - int(s.last_ts[index])) / _DAY
        return row

    @staticmethod
    def _meta_means(history: Sequence[Item]) -> dict[str, float]:
        values: dict[str, list[float]] = {}
        for item in history:
            for key, value in item.metadata.items():
                number = _numeric(value)
                if number is not None:
                    values.setdefault(key, []).append(number)
        return {k: sum(v) / len(v) for k, v in values.items()}

    @staticmethod
    def _meta(item: Item, means: Mapping[str, float]) -> Row:
        row: Row = {}
        for key, value in item.metadata.items():
            number = _numeric(value)
            if number is None:
                continue
            row[f"meta.{key}"] = number
            if key in means:
                row[f"meta.{key}.vs_user"] = number - means[key]
        return row

    @staticmethod
    def _similarity(vec: np.ndarray, history: Sequence[np.ndarray]) -> Row:
        sims = [float(vec @ h) for h in history]
        centre = _unit(np.mean(np.stack(history), axis=0))
        return {"sim.mean": float(vec @ centre), "sim.max": max(sims), "sim.last": sims[0]}


def feature_names(rows: Sequence[Row]) -> list[str]:
    """Every name used in ``rows``, grouped as the module docstring lists them, then sorted."""
    names = {name for row in rows for name in row}

    def key(name: str) -> tuple[int, str]:
        group = next((i for i, p in enumerate(_BASE_ORDER) if name.startswith(p)), len(_BASE_ORDER))
        return group, name

    return sorted(names, key=key)


def feature_matrix(rows: Sequence[Row], names: Sequence[str]) -> np.ndarray:
    """Rows x ``names`` float matrix; NaN where a row lacks a name (names a row has beyond ``names`` are ignored)."""
    out = np.full((len(rows), len(names)), np.nan, np.float64)
    column = {name: j for j, name in enumerate(names)}
    for i, row in enumerate(rows):
        for name, value in row.items():
            j = column.get(name)
            if j is not None:
                out[i, j] = value
    return out
