"""Recommendations first, justifications after: the ranked items go out at once with template reasons, and the
LLM justifications are written afterwards and filled in as they arrive.

    contexts --defer()--> rank_many (explain="template": no justification engine call)
             --pending_requests()--> ExplainRequest per shown item (the ranking's config, explain="llm")
             --justify_events()--> one JustificationEvent per item, chunk by chunk (``justify_chunk`` items per
                                   engine call; 0: all in one call)

Used by :meth:`agent.pipeline.Recommender.justify_events` (the CLI table, the SSE recommend endpoint and streamed
chat turns). A request whose ranking fell back, or whose config does not ask for LLM justifications, has nothing
pending. Errors of the later phase never lose an item: its template reason stays, and the event says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.errors import RecagentError
from agent.explain import ExplainRequest, Justification, explain_many, template_justification
from agent.llm.base import LLMEngine
from agent.schemas import Citation, JustificationSource, RankedItem, RankingContext, RerankResult
from prompts import PromptRegistry

__all__ = ["PENDING_FLAG", "JustificationEvent", "defer", "justify_events", "pending_requests"]

log = logging.getLogger(__name__)

PENDING_FLAG = "justification_pending"
"""Flag of an item whose template reason is shown while its LLM justification is being written."""
PENDING_NOTE = "template reason shown first; the LLM justification follows"


class JustificationEvent(BaseModel):
    """The final justification of one shown item (rank order)."""

    model_config = ConfigDict(extra="forbid")

    rank: int
    item_id: str
    justification: str | None
    justification_source: JustificationSource | None
    grounded: bool | None
    grounding_note: str | None
    cited: list[Citation] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)
    error: str | None = Field(None, description="Why the LLM justification is missing (the template reason stays).")
    elapsed_ms: float = Field(0.0, description="Milliseconds since the later phase started.")


def defer(ctx: RankingContext) -> RankingContext:
    """``ctx`` ranked with template reasons when it asks for LLM justifications (unchanged otherwise)."""
    if ctx.config.explain != "llm":
        return ctx
    return ctx.model_copy(update={"config": ctx.config.model_copy(update={"explain": "template"})})


def pending_requests(ctx: RankingContext, result: RerankResult) -> list[ExplainRequest]:
    """The explain requests of the shown items of ``result`` (ranked from ``defer(ctx)``), for ``ctx``'s config;
    empty when nothing is to be written later (no LLM justifications asked for, or the ranking fell back).
    Marks the pending items (flag, note) in place."""
    if ctx.config.explain != "llm" or result.fallback_reason is not None:
        return []
    by_id = {c.id: c for c in ctx.candidates}
    out = []
    for item in result.items:
        out.append(ExplainRequest(ctx.user, by_id[item.item_id], ctx.candidates, None, ctx.config))
        item.flags = [f for f in item.flags if f != "template_justification"] + [PENDING_FLAG]
        item.grounding_note = PENDING_NOTE
    return out


def _failed(requests: Sequence[ExplainRequest], why: str) -> list[Justification]:
    """Template reasons for ``requests`` after a failure of the later phase."""
    out = []
    for req in requests:
        text, cited = template_justification(req.item, req.user)
        out.append(Justification(text=text, source="template", grounded=True, cited=cited,
                                 note=f"LLM justification failed ({why}): template reason kept",
                                 flags=["template_justification"]))  # fmt: skip
    return out


def _event(item: RankedItem, just: Justification, started: float) -> JustificationEvent:
    error = None
    if just.source == "template":
        error = just.note or "template reason"
    return JustificationEvent(
        rank=item.rank,
        item_id=item.item_id,
        justification=just.text,
        justification_source=just.source,
        grounded=just.grounded,
        grounding_note=just.note,
        cited=list(just.cited),
        flags=[f for f in item.flags if f != PENDING_FLAG] + [f for f in just.flags if f not in item.flags],
        error=error,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def justify_events(
    engine: LLMEngine | None,
    registry: PromptRegistry,
    items: Sequence[RankedItem],
    requests: Sequence[ExplainRequest],
    *,
    chunk: int = 0,
    usage: dict[str, Any] | None = None,
) -> Iterator[JustificationEvent]:
    """Write the justifications of ``items`` (their ``requests``, same order), ``chunk`` items per engine call
    (0: one call), and yield one event per item as its chunk finishes. ``usage`` (when given) collects
    ``prompt_tokens``, ``completion_tokens``, ``llm_calls``, ``prompt_versions`` and ``ms``. Never raises for engine
    or prompt problems: the template reason stays and the event's ``error`` says why."""
    started = time.perf_counter()
    size = chunk if chunk > 0 else max(1, len(requests))
    for at in range(0, len(requests), size):
        part = list(requests[at : at + size])
        try:
            notes, _ = explain_many(engine, registry, part)
        except RecagentError as exc:
            log.warning("later justifications failed: %s", exc.message)
            notes = _failed(part, exc.message)
        except Exception as exc:
            log.exception("later justifications failed")
            notes = _failed(part, f"{type(exc).__name__}: {exc}")
        for item, just in zip(items[at : at + size], notes, strict=True):
            if usage is not None:
                usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + just.prompt_tokens
                usage["completion_tokens"] = usage.get("completion_tokens", 0) + just.completion_tokens
                usage["llm_calls"] = usage.get("llm_calls", 0) + just.llm_calls
                if just.prompt_version:
                    usage.setdefault("prompt_versions", []).append(just.prompt_version)
            yield _event(item, just, started)
    if usage is not None:
        usage["ms"] = round((time.perf_counter() - started) * 1000, 1)
