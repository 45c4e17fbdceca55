"""Candidate sources and their fusion.

Every source has one method, ``retrieve(request) -> [(item_id, score), ...]`` (best first, at most ``request.k``,
never an excluded or disallowed item). Chroma sources apply the constraints as a ``where`` filter; the others
post-filter on ``request.allowed`` (the ids matching the same filter). :func:`rrf_fuse` merges the lists with
weighted reciprocal-rank fusion and :class:`CandidateGenerator` runs the whole thing for a :class:`UserQuery`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from retrieval.config import FusionConfig
from retrieval.embed import Embedder, LangChainEmbeddings
from retrieval.interactions import Interactions
from retrieval.store import ItemCollection, chroma_errors
from retrieval.types import Candidate, SourceHit, UserQuery, Where

if TYPE_CHECKING:
    from retrieval.learned import LearnedSourcesConfig

Scored = list[tuple[str, float]]


@dataclass(frozen=True)
class SourceRequest:
    """What a source is asked: the query, how many results, and what it may return."""

    query: UserQuery
    k: int
    where: Where | None = None
    allowed: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()

    def keep(self, item_id: str) -> bool:
        return item_id not in self.exclude and (self.allowed is None or item_id in self.allowed)

    def fetch_size(self, available: int) -> int:
        """How many results to ask a vector index for so that ``k`` survive the exclusions."""
        return max(0, min(available, self.k + len(self.exclude)))


@runtime_checkable
class CandidateSource(Protocol):
    name: str

    def retrieve(self, request: SourceRequest) -> Scored: ...


def seed_weights(
    query: UserQuery, *, like_threshold: float = 4.0, half_life: float = 20.0, max_seeds: int = 20
) -> dict[str, float]:
    """Weights of the items a user liked, used as seeds by the item-to-item sources.

    History entries rated >= ``like_threshold`` (or unrated: implicit feedback) weigh ``1 + rating - threshold``,
    halved every ``half_life`` interactions back in time; if nothing reaches the threshold, entries at or above the
    user's mean rating are used instead. Items liked in the conversation (``query.liked``) weigh 2. The
    ``max_seeds`` heaviest are kept.
    """
    history = sorted(enumerate(query.history), key=lambda p: (p[1].timestamp or 0, p[0]))
    entries = [h for _, h in history]
    rated = [h.rating for h in entries if h.rating is not None]
    threshold = like_threshold
    if rated and not any(r >= like_threshold for r in rated) and not any(h.rating is None for h in entries):
        threshold = sum(rated) / len(rated)
    weights: dict[str, float] = {}
    n = len(entries)
    for position, entry in enumerate(entries):
        if entry.rating is not None and entry.rating < threshold:
            continue
        base = 1.0 if entry.rating is None else 1.0 + (entry.rating - threshold)
        recency = 0.5 ** ((n - 1 - position) / half_life) if half_life > 0 else 1.0
        weights[entry.item_id] = max(weights.get(entry.item_id, 0.0), base * recency)
    for item_id in query.liked:
        weights[item_id] = max(weights.get(item_id, 0.0), 2.0)
    for item_id in query.disliked:
        weights.pop(item_id, None)
    top = sorted(weights.items(), key=lambda kv: -kv[1])[:max_seeds]
    return dict(top)


def _top_k(scores: np.ndarray, ids: Sequence[str], request: SourceRequest) -> Scored:
    """Best ``request.k`` positive scores whose ids the request keeps."""
    nonzero = np.nonzero(scores > 0)[0]
    order = nonzero[np.argsort(-scores[nonzero], kind="stable")]
    out: Scored = []
    for index in order:
        item_id = ids[int(index)]
        if request.keep(item_id):
            out.append((item_id, float(scores[index])))
            if len(out) >= request.k:
                break
    return out


class SemanticSource:
    """Free-text need -> nearest item documents, through LangChain's Chroma vector store (``where`` applied)."""

    name = "semantic"

    def __init__(self, collection: ItemCollection, embedder: Embedder) -> None:
        from langchain_chroma import Chroma

        collection.check_embedder(embedder)
        self.collection = collection
        with chroma_errors(f"opening {collection.name!r} through LangChain"):
            self.vectorstore = Chroma(
                client=collection.store.client,
                collection_name=collection.name,
                embedding_function=LangChainEmbeddings(embedder),
                create_collection_if_not_exists=False,
            )

    def retrieve(self, request: SourceRequest) -> Scored:
        need = request.query.need
        n = request.fetch_size(self.collection.count())
        if not need or n == 0:
            return []
        with chroma_errors(f"searching {self.collection.name!r}", hint="check the constraint field names and types"):
            found = self.vectorstore.similarity_search_with_score(need, k=n, filter=request.where)
        out: Scored = []
        for doc, distance in found:
            if doc.id is not None and request.keep(doc.id):
                out.append((doc.id, 1.0 - float(distance)))
        return out[: request.k]


