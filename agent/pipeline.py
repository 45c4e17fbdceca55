"""The Recommender: the one entry point the chat, the HTTP server and the evaluator call.

    request (user id / history, free-text need, likes, dislikes, constraints)
      -> candidate sources fused (retrieval.CandidateGenerator over a Chroma collection)
      -> LLM ranking + grounded justifications (agent.rerank.rank_many), with fallbacks
      -> Recommendation (ranked items with titles, scores, sources, justifications, timings, tokens, versions)

Heavy parts (embedder, store, engine, interaction log) are built lazily from the settings and reused, or passed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.errors import InputError, RecagentError
from agent.llm.base import LLMEngine
from agent.rerank import rank_many
from agent.schemas import CandidateItem, RankedItem, RankingContext, RerankResult, UserContext
from agent.settings import Settings
from prompts import PromptRegistry
from retrieval.candidates import CandidateGenerator
from retrieval.embed import Embedder, make_embedder
from retrieval.interactions import Interactions, read_interactions
from retrieval.store import ItemCollection, Store
from retrieval.types import Candidate, Constraints, HistoryEntry, Item, SourceHit, UserQuery

log = logging.getLogger(__name__)

Strategy = Literal["retrieval", "listwise", "options", "pointwise"]


class RecommendRequest(BaseModel):
    """What a caller asks for. ``user_id`` pulls the history from the interaction log when ``history`` is empty."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list, description="Past interactions (item ids).")
    query: str | None = Field(None, max_length=4000, description="Free-text need, e.g. 'a light comedy from the 90s'.")
    liked: list[str] = Field(default_factory=list, description="Item ids the user likes (seeds for similarity).")
    disliked: list[str] = Field(default_factory=list, description="Item ids never to recommend.")
    constraints: Constraints = Field(default_factory=Constraints)
    exclude: list[str] = Field(default_factory=list, description="More item ids never to recommend.")
    k: int = Field(10, ge=1, le=100)
    strategy: Strategy | None = Field(None, description="Overrides the configured ranking strategy.")
    n_candidates: int | None = Field(None, ge=1, le=500, description="Fused candidates given to the ranker.")
    candidates: list[str] | None = Field(
        None,
        max_length=500,
        description="Rank exactly these item ids (in this order) instead of retrieving them (evaluation protocols).",
    )


class RecommendedItem(RankedItem):
    """A ranked item with the catalog fields a reader needs."""

    title: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class Recommendation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[RecommendedItem]
    strategy: str
    fallback_reason: str | None = None
    candidates: int = Field(description="Fused candidates the ranker saw.")
    candidate_ids: list[str] = Field(default_factory=list, description="Fused candidates, retrieval order.")
    history_used: int = 0
    prompt_versions: list[str] = Field(default_factory=list)
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    agreement: float | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    rerank: RerankResult


