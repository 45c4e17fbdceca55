"""The Recommender: the one entry point the chat, the HTTP server and the evaluator call.

    request (user id / history, free-text need, likes, dislikes, constraints)
      -> [LLM candidate sources, when their fusion weight is > 0: a user profile (agent.profiles) queried as
          text, and proposals grounded to catalog items (agent.ground); one engine batch each]
      -> candidate sources fused (retrieval.CandidateGenerator over a Chroma collection)
      -> LLM ranking + grounded justifications (agent.rerank.rank_many), with fallbacks
      -> Recommendation (ranked items with titles, scores, sources, justifications, timings, tokens, versions)

Heavy parts (embedder, store, engine, interaction log) are built lazily from the settings and reused, or passed in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from agent.errors import ConfigError, InputError, RecagentError
from agent.explain import ExplainRequest
from agent.ground import Grounder, GroundReport, propose_and_ground
from agent.later import JustificationEvent, defer, justify_events, pending_requests
from agent.llm.base import LLMEngine
from agent.llm.cache import GenerationCache
from agent.profiles import CACHE_FILE as PROFILE_CACHE_FILE
from agent.profiles import ProfileText, build_profiles, source_weight
from agent.request_check import empty_result_warnings, request_warnings
from agent.rerank import rank_many
from agent.rerank.learned import LearnedModel, LearnedRanker, LLMFeature, llm_feature_scores
from agent.schemas import LLM_STRATEGIES, CandidateItem, RankedItem, RankingContext, RerankResult, UserContext
from agent.settings import Settings
from prompts import PromptRegistry
from retrieval.attribute_source import AttributeIndex
from retrieval.candidates import CandidateGenerator
from retrieval.config import check_source_weights
from retrieval.conversation_ranker import (
    RANKER_KIND,
    CatalogItems,
    SavedConversationRanker,
    conversation_rows,
    load_conversation_ranker,
    rank_turn,
)
from retrieval.dialogue_sources import ARTIFACT_KIND as DIALOGUE_KIND
from retrieval.dialogue_sources import DialogueModel, dialogue_sources, load_dialogue_model
from retrieval.embed import Embedder, make_embedder
from retrieval.fitted import artifact_dir, log_fingerprint
from retrieval.interactions import Interactions, read_interactions
from retrieval.ltr_features import FeatureBuilder, Row
from retrieval.store import ItemCollection, Store
from retrieval.types import Candidate, Constraints, HistoryEntry, Item, SourceHit, UserQuery

log = logging.getLogger(__name__)

CandidateRefiner = Callable[[list[Candidate]], list[Candidate]]
"""Changes a request's fused candidates before ranking (drops or reorders them); see ``recommend_many``."""