class ProfileSource(SemanticSource):
    """The user's LLM-written profile text (``query.profile``, agent/profiles.py) -> nearest item documents.

    Like :class:`SemanticSource` with the profile instead of the need; returns nothing when there is no profile.
    Off by default (fusion weight 0): the pipeline writes profiles only when this source is on."""

    name = "profile"

    def retrieve(self, request: SourceRequest) -> Scored:
        profile = request.query.profile
        if not profile:
            return []
        n = request.fetch_size(self.collection.count())
        if n == 0:
            return []
        with chroma_errors(f"searching {self.collection.name!r}", hint="check the constraint field names and types"):
            found = self.vectorstore.similarity_search_with_score(profile, k=n, filter=request.where)
        out: Scored = []
        for doc, distance in found:
            if doc.id is not None and request.keep(doc.id):
                out.append((doc.id, 1.0 - float(distance)))
        return out[: request.k]


class ItemToItemSource:
    """Neighbours (stored embeddings) of the items the user liked, weighted by rating and recency."""

    name = "item2item"

    def __init__(self, collection: ItemCollection, *, like_threshold: float = 4.0, half_life: float = 20.0,
                 max_seeds: int = 20) -> None:  # fmt: skip
        self.collection = collection
        self.like_threshold, self.half_life, self.max_seeds = like_threshold, half_life, max_seeds

    def retrieve(self, request: SourceRequest) -> Scored:
        seeds = seed_weights(
            request.query, like_threshold=self.like_threshold, half_life=self.half_life, max_seeds=self.max_seeds
        )
        vectors = self.collection.get_embeddings(list(seeds))
        if not vectors:
            return []
        ids = list(vectors)
        n = request.fetch_size(self.collection.count())
        results = self.collection.query(np.stack([vectors[i] for i in ids]), n, where=request.where)
        total = sum(seeds[i] for i in ids)
        scores: dict[str, float] = {}
        for seed, hits in zip(ids, results, strict=True):
            for item_id, similarity in hits:
                if item_id not in seeds and request.keep(item_id):
                    scores[item_id] = scores.get(item_id, 0.0) + seeds[seed] * similarity / total
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        return best[: request.k]


class CollaborativeSource:
    """Item-item cosine over the user-item interaction matrix, summed over the user's weighted history.

    ``score(i) = sum_j w_j cos(i, j)`` is computed as ``Xn^T (Xn w)`` with ``Xn`` the column-normalised matrix,
    two sparse products and no item-item matrix.
    """

    name = "collab"

    def __init__(self, interactions: Interactions, *, min_rating: float | None = None, like_threshold: float = 4.0,
                 half_life: float = 20.0, max_seeds: int = 50) -> None:  # fmt: skip
        self.interactions = interactions
        self.like_threshold, self.half_life, self.max_seeds = like_threshold, half_life, max_seeds
        matrix = interactions.matrix(min_rating=min_rating, binary=True)
        norms = np.sqrt(np.asarray(matrix.power(2).sum(axis=0)).ravel())
        inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self.xn = sp.csr_matrix(matrix @ sp.diags(inverse.astype(np.float32)))
        self.xnt = sp.csr_matrix(self.xn.T)

    def scores(self, weights: Mapping[str, float]) -> np.ndarray:
        index = self.interactions.item_index
        h = np.zeros(self.interactions.n_items, np.float32)
        for item_id, weight in weights.items():
            if item_id in index:
                h[index[item_id]] = weight
        return np.asarray(self.xnt @ (self.xn @ h)).ravel()

    def retrieve(self, request: SourceRequest) -> Scored:
        seeds = seed_weights(
            request.query, like_threshold=self.like_threshold, half_life=self.half_life, max_seeds=self.max_seeds
        )
        if not any(s in self.interactions.item_index for s in seeds):
            return []
        scores = self.scores(seeds)
        for seed in seeds:
            if seed in self.interactions.item_index:
                scores[self.interactions.item_index[seed]] = 0.0
        return _top_k(scores, self.interactions.item_ids, request)


