"""pydantic models at the boundaries of the retrieval layer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MetaValue = str | int | float | bool | list[str]
"""A metadata value: a scalar, or a list of strings (genres, tags, authors)."""

Where = dict[str, Any]
"""A Chroma ``where`` filter."""

MAX_EXAMPLES = 3


class Item(BaseModel):
    """One catalog item as read and cleaned from a file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    texts: dict[str, str] = Field(default_factory=dict, description="Free-text fields (description, plot...).")
    metadata: dict[str, MetaValue] = Field(default_factory=dict, description="Typed fields used for filtering.")


class SourceHit(BaseModel):
    """Where one source ranked a candidate (rank starts at 1) and the source's own score."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(ge=1)
    score: float


class Candidate(BaseModel):
    """A fused candidate: its RRF score and every source that found it."""

    model_config = ConfigDict(extra="forbid")

    item_id: str
    score: float
    sources: dict[str, SourceHit]


class NumericRange(BaseModel):
    """Closed interval on a numeric metadata field; ``None`` leaves a side open."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> NumericRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class Constraints(BaseModel):
    """Hard knowledge constraints: a Chroma ``where`` filter for Chroma sources, a post-filter for the others."""

    model_config = ConfigDict(extra="forbid")

    include_genres: list[str] = Field(default_factory=list, description="Genres an item must have (see match).")
    genre_match: Literal["any", "all"] = Field(
        default="any", description="any: at least one included genre; all: every."
    )
    exclude_genres: list[str] = Field(default_factory=list, description="Genres an item must not have.")
    year_min: int | None = None
    year_max: int | None = None
    ranges: dict[str, NumericRange] = Field(default_factory=dict, description="Numeric ranges on metadata fields.")
    equals: dict[str, str | int | float | bool] = Field(default_factory=dict, description="Exact metadata values.")
    exclude_ids: list[str] = Field(default_factory=list, description="Items never to return.")
    genre_field: str = "genres"
    year_field: str = "year"

    @model_validator(mode="after")
    def _years_ordered(self) -> Constraints:
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            raise ValueError(f"year_min {self.year_min} is greater than year_max {self.year_max}")
        return self

    def is_empty(self) -> bool:
        """True when no metadata condition is set (``exclude_ids`` aside)."""
        return self.to_where() is None

    def _clauses(self) -> list[Where]:
        clauses: list[Where] = []
        genres = list(dict.fromkeys(self.include_genres))
        if genres:
            terms: list[Where] = [{self.genre_field: {"$contains": g}} for g in genres]
            if len(terms) == 1 or self.genre_match == "all":
                clauses.extend(terms)
            else:
                clauses.append({"$or": terms})
        clauses.extend({self.genre_field: {"$not_contains": g}} for g in dict.fromkeys(self.exclude_genres))
        if self.year_min is not None:
            clauses.append({self.year_field: {"$gte": self.year_min}})
        if self.year_max is not None:
            clauses.append({self.year_field: {"$lte": self.year_max}})
        for key, rng in self.ranges.items():
            if rng.min is not None:
                clauses.append({key: {"$gte": rng.min}})
            if rng.max is not None:
                clauses.append({key: {"$lte": rng.max}})
        clauses.extend({key: {"$eq": value}} for key, value in self.equals.items())
        return clauses

    def to_where(self) -> Where | None:
        """The Chroma ``where`` filter for these constraints (``None`` when there is nothing to filter)."""
        clauses = self._clauses()
        if not clauses:
            return None
        if len(clauses) == 1:
            return clauses[0]
        return {"$and": clauses}

    def matches(self, item_id: str, metadata: dict[str, Any]) -> bool:
        """Python version of :meth:`to_where` (plus ``exclude_ids``), with Chroma's semantics for missing keys."""
        if item_id in self.exclude_ids:
            return False
        genres = _as_list(metadata.get(self.genre_field))
        if self.include_genres:
            hits = [g in genres for g in self.include_genres]
            if not (all(hits) if self.genre_match == "all" else any(hits)):
                return False
        if any(g in genres for g in self.exclude_genres):
            return False
        numeric: list[tuple[str, float | None, float | None]] = [(self.year_field, self.year_min, self.year_max)]
        numeric += [(key, rng.min, rng.max) for key, rng in self.ranges.items()]
        for key, low, high in numeric:
            if low is None and high is None:
                continue
            value = metadata.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        return all(metadata.get(key) == value for key, value in self.equals.items())


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


class HistoryEntry(BaseModel):
    """One past interaction of the user."""

    model_config = ConfigDict(extra="forbid")

    item_id: str
    rating: float | None = None
    timestamp: int | None = None


