"""pydantic models of the ranking layer: what a pipeline hands to :mod:`agent.rerank` and what comes back.

Inputs: :class:`UserContext` (history, need, liked/disliked attributes), :class:`CandidateItem` (a catalog
:class:`~retrieval.types.Item` with its fused :class:`~retrieval.types.Candidate`), :class:`RerankConfig` (strategy
and knobs), bundled per user in :class:`RankingContext` for :func:`agent.rerank.rank_many`.
Outputs: :class:`RerankResult` holding :class:`RankedItem` rows.

All models forbid unknown fields, so a typo in a config file or an API payload fails loudly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from retrieval.types import Candidate, Item, MetaValue, SourceHit, UserQuery

__all__ = [
    "LLM_STRATEGIES",
    "STRATEGIES",
    "AttributePreference",
    "CandidateItem",
    "Citation",
    "HistoryItem",
    "JustificationSource",
    "RankedItem",
    "RankingContext",
    "RerankConfig",
    "RerankResult",
    "Strategy",
    "UserContext",
]

Strategy = Literal["retrieval", "listwise", "options", "pointwise", "learned"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
"""Every ``RerankConfig.strategy`` value: ``retrieval`` and the names of ``agent.rerank.registry``."""
LLM_STRATEGIES: tuple[str, ...] = ("listwise", "options", "pointwise")
"""Strategies that ask the LLM to rank (``retrieval`` and ``learned`` never do; the registry's ``uses_engine``)."""
JustificationSource = Literal["llm", "listwise", "template"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------------ user side
class AttributePreference(_Model):
    """A soft preference on an item field, e.g. ``{"field": "genres", "value": "Comedy"}``."""

    field: str = Field(min_length=1)
    value: str = Field(min_length=1)


class Citation(_Model):
    """An item fact a justification relies on: the field and the value copied from it."""

    field: str
    value: str


class HistoryItem(_Model):
    """One item the user interacted with (``rating`` on the catalog's own scale, when known)."""

    item_id: str | None = None
    title: str = Field(min_length=1)
    attributes: dict[str, MetaValue] = Field(default_factory=dict)
    rating: float | None = None

    @classmethod
    def from_item(cls, item: Item, rating: float | None = None) -> HistoryItem:
        return cls(item_id=item.id, title=item.title, attributes=dict(item.metadata), rating=rating)

    def prompt_vars(self) -> dict[str, Any]:
        return {"title": self.title, "attributes": dict(self.attributes), "rating": self.rating}


class UserContext(_Model):
    """Everything the ranker knows about the user, as a pipeline fills it from user state (history, chat)."""

    user_id: str | None = None
    history: list[HistoryItem] = Field(default_factory=list, description="Oldest first.")
    need: str = Field(default="", description="What the user asked for, in their words ('' when unknown).")
    liked_attributes: list[AttributePreference] = Field(default_factory=list)
    disliked_attributes: list[AttributePreference] = Field(default_factory=list)

    @classmethod
    def from_query(
        cls,
        query: UserQuery,
        items: Mapping[str, Item],
        *,
        liked_attributes: Sequence[AttributePreference] = (),
        disliked_attributes: Sequence[AttributePreference] = (),
    ) -> UserContext:
        """The ranking view of a retrieval :class:`~retrieval.types.UserQuery`: its history (dated entries in time
        order, after the undated ones) and the items liked in the conversation, looked up in ``items``."""
        dated = sorted((h for h in query.history if h.timestamp is not None), key=lambda h: h.timestamp or 0)
        entries = [h for h in query.history if h.timestamp is None] + dated
        history = [HistoryItem.from_item(items[h.item_id], h.rating) for h in entries if h.item_id in items]
        seen = {h.item_id for h in history}
        history += [HistoryItem.from_item(items[i]) for i in query.liked if i in items and i not in seen]
        return cls(
            user_id=query.user_id,
            history=history,
            need=query.need or "",
            liked_attributes=list(liked_attributes),
            disliked_attributes=list(disliked_attributes),
        )

    def prompt_history(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent history entries as template variables (oldest first)."""
        recent = self.history[-limit:] if limit > 0 else []
        return [h.prompt_vars() for h in recent]

    def prompt_need(self) -> str:
        """The need as the templates see it: the user's words, plus stated likes and dislikes (the templates have
        no separate variable for them)."""
        parts = [self.need.strip()] if self.need.strip() else []
        if self.liked_attributes:
            parts.append("Likes: " + "; ".join(f"{p.field} {p.value}" for p in self.liked_attributes) + ".")
        if self.disliked_attributes:
            parts.append("Dislikes: " + "; ".join(f"{p.field} {p.value}" for p in self.disliked_attributes) + ".")
        return " ".join(parts)


# ------------------------------------------------------------------------------------------------ candidates
class CandidateItem(_Model):
    """A catalog item and its fused retrieval candidate (score, per-source ranks)."""

    item: Item
    candidate: Candidate

    @model_validator(mode="after")
    def _same_id(self) -> CandidateItem:
        if self.item.id != self.candidate.item_id:
            raise ValueError(f"item id {self.item.id!r} differs from candidate id {self.candidate.item_id!r}")
        return self

    @property
    def id(self) -> str:
        return self.item.id

    @property
    def title(self) -> str:
        return self.item.title

    @classmethod
    def pair(cls, items: Mapping[str, Item], candidates: Sequence[Candidate]) -> list[CandidateItem]:
        """Join fused candidates with their catalog items (candidates whose item is unknown are skipped)."""
        return [cls(item=items[c.item_id], candidate=c) for c in candidates if c.item_id in items]

    def text(self) -> str:
        """The item's free-text fields as one string ('' when it has none)."""
        texts = [(k, v.strip()) for k, v in self.item.texts.items() if v and v.strip()]
        if len(texts) == 1:
            return texts[0][1]
        return "\n".join(f"{k}: {v}" for k, v in texts)

    def prompt_vars(self, *, include_text: bool = True) -> dict[str, Any]:
        """Template variables of a ranking prompt: id, title, attributes (metadata) and text."""
        out: dict[str, Any] = {"id": self.id, "title": self.title, "attributes": dict(self.item.metadata)}
        text = self.text() if include_text else ""
        if text:
            out["text"] = text
        return out

    def field_names(self) -> list[str]:
        """Fields a justification may cite: title, metadata fields, free-text fields."""
        return list(dict.fromkeys(["title", *self.item.metadata, *self.item.texts]))


# ------------------------------------------------------------------------------------------------ config
class RerankConfig(_Model):
    """How to rank. One object per experiment arm: the evaluator swaps strategies, templates and weights here."""

    strategy: Strategy = Field(default="options", description="retrieval | listwise | options | pointwise | learned")
    listwise_template: str = "rank_listwise"
    options_template: str = "rank_options"
    pointwise_template: str = "rank_pointwise"
    explain_template: str = "explain"
    prompt_format: Literal["auto", "chat", "fewshot"] = Field(
        default="auto",
        description="Prompt layout: chat (instruction messages), fewshot (worked examples, for base models) or "
        "auto (fewshot when the model has no chat template and the template defines it).",
    )
    n_orders: int = Field(default=1, ge=1, le=16, description="Candidate permutations per request (order aggregation).")
    seed: int = 0
    llm_weight: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Share of the LLM in the final score (rank-normalised blend with retrieval). Set by the "
        "evaluator: the untuned default model ranks at chance, so the default keeps the list close to retrieval; "
        "0 returns the retrieval order exactly.",
    )
    mmr_lambda: float = Field(default=1.0, ge=0.0, le=1.0, description="MMR trade-off; 1 = no diversity re-ordering.")
    popularity_penalty: float = Field(default=0.0, ge=0.0, description="Subtracted times log-popularity share.")
    calibrate: bool = Field(default=True, description="Subtract the per-position label prior (options strategy).")
    cache_dir: Path | None = Field(default=None, description="Folder of the on-disk label-prior cache (JSON).")
    option_window: int = Field(default=20, ge=2, le=26, description="Most options per option prompt (labels A..).")
    max_tokens: int | None = Field(default=None, ge=8, description="Listwise output budget; None: sized from k.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    explain: Literal["llm", "template", "none"] = Field(default="llm", description="How the top-k items get justified.")
    explain_max_tokens: int = Field(default=160, ge=16)
    retry_temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Sampling temperature of the one re-ask.")
    timeout_s: float | None = Field(
        default=None, gt=0, description="Limit of one ranking engine call (None: no limit)."
    )
    explain_timeout_s: float | None = Field(default=None, gt=0, description="Limit of one justification engine call.")
    history_limit: int = Field(default=10, ge=0, description="Most recent history items shown in prompts.")
    include_text: bool = Field(default=True, description="Show the items' free text in ranking prompts.")

    def template_for(self, strategy: str) -> str:
        return {
            "listwise": self.listwise_template,
            "options": self.options_template,
            "pointwise": self.pointwise_template,
        }[strategy]


class RankingContext(_Model):
    """One user's ranking request, as :func:`agent.rerank.rank_many` takes it."""

    user: UserContext
    candidates: list[CandidateItem] = Field(description="In fused retrieval order (best first).")
    k: int = Field(default=10, ge=1)
    config: RerankConfig = Field(default_factory=lambda: RerankConfig())
    embeddings: dict[str, list[float]] | None = Field(default=None, description="Item embeddings for MMR.")
    popularity: dict[str, float] | None = Field(
        default=None, description="Interaction counts for the popularity penalty."
    )
    learned_scores: list[float] | None = Field(
        default=None, description="strategy learned: the learned ranker's score of each candidate (same order)."
    )


# ------------------------------------------------------------------------------------------------ outputs
class RankedItem(_Model):
    item_id: str
    rank: int = Field(ge=1)
    score: float = Field(description="Final blended score (after popularity penalty); higher is better.")
    llm_score: float | None = Field(
        default=None,
        description="Aggregated LLM score: mean Borda share (listwise), mean calibrated lift (options), "
        "logit Yes-No (pointwise); None without an LLM.",
    )
    retrieval_score: float
    retrieval_rank: int = Field(ge=1, description="Position in the fused retrieval order.")
    sources: dict[str, SourceHit] = Field(default_factory=dict)
    justification: str | None = None
    justification_source: JustificationSource | None = None
    grounded: bool | None = None
    grounding_note: str | None = None
    cited: list[Citation] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list, description="e.g. appended_missing, template_justification")


class RerankResult(_Model):
    items: list[RankedItem]
    strategy: str = Field(description="The strategy asked for (see fallback_reason for what happened).")
    fallback_reason: str | None = Field(
        default=None,
        description="Set when the retrieval order was returned instead: engine_error: ..., invalid_output, "
        "empty, timeout.",
    )
    prompt_versions: list[str] = Field(default_factory=list)
    llm_calls: int = Field(
        default=0, description="LLM requests sent for this user (shared calibration prompts excluded)."
    )
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings_ms: dict[str, float] = Field(
        default_factory=dict, description="Wall time of each stage (of the batch this request was part of)."
    )
    agreement: float | None = Field(default=None, description="Mean pairwise Kendall tau between the orders' rankings.")
    calibrated: bool = False
    raw: list[str] = Field(default_factory=list, description="Raw LLM outputs (texts; label log-probs as JSON).")
    parse_failures: int = 0
    off_candidate: int = 0
    duplicates: int = 0
    appended_missing: int = 0
    regenerated: int = Field(default=0, description="Justifications re-asked once after failing the grounding check.")
    template_justifications: int = 0
    llm_feature_missing: str | None = Field(
        default=None,
        description="Strategy learned with the LLM feature (ltr_llm_strategy): why the LLM's scores are missing for "
        "this request (the LLM pass's fallback reason; the model then ranks with that feature missing). None when "
        "they were given or not asked for.",
    )

    @property
    def item_ids(self) -> list[str]:
        return [r.item_id for r in self.items]
