"""User-need profiles: a short LLM-written paragraph about a user's tastes, from their history and request.

    UserContext (history items with attributes and ratings, need) -> ``user_profile`` template -> one engine batch
    for every user not in the cache -> cleaned, clipped text (or None with a reason) -> ``UserQuery.profile``

The pipeline (agent/pipeline.py) writes profiles only when the "profile" candidate source has a fusion weight
above 0 or a request asks to see its profile (``explain_profile``); the profile source then queries the catalog
with the text (retrieval/candidates.py ``ProfileSource``). Profiles are cached in ``<home>/cache/profiles.sqlite``
keyed by the rendered prompt and the model, so an unchanged user costs nothing the second time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.errors import PromptError
from agent.llm.base import LLMEngine
from agent.llm.batching import CallFailure, generate_batch
from agent.llm.cache import GenerationCache, cache_key
from agent.schemas import UserContext
from agent.settings import Settings
from prompts import PromptRegistry, clean_data

__all__ = ["CACHE_FILE", "ProfileText", "build_profiles", "clean_profile", "llm_sources_on", "source_weight"]

CACHE_FILE = "profiles.sqlite"
MIN_WORDS = 4
MIN_LETTER_SHARE = 0.6
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_CUT = re.compile(r"\n\s*\n|<<|^\s*#", re.MULTILINE)  # a new paragraph, a data marker or a heading ends it
_LABEL = re.compile(r"^\s*(?:profile|summary|answer|the user)\s*:\s*", re.IGNORECASE)

Status = Literal["generated", "cached", "failed", "skipped"]


class ProfileText(BaseModel):
    """One user's profile, or why there is none."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = None
    text: str | None = Field(default=None, description="The cleaned profile (None when there is none).")
    status: Status = "skipped"
    reason: str | None = Field(
        default=None,
        description="Why there is no profile: no_information, empty_output, garbage_output, timeout, "
        "engine_error: ..., prompt_error: ...",
    )
    prompt_version: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def source_weight(weights: Mapping[str, float], name: str) -> float:
    """A source's fusion weight; the LLM sources (profile, generated) count as off when not listed."""
    return float(weights.get(name, 0.0 if name in ("profile", "generated") else 1.0))


def llm_sources_on(weights: Mapping[str, float]) -> bool:
    """True when a candidate source that needs the LLM (profile, generated) has a weight above 0."""
    return source_weight(weights, "profile") > 0 or source_weight(weights, "generated") > 0


def clean_profile(text: str, max_chars: int) -> tuple[str | None, str | None]:
    """``(profile, None)`` or ``(None, reason)``: the first paragraph of the output, whitespace collapsed,
    cut at a sentence end (else a word) within ``max_chars``; empty -> ``empty_output``; fewer than
    ``MIN_WORDS`` words, mostly non-letters or one word repeated -> ``garbage_output``."""
    raw = clean_data(text or "", multiline=True)  # data markers '<<<' come out as '<<'

    match = _CUT.search(raw.lstrip())
    first = raw.lstrip()[: match.start()] if match else raw
    first = _LABEL.sub("", _SPACES.sub(" ", first).strip())
    if not first:
        return None, "empty_output"
    words = _WORD.findall(first)
    letters = sum(c.isalpha() for c in first)
    if len(words) < MIN_WORDS or letters / max(1, len(first.replace(" ", ""))) < MIN_LETTER_SHARE:
        return None, "garbage_output"
    top = max(words.count(w) for w in set(words))
    if top / len(words) > 0.5:
        return None, "garbage_output"
    if len(first) > max_chars:
        cut = first[:max_chars]
        ends = [m.end() for m in _SENTENCE_END.finditer(cut)]
        sentence = bool(ends) and ends[-1] >= max_chars // 3
        first = cut[: ends[-1]] if sentence else cut.rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return first.strip(), None


def build_profiles(
    engine: LLMEngine | None,
    registry: PromptRegistry,
    users: Sequence[UserContext],
    settings: Settings,
    *,
    cache: GenerationCache | None = None,
    engine_error: str | None = None,
) -> list[ProfileText]:
    """One profile per user (same order), all cache misses in ONE engine call (failing requests are isolated).

    Users with neither history nor need are skipped (``no_information``); with no engine every miss fails with
    ``engine_error`` (``engine_error`` says why). Outputs that clean to nothing are cached too (deterministic at
    temperature 0); engine errors and timeouts are not."""
    template = registry.get(settings.profile_template)
    out = [ProfileText(user_id=u.user_id, prompt_version=template.version_id) for u in users]
    model = engine.model_id if engine is not None else "?"
    keys: dict[int, str] = {}
    messages: dict[int, list[dict[str, str]]] = {}
    for i, user in enumerate(users):
        if not user.history and not user.prompt_need():
            out[i].reason = "no_information"
            continue
        variables: dict[str, Any] = {
            "history": user.prompt_history(settings.profile_history_limit),
            "need": user.prompt_need(),
        }
        try:
            rendered = template.render(variables, allow_extra=True)
        except PromptError as exc:
            out[i].status, out[i].reason = "failed", f"prompt_error: {exc.message}"[:200]
            continue
        keys[i] = cache_key(rendered.text, model, settings.profile_max_tokens, settings.seed)
        messages[i] = rendered.chat_messages()
    hits = cache.get_many(list(keys.values())) if cache is not None and engine is not None else {}
    todo = [i for i in keys if keys[i] not in hits]
    for i in keys:
        if keys[i] in hits:
            _fill(out[i], hits[keys[i]], settings, "cached")
    if todo and engine is None:
        for i in todo:
            out[i].status, out[i].reason = "failed", f"engine_error: {engine_error or 'no LLM engine'}"[:300]
        return out
    if todo:
        assert engine is not None
        outcome = generate_batch(engine, [messages[i] for i in todo], max_tokens=settings.profile_max_tokens,
                                 seed=settings.seed, timeout=settings.rerank_timeout_s)  # fmt: skip
        fresh: list[tuple[str, dict[str, Any]]] = []
        for i, result in zip(todo, outcome.results, strict=True):
            if isinstance(result, CallFailure):
                out[i].status, out[i].reason = "failed", result.reason
                continue
            record = {"text": result.text, "prompt_tokens": result.prompt_tokens,
                      "completion_tokens": result.completion_tokens}  # fmt: skip
            fresh.append((keys[i], record))
            _fill(out[i], record, settings, "generated")
        if cache is not None:
            cache.put_many(fresh)
    return out


def _fill(profile: ProfileText, record: Mapping[str, Any], settings: Settings, status: Status) -> None:
    text, reason = clean_profile(str(record.get("text", "")), settings.profile_max_chars)
    profile.text, profile.reason = text, reason
    profile.status = status if text is not None else "failed"
    profile.prompt_tokens = int(record.get("prompt_tokens", 0))
    profile.completion_tokens = int(record.get("completion_tokens", 0))
