"""Generate-then-ground: the LLM proposes items for a free-text need, each proposal is tied to a REAL catalog item.

    need (+ liked titles) -> ``propose_items`` template, JSON schema (<= ``ground_max_proposals`` items)
    -> each {title, year, description} grounded: exact / normalised title match first (year must agree within
       one when both are known), else the nearest item document by embedding similarity of "title (year)
       description", kept only at cosine >= ``ground_min_similarity``
    -> proposals matching nothing are discarded and counted; two proposals of one item count as a duplicate

The grounded items form the candidate source "generated" (fusion weight 0 by default); an item that is not in the
catalog can never come out of it, since every hit is an id read from the collection (and the candidate generator
keeps catalog ids only).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.chat.catalog import title_forms
from agent.errors import ConfigError, PromptError
from agent.llm.base import Generation, LLMEngine
from agent.llm.batching import CallFailure, generate_batch, loads_lenient
from agent.settings import Settings
from prompts import PromptRegistry, clean_data
from retrieval.embed import Embedder
from retrieval.store import ItemCollection

__all__ = ["GroundReport", "GroundedHit", "Grounder", "Proposal", "parse_proposals", "propose_and_ground"]

_SPACES = re.compile(r"\s+")
_YEAR = re.compile(r"^\d{4}$")
_PLACEHOLDER = re.compile(r"^\W*<[^<>]*>\W*$")
MAX_DISCARDED_SHOWN = 5


class Proposal(BaseModel):
    """One item the LLM proposed."""

    model_config = ConfigDict(extra="ignore")

    title: str = Field(min_length=1, max_length=300)
    year: int | None = None
    description: str = ""

    @field_validator("title", "description", mode="before")
    @classmethod
    def _clean(cls, value: Any) -> Any:
        return _SPACES.sub(" ", clean_data(value)).strip() if isinstance(value, str) else value

    @field_validator("year", mode="before")
    @classmethod
    def _year(cls, value: Any) -> int | None:
        text = str(value).strip() if value is not None else ""
        return int(text) if _YEAR.match(text) else None

    def text(self) -> str:
        head = f"{self.title} ({self.year})" if self.year else self.title
        return f"{head}\n{self.description}" if self.description else head


class GroundedHit(BaseModel):
    """A proposal tied to a catalog item."""

    model_config = ConfigDict(extra="forbid")

    proposal: str = Field(description="The title the LLM proposed.")
    item_id: str
    title: str = Field(description="The catalog item's title.")
    method: Literal["title", "similarity"]
    score: float = Field(description="1.0 for a title match, else the cosine similarity.")


class GroundReport(BaseModel):
    """What generate-then-ground did for one request."""

    model_config = ConfigDict(extra="forbid")

    proposed: int = 0
    grounded: int = 0
    by_title: int = 0
    by_similarity: int = 0
    discarded_no_match: int = 0
    duplicates: int = 0
    failed: str | None = Field(default=None, description="Why the LLM gave no usable proposals (if it did not).")
    discarded: list[str] = Field(default_factory=list, description="A few proposed titles that matched nothing.")
    hits: list[GroundedHit] = Field(default_factory=list, description="Grounded items, in proposal order.")
    prompt_version: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def ranking(self) -> list[tuple[str, float]]:
        """The hits as a candidate-source list (best first)."""
        return [(h.item_id, h.score) for h in self.hits]


def parse_proposals(value: Any, max_items: int) -> list[Proposal] | None:
    """Proposals in a decoded JSON value or raw text (None when it is not a proposal list); entries without a
    usable title (empty, the prompt's placeholder) are dropped."""
    if isinstance(value, str):
        try:
            value = loads_lenient(value)
        except ValueError:
            return None
    if not isinstance(value, dict) or not isinstance(value.get("items"), list):
        return None
    out: list[Proposal] = []
    for entry in value["items"][:max_items]:
        try:
            proposal = Proposal.model_validate(entry)
        except ValidationError:
            continue
        if not _PLACEHOLDER.match(proposal.title):
            out.append(proposal)
    return out


class Grounder:
    """Ties proposals to the items of one collection (title index built on first use, then kept)."""

    def __init__(self, collection: ItemCollection, embedder: Embedder, *, min_similarity: float = 0.6) -> None:
        self.collection = collection
        self.embedder = embedder
        self.min_similarity = min_similarity

    @cached_property
    def _index(self) -> tuple[dict[tuple[str, ...], list[str]], dict[str, str], dict[str, int]]:
        titles: dict[tuple[str, ...], list[str]] = defaultdict(list)
        title_of: dict[str, str] = {}
        year_of: dict[str, int] = {}
        ids = self.collection.ids()
        for start in range(0, len(ids), 1000):
            for item_id, meta in self.collection.get_metadata(ids[start : start + 1000]).items():
                title = str(meta.get("title") or item_id)
                title_of[item_id] = title
                year = meta.get("year")
                if isinstance(year, int) and not isinstance(year, bool):
                    year_of[item_id] = year
                for form in title_forms(title):
                    titles[form].append(item_id)
        return dict(titles), title_of, year_of

    def refresh(self) -> None:
        """Forget the title index (call after the collection changed)."""
        self.__dict__.pop("_index", None)

    def by_title(self, proposal: Proposal) -> str | None:
        """The catalog id whose title has one of the proposal's normal forms (and whose year, when both are
        known, is within one of the proposal's); the longest form wins."""
        titles, _, year_of = self._index
        for form in sorted(title_forms(proposal.title), key=len, reverse=True):
            ids = titles.get(form, [])
            if proposal.year is not None:
                ids = [i for i in ids if i not in year_of or abs(year_of[i] - proposal.year) <= 1]
            if ids:
                return ids[0]
        return None

    def ground(self, proposals: Sequence[Proposal], report: GroundReport | None = None) -> GroundReport:
        """Ground every proposal (see the module doc); fills and returns ``report``."""
        report = report or GroundReport()
        report.proposed += len(proposals)
        _, title_of, _ = self._index
        found: list[tuple[Proposal, str, str, float] | None] = []
        pending: list[int] = []
        for i, proposal in enumerate(proposals):
            item_id = self.by_title(proposal)
            found.append((proposal, item_id, "title", 1.0) if item_id is not None else None)
            if item_id is None:
                pending.append(i)
        if pending:
            vectors = self.embedder.embed([proposals[i].text() for i in pending], progress=False)
            for i, hits in zip(pending, self.collection.query(vectors, 1), strict=True):
                if hits and hits[0][1] >= self.min_similarity:
                    found[i] = (proposals[i], hits[0][0], "similarity", float(hits[0][1]))
        seen: set[str] = set()
        for i, entry in enumerate(found):
            if entry is None:
                report.discarded_no_match += 1
                if len(report.discarded) < MAX_DISCARDED_SHOWN:
                    report.discarded.append(proposals[i].title[:120])
                continue
            proposal, item_id, method, score = entry
            if item_id in seen:
                report.duplicates += 1
                continue
            seen.add(item_id)
            report.grounded += 1
            report.by_title += method == "title"
            report.by_similarity += method == "similarity"
            report.hits.append(
                GroundedHit(
                    proposal=proposal.title[:300],
                    item_id=item_id,
                    title=title_of.get(item_id, item_id),
                    method=method,  # type: ignore[arg-type]
                    score=round(score, 4),
                )
            )
        return report


def propose_and_ground(
    engine: LLMEngine | None,
    registry: PromptRegistry,
    grounder: Grounder,
    requests: Sequence[tuple[str, Sequence[str]]],
    settings: Settings,
    *,
    engine_error: str | None = None,
) -> list[GroundReport]:
    """For each ``(need, liked titles)``: ask for proposals (all requests in ONE engine call, failing ones
    isolated) and ground them. A request whose output is unusable gets ``failed`` and no hits."""
    template = registry.get(settings.ground_template)
    if template.task != "propose_items":
        raise ConfigError(
            f"template {template.name!r} has task {template.task!r}, not propose_items",
            hint="set RECAGENT_GROUND_TEMPLATE to a propose_items template (`recagent prompts list`)",
        )
    n = settings.ground_max_proposals
    reports = [GroundReport(prompt_version=template.version_id) for _ in requests]
    todo: list[int] = []
    messages: list[list[dict[str, str]]] = []
    for i, (need, liked) in enumerate(requests):
        try:
            rendered = template.render({"need": need, "n": n, "liked": list(liked)[-10:]}, allow_extra=True)
        except PromptError as exc:
            reports[i].failed = f"prompt_error: {exc.message}"[:200]
            continue
        todo.append(i)
        messages.append(rendered.chat_messages())
    if not todo:
        return reports
    if engine is None:
        for i in todo:
            reports[i].failed = f"engine_error: {engine_error or 'no LLM engine'}"[:300]
        return reports
    schema = template.output_schema(n)
    outcome = generate_batch(engine, messages, json_schema=schema, max_tokens=settings.ground_max_tokens,
                             seed=settings.seed, timeout=settings.rerank_timeout_s)  # fmt: skip
    for i, result in zip(todo, outcome.results, strict=True):
        report = reports[i]
        value: Any
        if isinstance(result, CallFailure):
            raw = getattr(result.error, "raw", None)
            if result.reason != "invalid_output" or not isinstance(raw, str):
                report.failed = result.reason
                continue
            value = raw  # complete JSON that the strict parser refused may still be usable
        else:
            report.prompt_tokens, report.completion_tokens = result.prompt_tokens, result.completion_tokens
            value = _value_of(result)
        proposals = parse_proposals(value, n)
        if proposals is None:
            report.failed = "invalid_output"
            continue
        grounder.ground(proposals, report)
    return reports


def _value_of(result: Generation) -> Any:
    return result.parsed if result.parsed is not None else result.text
