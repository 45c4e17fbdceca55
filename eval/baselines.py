"""Non-LLM baselines computed from the train interactions: random, popularity, item-kNN, and the log-learned
candidate sources alone (ease, transition: the same fitted models as retrieval/learned.py, ranking the catalog).

(The embedding-similarity and fused-retrieval baselines run through the Recommender itself; see the runner.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from eval.datasets import EvalCase
from retrieval.interactions import Interactions
from retrieval.learned import LEARNED_SOURCES, LearnedSourcesConfig, build_learned_source
from retrieval.seqsource import LogItemSource, item_sequence
from retrieval.types import UserQuery

__all__ = ["BaselineRanker"]


def _case_seed(seed: int, case_id: str) -> list[int]:
    return [seed, int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "little")]


class BaselineRanker:
    """Ranks catalog items (or a given candidate set) for a case without any LLM."""

    def __init__(
        self,
        catalog_ids: Sequence[str],
        train: Interactions | None,
        *,
        seed: int = 0,
        learned: LearnedSourcesConfig | None = None,
    ) -> None:
        self.catalog = sorted(catalog_ids)
        self.index = {item: i for i, item in enumerate(self.catalog)}
        self.train = train
        self.seed = seed
        self.learned = learned or LearnedSourcesConfig()
        self._sources: dict[str, tuple[LogItemSource, np.ndarray]] = {}
        self.pop = np.zeros(len(self.catalog))
        self._x = None
        if train is not None:
            counts = train.popularity()
            for item_id, count in zip(train.item_ids, counts, strict=True):
                if item_id in self.index:
                    self.pop[self.index[item_id]] = float(count)
            mat = train.matrix().tocsc()
            cols = np.array([self.index.get(i, -1) for i in train.item_ids])
            keep = np.nonzero(cols >= 0)[0]
            import scipy.sparse as sp

            remap = sp.csr_matrix((np.ones(len(keep)), (keep, cols[keep])), shape=(train.n_items, len(self.catalog)))
            self._x = (mat @ remap).tocsr()  # users x catalog items (binary)
            self._norms = np.sqrt(np.asarray(self._x.multiply(self._x).sum(axis=0)).ravel())

    def _blocked(self, case: EvalCase) -> set[str]:
        return {h.item_id for h in case.history} | set(case.liked) | set(case.exclude)

    def scores(self, name: str, case: EvalCase) -> np.ndarray:
        if name == "random":
            return np.random.default_rng(_case_seed(self.seed, case.case_id)).random(len(self.catalog))
        if name == "popularity":
            return self.pop.copy()
        if name == "itemknn":
            return self._itemknn(case)
        if name in LEARNED_SOURCES:
            return self._learned(name, case)
        raise KeyError(name)

    def _learned(self, name: str, case: EvalCase) -> np.ndarray:
        """The log-learned source ``name`` (fitted on the train log once) scoring the catalog; a tiny popularity
        tie-break orders what it does not score."""
        assert self.train is not None, f"the {name} baseline needs train interactions"
        if name not in self._sources:
            source = build_learned_source(name, self.train, self.learned)
            columns = np.array([self.index.get(i, -1) for i in self.train.item_ids], dtype=np.int64)
            self._sources[name] = (source, columns)
        source, columns = self._sources[name]
        query = UserQuery(history=case.history, liked=case.liked)
        log_scores = source.scores(item_sequence(query))
        out = self.pop * 1e-9
        known = columns >= 0
        out[columns[known]] += log_scores[known]
        return out

    def _itemknn(self, case: EvalCase) -> np.ndarray:
        """score_j = sum over history items i of cos(i, j), cosine over the train user-item matrix."""
        assert self._x is not None, "item-kNN needs train interactions"
        seeds = [
            self.index[i] for i in dict.fromkeys([h.item_id for h in case.history] + case.liked) if i in self.index
        ]
        if not seeds:
            return self.pop * 1e-9  # no history: popularity order
        w = np.zeros(len(self.catalog))
        norms = np.maximum(self._norms, 1e-12)
        w[seeds] = 1.0 / norms[seeds]
        co = self._x.T @ (self._x @ w)  # (X^T X w)_j = sum_i co-count(i, j) / n_i
        return np.asarray(co).ravel() / norms + self.pop * 1e-9  # tiny popularity tie-break

    def rank(
        self, name: str, case: EvalCase, k: int, candidates: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top ``k`` (id, score): over ``candidates`` when given, else the catalog minus seen/liked/excluded."""
        scores = self.scores(name, case)
        if candidates is not None:
            pool = [(c, float(scores[self.index[c]])) for c in candidates if c in self.index]
        else:
            blocked = self._blocked(case)
            order = np.argsort(-scores, kind="stable")
            pool = []
            for j in order:
                item = self.catalog[int(j)]
                if item not in blocked:
                    pool.append((item, float(scores[int(j)])))
                    if len(pool) >= k:
                        break
        pool.sort(key=lambda p: (-p[1], p[0]))
        return pool[:k]