Strategy = Literal["retrieval", "listwise", "options", "pointwise", "learned"]
ExplainWhen = Literal["now", "later"]


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
    explain_profile: bool = Field(
        False, description="Write the user's LLM profile and return it in Recommendation.profile."
    )
    source_weights: dict[str, float] | None = Field(
        None,
        description='Fusion weights for this request, over the configured ones (e.g. {"generated": 1.0}).',
    )
    turn: int | None = Field(
        None,
        ge=0,
        description="A conversation turn: how many recommendation turns came before it in the dialogue (the chat "
        "sets it). Such requests are reordered by the collection's conversation ranker when one is trained.",
    )

    @field_validator("source_weights")
    @classmethod
    def _weights_not_negative(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return None if value is None else check_source_weights(value)


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
    profile: str | None = Field(None, description="The user's LLM-written profile (when written).")
    profile_note: str | None = Field(
        None, description="How the profile came about (generated, cached, not used as a source) or why it is missing."
    )
    grounding: GroundReport | None = Field(None, description="Generate-then-ground: proposed, grounded, discarded.")
    dialogue_log: str | None = Field(
        None, description="The fitted dialogue log the conversation sources learned from (None: no such log)."
    )
    conversation_ranker: str | None = Field(
        None, description="How the conversation ranker reordered the fused candidates (None: not used)."
    )
    stage_tokens: dict[str, int] = Field(
        default_factory=dict, description="Tokens of the profile and proposal stages (included in the totals)."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What the request named that the catalog or log does not know (unknown user, item ids, filter "
        "fields) and why a filtered list is empty; empty when everything was known.",
    )
    sources: list[str] = Field(
        default_factory=list,
        description="Candidate sources that ran (fusion weight > 0), e.g. the log-learned transition and ease "
        "when an interaction log is configured; ['given'] when the request gave the candidates.",
    )
    justifications_pending: int = Field(
        0,
        description="Items shown with a template reason whose LLM justification is still being written "
        "(explain='later'; Recommender.justify_events fills them in).",
    )
    _pending: list[ExplainRequest] = PrivateAttr(default_factory=list)


def _recent_ids(query: UserQuery, n: int) -> list[str]:
    """The ``n`` most recent history ids (undated entries first, then by time, as UserContext orders them) and
    the items liked in the conversation."""
    dated = sorted((h for h in query.history if h.timestamp is not None), key=lambda h: h.timestamp or 0)
    entries = [h for h in query.history if h.timestamp is None] + dated
    return [h.item_id for h in entries[-n:]] + list(query.liked)


def _add_llm_feature(result: RerankResult, feature: LLMFeature) -> None:
    """Account the learned strategy's LLM pass on its result: calls, tokens, parse failures, prompt versions, the
    pass's time (``llm_feature``), why the feature is missing (if it is), and each item's LLM score."""
    done = feature.result
    if done is not None:
        result.llm_calls += done.llm_calls
        result.prompt_tokens += done.prompt_tokens
        result.completion_tokens += done.completion_tokens
        result.parse_failures += done.parse_failures
        result.raw = [*done.raw, *result.raw]
        result.prompt_versions = list(dict.fromkeys([*done.prompt_versions, *result.prompt_versions]))
        result.calibrated = done.calibrated
    result.timings_ms["llm_feature"] = round(feature.ms, 1)
    result.llm_feature_missing = feature.missing
    if feature.missing is None and done is not None:
        by_id = {item.item_id: item.llm_score for item in done.items}
        for item in result.items:
            item.llm_score = by_id.get(item.item_id)


def _stage_sum(tokens: dict[str, int], kind: str) -> int:
    return sum(v for k, v in tokens.items() if k.endswith(kind))


@dataclass
class _LLMSources:
    """One request's LLM candidate-source work (profile, grounded proposals) before candidate generation."""

    weights: dict[str, float] | None = None
    profile: ProfileText | None = None
    profile_source: bool = False
    grounding: GroundReport | None = None
    rankings: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def tokens(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.profile is not None and self.profile.prompt_tokens:  # its cost: also when cached or unusable
            out["profile_prompt"] = self.profile.prompt_tokens
            out["profile_completion"] = self.profile.completion_tokens
        if self.grounding is not None and self.grounding.prompt_tokens:
            out["propose_prompt"] = self.grounding.prompt_tokens
            out["propose_completion"] = self.grounding.completion_tokens
        return out

    def versions(self) -> list[str]:
        out = [self.profile.prompt_version] if self.profile is not None and self.profile.status != "skipped" else []
        if self.grounding is not None and self.grounding.failed is None:
            out.append(self.grounding.prompt_version)
        return [v for v in out if v]

    def profile_note(self) -> str | None:
        if self.profile is None:
            return None
        if self.profile.text is None:
            return f"no profile: {self.profile.reason}"
        used = "" if self.profile_source else "; not a candidate source (fusion weight 0)"
        return f"{self.profile.status}{used}"


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
        dialogue_sources: bool = True,
    ) -> None:
        self.settings = settings
        self.use_dialogue_sources = dialogue_sources  # False: ignore the collection's fitted dialogue log
        self._engine = engine
        self._engine_error: str | None = None
        self._engine_lock = threading.Lock()
        self._engine_failed_at: float | None = None  # monotonic time of the last failed start
        self._engine_attempts = 0
        self._embedder = embedder
        self._store = store
        self.collection_name = collection or settings.collection
        self._interactions = interactions
        self.registry = registry or PromptRegistry()
        self.ranker_problem: str | None = None  # why the collection's conversation ranker is not used

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
        if path and self.settings.interactions_titles:
            return self._title_linked_log(Path(path), self.settings.interactions_titles)
        return read_interactions(Path(path)) if path else None

    def _title_linked_log(self, path: Path, titles: Path) -> Interactions:
        """The log keyed by its own ids, linked to this collection's items by title (agent/log_link.py)."""
        from agent.log_link import linked_log

        id_col, title_col = self.settings.interactions_title_columns
        titles_by_id = {i: item.title for i, item in self.catalog_items.items()}
        linked, report = linked_log(path, titles, titles_by_id, id_col=id_col,
                                    title_col=title_col)  # fmt: skip
        log.info("interaction log linked to the catalog by title:\n%s", report.summary())
        return linked

    @cached_property
    def catalog_items(self) -> dict[str, Item]:
        """Every item of the collection, read once for the parts that need the whole catalog (the title-linked log,
        the attribute source, the conversation ranker's features)."""
        return self.collection.get_items(self.collection.ids())

    @cached_property
    def grounder(self) -> Grounder:
        return Grounder(self.collection, self.embedder, min_similarity=self.settings.ground_min_similarity)

    @cached_property
    def profile_cache(self) -> GenerationCache | None:
        if not self.settings.profile_cache:
            return None
        return GenerationCache(self.settings.home / "cache" / PROFILE_CACHE_FILE)

    @cached_property
    def dialogue_model(self) -> DialogueModel | None:
        """The dialogue sources' fitted state of this collection (`recagent train dialogue-sources`), if any."""
        if not self.use_dialogue_sources:
            return None
        folder = artifact_dir(self.store.config, self.collection_name, DIALOGUE_KIND)
        return load_dialogue_model(folder)

    @cached_property
    def generator(self) -> CandidateGenerator:
        store_config, name = self.settings.store_config(), self.collection_name
        sequential = self.settings.sequential_model or artifact_dir(store_config, name, "sequential")
        generator = CandidateGenerator.default(
            self.collection,
            self.embedder,
            self.interactions,
            self.settings.fusion_config(),
            learned=self.settings.learned_sources,
            cache_dir=lambda kind: artifact_dir(store_config, self.collection_name, kind),
            sequential_dir=sequential,
            sequential_required=self.settings.sequential_model is not None,
        )
        if self.dialogue_model is not None:
            generator.sources += dialogue_sources(self.dialogue_model, self.attribute_index)
        return generator

    @cached_property
    def attribute_index(self) -> AttributeIndex | None:
        """The catalog's field values for the attribute source (read once; only with a fitted dialogue log and a
        fusion weight > 0 for ``attribute``)."""
        if self.settings.fusion_config().weights.get("attribute", 1.0) == 0:
            return None
        return AttributeIndex(self.catalog_items.values())

    @cached_property
    def conversation_ranker(self) -> SavedConversationRanker | None:
        """The collection's conversation ranker (`recagent train dialogue-sources ... --ranker`), when one is trained
        and ``settings.dialogue_ranker`` is on; one fitted on another dialogue log than the served dialogue model's
        is not used (a warning with the retrain hint in every conversation turn's answer, see
        ``ranker_problem``)."""
        if not self.settings.dialogue_ranker:
            return None
        folder = artifact_dir(self.store.config, self.collection_name, RANKER_KIND)
        try:
            ranker = load_conversation_ranker(folder)
            if ranker is None:
                return None
            model = self.dialogue_model
            ranker.check_log(model.fingerprint if model is not None else None)
        except ConfigError as exc:
            self.ranker_problem = f"conversation ranker not used: {exc.message} ({exc.hint})"
            log.warning("%s", self.ranker_problem)
            return None
        return ranker

    def _rank_conversation(self, req: RecommendRequest, query: UserQuery, extra: _LLMSources | None,
                           n: int) -> tuple[list[Candidate], str | None]:  # fmt: skip
        """A conversation turn's candidates: the ranker's pool of the fused order, reordered by the ranker, the
        first ``n`` kept (and a note saying so)."""
        ranker = self.conversation_ranker
        assert ranker is not None
        weights = extra.weights if extra is not None else None
        rankings = extra.rankings if extra is not None else None
        ordered, pooled = rank_turn(ranker, self.generator, self.conversation_features, query, req.turn, n,
                                    extra=rankings or None, weights=weights)  # fmt: skip
        note = (f"conversation ranker (LightGBM, fitted on dialogue log {ranker.fingerprint}) reordered the "
                f"{pooled} fused candidates")  # fmt: skip
        return ordered, note

    def conversation_rows(self, query: UserQuery, candidates: Sequence[Candidate], turn: int | None) -> list[Row]:
        """The conversation ranker's feature rows of a turn's fused candidates (the training function's)."""
        ranker = self.conversation_ranker
        assert ranker is not None
        return conversation_rows(self.conversation_features, query.liked, candidates, ranker.stats,
                                 None if turn is None else float(turn))  # fmt: skip

    @cached_property
    def conversation_features(self) -> FeatureBuilder:
        return FeatureBuilder(None, CatalogItems(self.catalog_items))

    def dialogue_note(self) -> str | None:
        model = self.dialogue_model
        if model is None:
            return None
        return (f"comention + recommended_popularity (+ attribute) learned from a dialogue log of {model.turns} "
                f"turns in {model.dialogues} dialogues (log {model.fingerprint})")  # fmt: skip

    @cached_property
    def learned(self) -> LearnedRanker:
        """The learned ranker of this collection (``settings.ltr_model`` or the collection's artifacts/ltr),
        refused when it was fitted on another interaction log."""
        folder = self.settings.ltr_model or artifact_dir(self.settings.store_config(), self.collection_name, "ltr")
        model = LearnedModel.load(folder)
        model.check_log(log_fingerprint(self.interactions) if self.interactions is not None else None)
        model.check_llm(self.settings.ltr_llm_strategy)
        return LearnedRanker(model, FeatureBuilder(self.interactions, self.collection))

    def _wants_llm_feature(self, ctx: RankingContext) -> bool:
        """The learned strategy with the LLM feature on (``settings.ltr_llm_strategy``) and something to rank."""
        return ctx.config.strategy == "learned" and bool(self.settings.ltr_llm_strategy) and len(ctx.candidates) > 1

    def _learned_with_llm(
        self, engine: LLMEngine | None, contexts: Sequence[RankingContext], queries: Sequence[UserQuery]
    ) -> dict[int, LLMFeature]:
        """The LLM feature of the learned strategy: one batch of the LLM strategy over every such request's
        candidates, then the model's scores with the LLM's as ``llm.score`` (NaN where the LLM failed) set on each
        context. Returns the LLM pass of each such request (by position) for its accounting."""
        wanted = [i for i, ctx in enumerate(contexts) if self._wants_llm_feature(ctx)]
        strategy = self.settings.ltr_llm_strategy
        if not wanted or strategy is None:
            return {}
        ranker = self.learned  # a model trained without the feature is refused here, before any LLM time
        features = llm_feature_scores(engine, self.registry, [contexts[i] for i in wanted], strategy)
        for i, feature in zip(wanted, features, strict=True):
            ctx = contexts[i]
            pairs = [c.candidate for c in ctx.candidates]
            items = {c.id: c.item for c in ctx.candidates}
            ctx.learned_scores = ranker.scores(queries[i].history, pairs, items, llm_scores=feature.scores)
            if feature.missing is not None:
                log.info("learned ranker: no LLM feature for user %s (%s)", ctx.user.user_id, feature.missing)
        return dict(zip(wanted, features, strict=True))

    def engine(self) -> LLMEngine | None:
        """The LLM engine, or None while it cannot be started: requests then fall back to the retrieval order and
        ``_engine_error`` keeps the reason. A failed start is tried again once ``settings.llm_retry_after_s`` has
        passed (each attempt is logged), so an engine or LLM server that comes back is picked up without a restart.
        While another thread is starting the engine, callers do not wait: they fall back. An engine that died
        (its ``is_dead()`` says so, e.g. a crashed vLLM engine core) is closed and started again the same way."""
        if self._engine is not None:
            dead = getattr(self._engine, "is_dead", None)
            if not (callable(dead) and dead()):
                return self._engine
            self._drop_dead_engine()
        failed_at = self._engine_failed_at
        if failed_at is not None and time.monotonic() - failed_at < self.settings.llm_retry_after_s:
            return None
        if not self._engine_lock.acquire(blocking=False):
            return None  # being started by another thread
        try:
            if self._engine is not None:
                return self._engine
            from agent.llm import create_engine

            self._engine_attempts += 1
            attempt = self._engine_attempts
            if attempt > 1:
                log.info("starting the LLM engine again (attempt %d)", attempt)
            try:
                engine = create_engine(self.settings)
            except Exception as exc:  # any failure to start: answer without the LLM, retry later
                known = isinstance(exc, RecagentError)
                self._engine_error = exc.message if isinstance(exc, RecagentError) else f"{type(exc).__name__}: {exc}"
                self._engine_failed_at = time.monotonic()
                log.warning(
                    "LLM engine unavailable (attempt %d), falling back to the retrieval order; next attempt in "
                    "%.0f s: %s",
                    attempt,
                    self.settings.llm_retry_after_s,
                    exc,
                    exc_info=not known,
                )
                return None
            if attempt > 1:
                log.info("LLM engine started on attempt %d: %s", attempt, engine.model_id)
            self._engine, self._engine_error, self._engine_failed_at = engine, None, None
            return engine
        finally:
            self._engine_lock.release()

    def _drop_dead_engine(self) -> None:
        with self._engine_lock:
            engine, self._engine = self._engine, None
            if engine is None:
                return
            log.error("the LLM engine %s died; answers fall back until it is started again", engine.model_id)
            self._engine_error = "the LLM engine died and is being restarted"
            try:
                engine.close()
            except Exception:  # it is dead already: closing is best effort
                log.warning("closing the dead LLM engine failed", exc_info=True)

    def engine_status(self) -> dict[str, Any]:
        """The engine's state without starting it: ``status`` (ok / unavailable / not started), the last start
        error, the number of start attempts and the seconds until the next one."""
        if self._engine is not None:
            return {"status": "ok", "error": None, "attempts": self._engine_attempts, "retry_in_s": None}
        failed_at = self._engine_failed_at
        if failed_at is None:
            return {"status": "not started", "error": None, "attempts": self._engine_attempts, "retry_in_s": None}
        wait = max(0.0, self.settings.llm_retry_after_s - (time.monotonic() - failed_at))
        return {
            "status": "unavailable",
            "error": self._engine_error,
            "attempts": self._engine_attempts,
            "retry_in_s": round(wait, 1),
        }

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

    def _llm_sources(self, requests: Sequence[RecommendRequest], queries: list[UserQuery]) -> list[_LLMSources]:
        """Profiles (profile source on, or ``explain_profile``) and grounded proposals ("generated" source on) for
        the requests that need them: one engine batch per stage. Sets ``UserQuery.profile`` where the profile
        source is on."""
        out = [_LLMSources() for _ in requests]
        want_profile: list[int] = []
        want_ground: list[int] = []
        for i, req in enumerate(requests):
            weights = {**self.settings.fusion_weights, **(req.source_weights or {})}
            out[i].weights = weights if req.source_weights else None
            retrieving = req.candidates is None
            out[i].profile_source = retrieving and source_weight(weights, "profile") > 0
            if out[i].profile_source or req.explain_profile:
                want_profile.append(i)
            if retrieving and source_weight(weights, "generated") > 0:
                want_ground.append(i)
        if not want_profile and not want_ground:
            return out
        engine = self.engine()
        recent = {i: _recent_ids(queries[i], max(self.settings.profile_history_limit, 10))
                  for i in {*want_profile, *want_ground}}  # fmt: skip
        items = self.collection.get_items(list(dict.fromkeys(x for ids in recent.values() for x in ids)))
        if want_profile:
            t0 = time.perf_counter()
            users = [UserContext.from_query(queries[i], items) for i in want_profile]
            profiles = build_profiles(engine, self.registry, users, self.settings, cache=self.profile_cache,
                                      engine_error=self._engine_error)  # fmt: skip
            ms = round((time.perf_counter() - t0) * 1000, 1)
            for i, profile in zip(want_profile, profiles, strict=True):
                out[i].profile, out[i].timings_ms["profile_batch"] = profile, ms
                if out[i].profile_source:
                    queries[i].profile = profile.text
        if want_ground:
            t0 = time.perf_counter()
            asks = []
            for i in want_ground:
                q, written = queries[i], out[i].profile
                need = q.need or (written.text if written is not None and written.text else "")
                liked = [items[x].title for x in [*q.liked, *recent[i][-10:]] if x in items]
                asks.append((need, list(dict.fromkeys(liked))))
            reports = propose_and_ground(engine, self.registry, self.grounder, asks, self.settings,
                                         engine_error=self._engine_error)  # fmt: skip
            ms = round((time.perf_counter() - t0) * 1000, 1)
            for i, report in zip(want_ground, reports, strict=True):
                out[i].grounding, out[i].timings_ms["ground_batch"] = report, ms
                out[i].rankings["generated"] = report.ranking()
        return out

    def _context(
        self,
        req: RecommendRequest,
        query: UserQuery,
        extra: _LLMSources | None = None,
        refine: CandidateRefiner | None = None,
    ) -> tuple[RankingContext, dict[str, Item], str | None]:
        ranker_note = None
        if req.candidates is not None:
            excluded = query.excluded_ids()
            ids = [i for i in dict.fromkeys(req.candidates) if i not in excluded]
            n = max(len(ids), 1)
            candidates = [
                Candidate(item_id=i, score=(n - r) / n, sources={"given": SourceHit(rank=r + 1, score=(n - r) / n)})
                for r, i in enumerate(ids)
            ]
        elif req.turn is not None and self.conversation_ranker is not None:
            candidates, ranker_note = self._rank_conversation(req, query, extra, query.n or self.generator.fusion.n)
        elif extra is not None and (extra.rankings or extra.weights is not None):
            candidates = self.generator.generate(query, extra=extra.rankings, weights=extra.weights)
        else:
            candidates = self.generator.generate(query)
        if refine is not None:
            candidates = refine(candidates)
        wanted = [c.item_id for c in candidates]
        history_ids = [h.item_id for h in query.history[-50:]] + list(query.liked)
        items = self.collection.get_items(list(dict.fromkeys(wanted + history_ids)))
        user = UserContext.from_query(query, items)
        overrides: dict[str, Any] = {"strategy": req.strategy} if req.strategy else {}
        config = self.settings.rerank_config(**overrides)
        pairs = CandidateItem.pair(items, candidates)
        learned = None
        if config.strategy == "learned" and len(pairs) > 1 and not self.settings.ltr_llm_strategy:
            learned = self.learned.scores(query.history, [c.candidate for c in pairs], items)
        ctx = RankingContext(user=user, candidates=pairs, k=req.k, config=config, learned_scores=learned)
        return ctx, items, ranker_note

    def active_sources(self, req: RecommendRequest) -> list[str]:
        """Names of the candidate sources a request uses: the generator's and "generated", weight > 0."""
        if req.candidates is not None:
            return ["given"]
        weights = {**self.settings.fusion_weights, **(req.source_weights or {})}
        names = [s.name for s in getattr(self.generator, "sources", [])] + ["generated"]
        return [n for n in dict.fromkeys(names) if weights.get(n, 1.0) > 0]

    def recommend(self, request: RecommendRequest, *, explain: ExplainWhen = "now") -> Recommendation:
        return self.recommend_many([request], explain=explain)[0]

    def recommend_many(
        self,
        requests: Sequence[RecommendRequest],
        *,
        refiners: Sequence[CandidateRefiner | None] | None = None,
        explain: ExplainWhen = "now",
    ) -> list[Recommendation]:
        """Several requests; their LLM work goes to the engine in one batch per stage. ``refiners`` (one per
        request, or None) may change each request's fused candidates before ranking (the chat's avoidances).
        ``explain="later"``: the items come back at once with template reasons (flag ``justification_pending``)
        and :meth:`justify_events` / :meth:`justify` write the LLM justifications afterwards."""
        if refiners is not None and len(refiners) != len(requests):
            raise InputError(
                f"got {len(refiners)} candidate refiners for {len(requests)} requests", hint="pass one per request"
            )
        started = time.perf_counter()
        queries, query_ms = [], []
        for req in requests:
            t0 = time.perf_counter()
            queries.append(self._query(req))
            query_ms.append((time.perf_counter() - t0) * 1000)
        warnings = [request_warnings(q, bool(r.history), self.collection, self.interactions)
                    for r, q in zip(requests, queries, strict=True)]  # fmt: skip
        extras = self._llm_sources(requests, queries)
        prepared = []
        ranker_notes: list[str | None] = []
        for n, (req, query, extra, q_ms) in enumerate(zip(requests, queries, extras, query_ms, strict=True)):
            t0 = time.perf_counter()
            ctx, items, note = self._context(req, query, extra, refiners[n] if refiners is not None else None)
            prepared.append((req, ctx, items, len(query.history), q_ms + (time.perf_counter() - t0) * 1000))
            ranker_notes.append(note)
            if req.turn is not None and self.ranker_problem and req.candidates is None:
                warnings[n].append(self.ranker_problem)
        contexts = [p[1] for p in prepared]
        needs_llm = any(c.config.strategy in LLM_STRATEGIES or c.config.explain == "llm" or self._wants_llm_feature(c)
                        for c in contexts)  # fmt: skip
        engine = self.engine() if needs_llm else self._engine
        t_rank = time.perf_counter()
        llm_features = self._learned_with_llm(engine, contexts, queries)  # before ranking: the model needs them
        ranked = [defer(c) for c in contexts] if explain == "later" else contexts
        results = rank_many(engine, self.registry, ranked)  # falls back itself on engine problems
        for i, feature in llm_features.items():
            _add_llm_feature(results[i], feature)
        rank_ms = (time.perf_counter() - t_rank) * 1000
        pending = [pending_requests(c, r) if explain == "later" else [] for c, r in zip(contexts, results, strict=True)]
        out = []
        for (req, ctx, items, n_hist, retrieve_ms), result, extra, warns, todo, ranker_note in zip(
            prepared, results, extras, warnings, pending, ranker_notes, strict=True
        ):
            stage_tokens = extra.tokens()
            if not result.items:
                warns += empty_result_warnings(req.constraints, self.collection)
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
                    sources=self.active_sources(req),
                    fallback_reason=reason,
                    candidates=len(ctx.candidates),
                    candidate_ids=[c.id for c in ctx.candidates],
                    history_used=n_hist,
                    prompt_versions=extra.versions() + result.prompt_versions,
                    model=engine.model_id if engine is not None else None,
                    prompt_tokens=result.prompt_tokens + _stage_sum(stage_tokens, "prompt"),
                    completion_tokens=result.completion_tokens + _stage_sum(stage_tokens, "completion"),
                    agreement=result.agreement,
                    timings_ms={
                        "retrieve": round(retrieve_ms, 1),
                        "rank_batch": round(rank_ms, 1),
                        "total_batch": round((time.perf_counter() - started) * 1000, 1),
                        **{k: round(v, 1) for k, v in result.timings_ms.items()},
                        **extra.timings_ms,
                    },
                    rerank=result,
                    profile=extra.profile.text if extra.profile is not None else None,
                    profile_note=extra.profile_note(),
                    grounding=extra.grounding,
                    dialogue_log=self.dialogue_note(),
                    conversation_ranker=ranker_note,
                    stage_tokens=stage_tokens,
                    warnings=warns,
                    justifications_pending=len(todo),
                )
            )
            out[-1]._pending = todo
        return out

    # -- justifications written after the items were shown (explain="later") -------------------------------
    def justify_events(self, rec: Recommendation) -> Generator[JustificationEvent, None, None]:
        """Write the pending LLM justifications of ``rec`` (from ``recommend(..., explain="later")``), update its
        items, tokens and timings in place, and yield one event per item as it is written (``justify_chunk``
        items per engine call). Nothing pending: no events. Engine errors keep the template reason (the event
        says why)."""
        todo, rec._pending = rec._pending, []
        if not todo:
            return
        engine = self.engine()
        usage: dict[str, Any] = {}
        shown = {item.item_id: item for item in rec.items}
        ranked = {item.item_id: item for item in rec.rerank.items}
        for event in justify_events(engine, self.registry, rec.items, todo, chunk=self.settings.justify_chunk,
                                    usage=usage):  # fmt: skip
            for item in (shown[event.item_id], ranked[event.item_id]):
                item.justification, item.justification_source = event.justification, event.justification_source
                item.grounded, item.grounding_note = event.grounded, event.grounding_note
                item.cited, item.flags = list(event.cited), list(event.flags)
            rec.justifications_pending -= 1
            yield event
        rec.rerank.llm_calls += usage.get("llm_calls", 0)
        rec.rerank.template_justifications = sum("template_justification" in i.flags for i in rec.rerank.items)
        rec.prompt_tokens += usage.get("prompt_tokens", 0)
        rec.completion_tokens += usage.get("completion_tokens", 0)
        rec.timings_ms["justify_later"] = usage.get("ms", 0.0)
        rec.prompt_versions = list(dict.fromkeys([*rec.prompt_versions, *usage.get("prompt_versions", [])]))
        if rec.model is None and engine is not None:
            rec.model = engine.model_id

    def justify(self, rec: Recommendation) -> Recommendation:
        """:meth:`justify_events` run to the end: ``rec`` with every pending justification filled in."""
        for _ in self.justify_events(rec):
            pass
        return rec

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