class PopularitySource:
    """Most-interacted items overall, or within the constraints (post-filter on ``request.allowed``)."""

    name = "popularity"

    def __init__(self, interactions: Interactions, *, min_rating: float | None = None) -> None:
        self.interactions = interactions
        counts = interactions.popularity(min_rating=min_rating)
        self.counts = counts.astype(np.float64)

    def retrieve(self, request: SourceRequest) -> Scored:
        return _top_k(self.counts, self.interactions.item_ids, request)


def rrf_fuse(
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    *,
    weights: Mapping[str, float] | None = None,
    rrf_k: int = 60,
    n: int = 50,
    exclude: Iterable[str] = (),
) -> list[Candidate]:
    """Weighted reciprocal-rank fusion: ``score(d) = sum_s w_s / (rrf_k + rank_s(d))``, ranks from 1.

    Each source's list is de-duplicated (first occurrence kept) after removing ``exclude``; a source missing from
    ``weights`` weighs 1, a weight of 0 drops the source. Ties go to the better best rank, then to the id.
    """
    excluded = set(exclude)
    weights = weights or {}
    fused: dict[str, float] = {}
    hits: dict[str, dict[str, SourceHit]] = {}
    for source, ranked in rankings.items():
        weight = float(weights.get(source, 1.0))
        if weight == 0:
            continue
        seen: set[str] = set()
        rank = 0
        for item_id, score in ranked:
            if item_id in excluded or item_id in seen:
                continue
            seen.add(item_id)
            rank += 1
            fused[item_id] = fused.get(item_id, 0.0) + weight / (rrf_k + rank)
            hits.setdefault(item_id, {})[source] = SourceHit(rank=rank, score=_finite(score))
    order = sorted(fused, key=lambda i: (-fused[i], min(h.rank for h in hits[i].values()), i))
    return [Candidate(item_id=i, score=fused[i], sources=hits[i]) for i in order[:n]]


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