class Recommender:
    """Composes retrieval, ranking and explanation. Parts not given are built from ``settings`` on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: LLMEngine | None = None,
        embedder: Embedder | None = None,
        store: Store | None = None,
        collection: str | None = None,
        interactions: Interactions | None = None,
        registry: PromptRegistry | None = None,
    ) -> None:
        self.settings = settings
        self._engine = engine
        self._engine_error: str | None = None
        self._embedder = embedder
        self._store = store
        self.collection_name = collection or settings.collection
        self._interactions = interactions
        self.registry = registry or PromptRegistry()

    # -- lazily built parts -----------------------------------------------------------------------------------
    @cached_property
    def embedder(self) -> Embedder:
        return self._embedder or make_embedder(self.settings.embed_config(progress=False))

    @cached_property
    def store(self) -> Store:
        return self._store or Store(self.settings.store_config())

    @cached_property
    def collection(self) -> ItemCollection:
        if not self.store.has_collection(self.collection_name):
            raise InputError(
                f"collection {self.collection_name!r} does not exist in {self.store.location}",
                hint="ingest a catalog first (`recagent ingest PATH --collection NAME`) or set RECAGENT_COLLECTION",
            )
        coll = self.store.open_for(self.embedder, self.collection_name)
        if coll.count() == 0:
            raise InputError(
                f"collection {self.collection_name!r} is empty", hint="ingest a catalog with `recagent ingest PATH`"
            )
        return coll

    @cached_property
    def interactions(self) -> Interactions | None:
        if self._interactions is not None:
            return self._interactions
        path = self.settings.interactions
        return read_interactions(Path(path)) if path else None

    @cached_property
    def generator(self) -> CandidateGenerator:
        return CandidateGenerator.default(
            self.collection, self.embedder, self.interactions, self.settings.fusion_config()
        )

    def engine(self) -> LLMEngine | None:
        """The LLM engine, or None (with the reason kept) when it cannot be started: requests then fall back."""
        if self._engine is None and self._engine_error is None:
            from agent.llm import create_engine

            try:
                self._engine = create_engine(self.settings)
            except RecagentError as exc:
                self._engine_error = exc.message
                log.warning("LLM engine unavailable, falling back to retrieval order: %s", exc)
        return self._engine

    # -- one request ------------------------------------------------------------------------------------------
    def _query(self, req: RecommendRequest) -> UserQuery:
        history = list(req.history)
        if not history and req.user_id is not None and self.interactions is not None:
            history = self.interactions.history(req.user_id)
        if not history and not req.query and not req.liked and req.user_id is not None and self.interactions is None:
            raise InputError(
                f"no history for user {req.user_id!r}: no interaction log is configured",
                hint="set RECAGENT_INTERACTIONS to a ratings file, or give --query / --like",
            )
        return UserQuery(
            user_id=req.user_id,
            history=history,
            need=req.query,
            liked=req.liked,
            disliked=req.disliked,
            constraints=req.constraints,
            exclude=req.exclude,
            n=req.n_candidates,
        )

    def _context(self, req: RecommendRequest, query: UserQuery) -> tuple[RankingContext, dict[str, Item]]:
        if req.candidates is not None:
            excluded = query.excluded_ids()
            ids = [i for i in dict.fromkeys(req.candidates) if i not in excluded]
            n = max(len(ids), 1)
            candidates = [
                Candidate(item_id=i, score=(n - r) / n, sources={"given": SourceHit(rank=r + 1, score=(n - r) / n)})
                for r, i in enumerate(ids)
            ]
        else:
            candidates = self.generator.generate(query)
        wanted = [c.item_id for c in candidates]
        history_ids = [h.item_id for h in query.history[-50:]] + list(query.liked)
        items = self.collection.get_items(list(dict.fromkeys(wanted + history_ids)))
        user = UserContext.from_query(query, items)
        overrides: dict[str, Any] = {"strategy": req.strategy} if req.strategy else {}
        config = self.settings.rerank_config(**overrides)
        ctx = RankingContext(user=user, candidates=CandidateItem.pair(items, candidates), k=req.k, config=config)
        return ctx, items

    def recommend(self, request: RecommendRequest) -> Recommendation:
        return self.recommend_many([request])[0]

    def recommend_many(self, requests: Sequence[RecommendRequest]) -> list[Recommendation]:
        """Several requests; their LLM work goes to the engine in one batch per stage."""
        started = time.perf_counter()
        prepared = []
        for req in requests:
            t0 = time.perf_counter()
            query = self._query(req)
            ctx, items = self._context(req, query)
            prepared.append((req, ctx, items, len(query.history), (time.perf_counter() - t0) * 1000))
        contexts = [p[1] for p in prepared]
        needs_llm = any(c.config.strategy != "retrieval" or c.config.explain == "llm" for c in contexts)
        engine = self.engine() if needs_llm else self._engine
        t_rank = time.perf_counter()
        results = rank_many(engine, self.registry, contexts)  # falls back itself on engine problems
        rank_ms = (time.perf_counter() - t_rank) * 1000
        out = []
        for (_req, ctx, items, n_hist, retrieve_ms), result in zip(prepared, results, strict=True):
            reason = result.fallback_reason
            if reason and self._engine_error and engine is None:
                reason = f"engine_error: {self._engine_error}"
            out.append(
                Recommendation(
                    items=[
                        RecommendedItem(
                            **r.model_dump(), title=items[r.item_id].title, metadata=dict(items[r.item_id].metadata)
                        )
                        for r in result.items
                    ],
                    strategy=result.strategy,
                    fallback_reason=reason,
                    candidates=len(ctx.candidates),
                    candidate_ids=[c.id for c in ctx.candidates],
                    history_used=n_hist,
                    prompt_versions=result.prompt_versions,
                    model=engine.model_id if engine is not None else None,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    agreement=result.agreement,
                    timings_ms={
                        "retrieve": round(retrieve_ms, 1),
                        "rank_batch": round(rank_ms, 1),
                        "total_batch": round((time.perf_counter() - started) * 1000, 1),
                        **{k: round(v, 1) for k, v in result.timings_ms.items()},
                    },
                    rerank=result,
                )
            )
        return out

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