class UserQuery(BaseModel):
    """Everything candidate generation knows about a request."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list, description="Past interactions, any order.")
    need: str | None = Field(default=None, description="Free-text need, e.g. 'a funny heist movie'.")
    profile: str | None = Field(
        default=None, description="LLM-written summary of the user's tastes; the 'profile' source queries with it."
    )
    liked: list[str] = Field(default_factory=list, description="Items liked in the conversation (seeds).")
    disliked: list[str] = Field(default_factory=list, description="Items rejected: never returned.")
    constraints: Constraints = Field(default_factory=lambda: Constraints())
    exclude: list[str] = Field(default_factory=list, description="More items never to return.")
    exclude_seen: bool = Field(default=True, description="Drop items in the history from the candidates.")
    k_per_source: int | None = Field(default=None, ge=1, description="Overrides FusionConfig.k.")
    n: int | None = Field(default=None, ge=1, description="Overrides FusionConfig.n.")

    @field_validator("need", "profile")
    @classmethod
    def _blank_need_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    def excluded_ids(self) -> set[str]:
        """Items that must not be returned: seen (if ``exclude_seen``), disliked and explicitly excluded."""
        out = set(self.disliked) | set(self.exclude) | set(self.constraints.exclude_ids)
        if self.exclude_seen:
            out |= {h.item_id for h in self.history}
            out |= set(self.liked)
        return out


class ReasonCount(BaseModel):
    """How often a reason occurred and up to three examples."""

    model_config = ConfigDict(extra="forbid")

    count: int = 0
    examples: list[str] = Field(default_factory=list)


class UpsertStats(BaseModel):
    """What a store upsert did."""

    model_config = ConfigDict(extra="forbid")

    collection: str
    items: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    pruned: int = 0
    embedded: int = 0
    embedder: str = ""
    seconds: float = 0.0
    enrichment_kept: int = Field(default=0, description="Enriched items whose content did not change: kept.")
    enrichment_dropped: int = Field(
        default=0, description="Enriched items whose content changed: enrichment removed (run `recagent enrich`)."
    )
    enrichment_dropped_ids: list[str] = Field(default_factory=list, description="Up to three examples.")


class IngestReport(BaseModel):
    """What reading (and storing) a file did. Invariant: ``rows_read == accepted + rejected``.

    ``rejections`` are rows left out; ``fixes`` are values changed or dropped in accepted rows (truncation,
    encoding repair, invalid typed value); ``notes`` are harmless observations. ``strict`` mode fails on the first
    two.
    """

    model_config = ConfigDict(extra="forbid")

    source: str
    format: str
    encoding: str = "utf-8"
    rows_read: int = 0
    accepted: int = 0
    rejected: int = 0
    rejections: dict[str, ReasonCount] = Field(default_factory=dict)
    fixes: dict[str, ReasonCount] = Field(default_factory=dict)
    notes: dict[str, ReasonCount] = Field(default_factory=dict)
    store: UpsertStats | None = None
    seconds: float = 0.0

    @staticmethod
    def _add(table: dict[str, ReasonCount], reason: str, example: str) -> None:
        entry = table.setdefault(reason, ReasonCount())
        entry.count += 1
        if len(entry.examples) < MAX_EXAMPLES:
            entry.examples.append(example[:200])

    def reject(self, reason: str, example: str) -> None:
        self.rejected += 1
        self._add(self.rejections, reason, example)

    def fix(self, reason: str, example: str) -> None:
        self._add(self.fixes, reason, example)

    def note(self, reason: str, example: str) -> None:
        self._add(self.notes, reason, example)

    @property
    def consistent(self) -> bool:
        return self.rows_read == self.accepted + self.rejected

    def problems(self) -> list[str]:
        """One line per rejection or fix reason (what ``strict`` refuses)."""
        lines = [f"rejected {v.count} row(s): {k} (e.g. {'; '.join(v.examples)})" for k, v in self.rejections.items()]
        lines += [f"fixed {v.count} value(s): {k} (e.g. {'; '.join(v.examples)})" for k, v in self.fixes.items()]
        return lines


class Enrichment(BaseModel):
    """LLM-written text stored beside an item's original fields (``recagent enrich``); it is embedded with the
    item's document but never replaces the original text."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    keywords: list[str] = Field(default_factory=list)
    prompt_version: str = Field(default="", description="Version id of the template that wrote it.")
    model: str = Field(default="", description="The model that wrote it.")


class EnrichmentInfo(BaseModel):
    """Collection-level record of the last enrichment run (stored in the collection's metadata)."""

    model_config = ConfigDict(extra="forbid")

    on: bool = Field(description="Whether enriched documents are embedded (False after `recagent enrich --off`).")
    prompt_version: str = ""
    model: str = ""
    items: int = Field(default=0, description="Items carrying an enrichment after the run.")
    at: str = Field(default="", description="When the run finished (ISO 8601, UTC).")