class CandidateGenerator:
    """Runs the sources for a :class:`UserQuery` and fuses their lists."""

    def __init__(
        self,
        collection: ItemCollection,
        sources: Sequence[CandidateSource],
        fusion: FusionConfig | None = None,
        *,
        restrict_to_catalog: bool = True,
    ) -> None:
        self.collection = collection
        self.sources = list(sources)
        self.fusion = fusion or FusionConfig()
        self.restrict_to_catalog = restrict_to_catalog
        self._allowed_cache: dict[str, frozenset[str]] = {}

    @classmethod
    def default(
        cls,
        collection: ItemCollection,
        embedder: Embedder,
        interactions: Interactions | None = None,
        fusion: FusionConfig | None = None,
        *,
        learned: LearnedSourcesConfig | None = None,
        cache_dir: Callable[[str], Path] | None = None,
        sequential_dir: Path | None = None,
        sequential_required: bool = False,
    ) -> CandidateGenerator:
        """semantic + item2item + profile (weight 0 by default), and, when an interaction log is given, collab +
        popularity + the log-learned sources (transition, ease: retrieval/learned.py) whose fusion weight is > 0,
        their fitted state cached in ``cache_dir(kind)``; plus the sequential model in ``sequential_dir`` when that
        folder holds one trained on the log (refused when trained on another log; skipped when its fusion weight is
        0; ``sequential_required``: a folder without a model is an error, not an absent source). Candidates of the
        "generated" source come from the caller (``generate(extra=...)``)."""
        from retrieval.learned import learned_sources  # its sources import this module

        fusion = fusion or FusionConfig()
        sources: list[CandidateSource] = [
            SemanticSource(collection, embedder),
            ItemToItemSource(collection),
            ProfileSource(collection, embedder),
        ]
        if interactions is not None:
            sources += [CollaborativeSource(interactions), PopularitySource(interactions)]
            sources += learned_sources(interactions, fusion.weights, learned, cache_dir)
        if sequential_dir is not None and fusion.weights.get("sequential", 1.0) != 0:
            from retrieval.sequential import open_sequential

            sequential = open_sequential(sequential_dir, interactions, required=sequential_required)
            if sequential is not None:
                sources.append(sequential)
        return cls(collection, sources, fusion)

    @property
    def source_names(self) -> list[str]:
        """Names of the sources this generator runs (before per-call weights)."""
        return [s.name for s in self.sources]

    def allowed_ids(self, where: Where | None) -> frozenset[str] | None:
        """Ids matching ``where`` (all catalog ids when ``where`` is None and results are restricted to the
        catalog); cached per filter. ``None`` means no restriction."""
        if where is None and not self.restrict_to_catalog:
            return None
        key = json.dumps(where, sort_keys=True)
        if key not in self._allowed_cache:
            if len(self._allowed_cache) > 256:
                self._allowed_cache.clear()
            self._allowed_cache[key] = frozenset(self.collection.ids(where=where))
        return self._allowed_cache[key]

    def refresh(self) -> None:
        """Forget cached id sets (call after the collection changed)."""
        self._allowed_cache.clear()

    def _request(self, query: UserQuery, k: int | None = None) -> SourceRequest:
        where = query.constraints.to_where()
        return SourceRequest(
            query=query,
            k=k or query.k_per_source or self.fusion.k,
            where=where,
            allowed=self.allowed_ids(where),
            exclude=frozenset(query.excluded_ids()),
        )

    def run_sources(
        self,
        query: UserQuery,
        *,
        extra: Mapping[str, Sequence[tuple[str, float]]] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> dict[str, Scored]:
        """Each enabled source's ranked list for ``query``. ``extra`` adds ready-made lists (e.g. "generated":
        LLM proposals grounded to catalog ids), filtered like a source's own (exclusions, constraints, catalog);
        ``weights`` overrides the fusion weights for this call."""
        weights = self.fusion.weights if weights is None else weights
        request = self._request(query)
        out: dict[str, Scored] = {}
        for source in self.sources:
            if weights.get(source.name, 1.0) == 0:
                continue
            out[source.name] = source.retrieve(request)
        for name, ranked in (extra or {}).items():
            if weights.get(name, 1.0) == 0:
                continue
            out[name] = [(i, float(s)) for i, s in ranked if request.keep(i)][: request.k]
        return out

    def generate(
        self,
        query: UserQuery,
        *,
        extra: Mapping[str, Sequence[tuple[str, float]]] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> list[Candidate]:
        """Fused candidates: no seen (when ``exclude_seen``), disliked, excluded or constraint-violating item.
        ``extra`` and ``weights`` as in :meth:`run_sources`.

        When the fused list is shorter than asked (a cold user: no history for the log-learned sources, no request
        text) and the popularity source exists but is weighted 0, the list is filled up with the most popular
        remaining items, ranked after every fused one (their only hit is ``popularity``): the fusion weights decide
        the order of what the sources found, never whether a cold user gets an answer."""
        weights = self.fusion.weights if weights is None else weights
        rankings = self.run_sources(query, extra=extra, weights=weights)
        n = query.n or self.fusion.n
        fused = rrf_fuse(rankings, weights=weights, rrf_k=self.fusion.rrf_k, n=n, exclude=query.excluded_ids())
        if len(fused) < n and weights.get("popularity", 1.0) == 0:
            fused += self._popularity_fill(query, fused, n)
        return fused

    def _popularity_fill(self, query: UserQuery, fused: list[Candidate], n: int) -> list[Candidate]:
        source = next((s for s in self.sources if s.name == "popularity"), None)
        if source is None:
            return []
        have = {c.item_id for c in fused}
        ranked = source.retrieve(self._request(query, k=n + len(have)))
        out: list[Candidate] = []
        for rank, (item_id, score) in enumerate(ranked, start=1):
            if item_id not in have and len(fused) + len(out) < n:
                out.append(
                    Candidate(
                        item_id=item_id, score=0.0, sources={"popularity": SourceHit(rank=rank, score=_finite(score))}
                    )
                )
        return out
