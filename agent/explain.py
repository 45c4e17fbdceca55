"""Grounded justifications: one ``explain`` prompt per recommended item, checked against the item's real fields.

Flow per item (all items of all users in ONE engine call per attempt):

1. A draft (a listwise ranking's justification) is checked first; if it passes it is kept.
2. Otherwise the ``explain`` template is asked, with a per-request JSON schema whose ``field`` enum lists the
   item's fields; the answer (``justification`` + ``cited``) is checked.
3. A justification that fails the check is re-asked ONCE (sampled: ``retry_temperature``, ``seed + 1``); a draft
   that failed counts as the first attempt, so step 2 is its re-ask.
4. What still fails is replaced by a template justification built from the fields the item shares with the
   user's history and stated likes (generic: no field name is special).

The check (:func:`check_grounding`): the text is not empty and not the prompt's placeholder (``<one sentence>``);
every cited value exists in that field of the item (case-insensitive;
list fields: membership of each listed value; numbers and years: equality; text fields: substring) or in the
user's request or stated likes; the sentence mentions no 4-digit year absent from the item and the user's
context; and it names no other candidate's title.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.evidence import norm
from agent.llm.base import Generation, LLMEngine
from agent.llm.batching import CallFailure, call_batch, json_value
from agent.schemas import CandidateItem, Citation, JustificationSource, RerankConfig, UserContext
from agent.sentence_check import broken_text, echoes_request, false_values, references
from prompts import PromptRegistry, clean_data, explain_schema

__all__ = [
    "ExplainRequest",
    "Justification",
    "check_grounding",
    "explain",
    "explain_many",
    "instruction_text",
    "quotes_prompt",
    "template_justification",
]

_YEAR = re.compile(r"(?<!\d)(1[0-9]{3}|20[0-9]{2})(?!\d)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LIST_SPLIT = re.compile(r",|;|/|&|\band\b")
_PUNCT = " .,;:!?\"'`()[]{}"
_PAREN_TAIL = re.compile(r"\s*\([^()]*\)\s*$")
_PLACEHOLDER = re.compile(r"^\W*<[^<>]*>\W*$")  # '<one sentence>' copied from the prompt's answer shape
MIN_TITLE_CHARS = 4
_WORD = re.compile(r"[a-z0-9']+")
_TASK_HEADING = "\n# Your task"
QUOTE_WORDS = 8


def instruction_text(messages: Sequence[dict[str, str]]) -> str:
    """The instructions of a rendered prompt: its system message(s) and the user message's ``# Your task`` part
    (the rest of the user message is data: catalog fields, the user's words)."""
    parts = []
    for m in messages:
        content = m.get("content", "")
        if m.get("role") == "system":
            parts.append(content)
        elif _TASK_HEADING in content:
            parts.append(content[content.rindex(_TASK_HEADING) :])
    return "\n".join(parts)


def quotes_prompt(text: str, instructions: str, n: int = QUOTE_WORDS) -> bool:
    """Whether ``text`` repeats ``n`` consecutive words of ``instructions``: an answer that recites the prompt it
    was given (a prompt-injection success, or a weak model echoing) is neither a justification nor a reply."""
    words = _WORD.findall(text.lower())
    if len(words) < n or not instructions:
        return False
    said = {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
    source = _WORD.findall(instructions.lower())
    return any(tuple(source[i : i + n]) in said for i in range(len(source) - n + 1))


@dataclass
class ExplainRequest:
    """Justify ``item`` for ``user``; ``others`` are the request's other candidates (their titles must not be
    named); ``draft`` is a justification to check before asking the model (listwise output)."""

    user: UserContext
    item: CandidateItem
    others: Sequence[CandidateItem] = ()
    draft: str | None = None
    config: RerankConfig = field(default_factory=RerankConfig)


@dataclass
class Justification:
    text: str | None = None
    source: JustificationSource | None = None
    grounded: bool | None = None
    note: str | None = None
    cited: list[Citation] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    raw: list[str] = field(default_factory=list)
    prompt_version: str | None = None
    layout: str | None = None


class _ExplainOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    justification: str
    cited: list[Citation] = []


# ------------------------------------------------------------------------------------------------ grounding
def _norm(value: Any) -> str:
    return norm(value).strip(_PUNCT)


def _field_value(item: CandidateItem, name: str) -> Any:
    if name == "title":
        return item.title
    if name in item.item.metadata:
        return item.item.metadata[name]
    return item.item.texts.get(name)


def value_in_field(value: str, field_value: Any) -> bool:
    """Whether ``value`` (as a model copied it) is in ``field_value`` (an item's field)."""
    v = _norm(value)
    if not v or field_value is None:
        return False
    if isinstance(field_value, bool):
        return v in ({"yes", "true"} if field_value else {"no", "false"})
    if isinstance(field_value, int | float):
        numbers = _NUMBER.findall(v)
        return bool(numbers) and all(abs(float(x) - float(field_value)) < 1e-9 for x in numbers)
    if isinstance(field_value, list):
        members = {_norm(x) for x in field_value}
        if v in members:
            return True
        parts = [p for p in (_norm(x) for x in _LIST_SPLIT.split(v)) if p]
        return bool(parts) and all(p in members for p in parts)
    return v in _norm(field_value)


def _in_user_context(value: str, user: UserContext) -> bool:
    v = _norm(value)
    if not v:
        return False
    if any(_norm(p.value) == v for p in user.liked_attributes):
        return True
    need = _norm(user.need)
    return len(v) >= 3 and re.search(rf"(?<!\w){re.escape(v)}(?!\w)", need) is not None


def _context_years(item: CandidateItem, user: UserContext) -> set[str]:
    texts: list[Any] = [item.title, *item.item.metadata.values(), *item.item.texts.values(), user.need]
    texts += [p.value for p in user.liked_attributes]
    for h in user.history:
        texts += [h.title, *h.attributes.values()]
    return {y for t in texts for y in _YEAR.findall(clean_data(t))}


def _title_forms(title: str) -> list[str]:
    forms = {_norm(title), _norm(_PAREN_TAIL.sub("", title))}
    return [f for f in forms if len(f) >= MIN_TITLE_CHARS]


def _names_other(text: str, other: CandidateItem, item: CandidateItem, user: UserContext) -> bool:
    said = _norm(text)
    own = _norm(item.title) + " " + " ".join(_norm(t) for t in item.item.texts.values())
    known = " ".join(_norm(h.title) for h in user.history) + " " + _norm(user.need)
    for form in _title_forms(other.title):
        if form in own or form in known:
            continue  # a sequel, a franchise name, or something the user mentioned: not another item's claim
        if re.search(rf"(?<!\w){re.escape(form)}(?!\w)", said):
            return True
    return False


_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def first_sentence(text: str, limit: int = 200) -> str:
    """The justification as shown: its first sentence, without leading markup, at most ``limit`` characters.

    A weak model often starts well and then rambles into invented plot; only the first sentence is kept (and
    checked), so the rambling never reaches the user."""
    text = re.sub(r"^[\s>*:\-–—#]+", "", text.strip())
    text = _SENTENCE_END.split(text, maxsplit=1)[0].strip()
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def check_grounding(
    text: str | None,
    cited: Sequence[Citation],
    item: CandidateItem,
    user: UserContext,
    others: Sequence[CandidateItem] = (),
    *,
    require_citation: bool = True,
    require_reference: bool = True,
    written: str | None = None,
) -> tuple[bool, str]:
    """``(ok, note)``: whether the justification is about this item, readable, and states only what the item
    (or the user) says. ``written``: the part the model wrote (default: all of ``text``), where values of the
    candidates' fields that the item lacks are refused (an evidence prefix built from real values is exempt)."""
    problems: list[str] = []
    if not text or not text.strip():
        problems.append("empty justification")
    elif _PLACEHOLDER.match(text):
        problems.append("copies the prompt's placeholder instead of a sentence")
    else:
        problems += _sentence_problems(text, item, user, others, require_reference, written)
    if require_citation and not cited:
        problems.append("cites no field")
    for c in cited:
        if value_in_field(c.value, _field_value(item, c.field)) or _in_user_context(c.value, user):
            continue
        problems.append(f"cites {c.field}={c.value!r}, which the item does not have")
    years = sorted(set(_YEAR.findall(text or "")) - _context_years(item, user))
    if years:
        problems.append(f"mentions year(s) {', '.join(years)} that the item does not show")
    named = [o.title for o in others if o.id != item.id and _names_other(text or "", o, item, user)]
    if named:
        problems.append(f"names another candidate ({', '.join(map(repr, named[:3]))})")
    if problems:
        return False, "; ".join(problems)
    if cited:
        return True, f"cited values found: {', '.join(f'{c.field}={c.value!r}' for c in cited[:4])}"
    return True, "no citations; no false year and no other candidate named"


def _sentence_problems(
    text: str,
    item: CandidateItem,
    user: UserContext,
    others: Sequence[CandidateItem],
    require_reference: bool,
    written: str | None,
) -> list[str]:
    """Broken characters, no reference to the item, an echo of the request, values the item lacks."""
    problems = []
    bare = text
    for title in [item.title, *(h.title for h in user.history), *(o.title for o in others)]:
        bare = bare.replace(title, " ")  # a title's own brackets are not broken text
    broken = broken_text(bare)
    if broken:
        problems.append(broken)
    refs = references(text, item, user)
    if require_reference and not refs.item:
        problems.append("names nothing of the item (no title, field value or word of its text)")
    elif require_reference and echoes_request(text, refs, user):
        problems.append("echoes the request without naming anything of the item")
    wrong = false_values(written or text, item, user, [item, *others], history=written is None)
    if wrong:
        problems.append(f"names value(s) the item does not have ({', '.join(map(repr, wrong[:3]))})")
    return problems


# ------------------------------------------------------------------------------------------------ template
def _join(values: Sequence[str]) -> str:
    values = list(values)
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + " and " + values[-1]


def _string_values(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if str(v).strip()]
    if isinstance(value, str) and value.strip():
        return [value]
    return []


_NOTHING_KNOWN = "A top candidate overall (nothing is known about your taste yet)"


def _knows_user(user: UserContext) -> bool:
    """Whether anything personal (history, likes, dislikes, a request) went into the ranking."""
    return bool(user.history or user.need.strip() or user.liked_attributes or user.disliked_attributes)


def template_justification(item: CandidateItem, user: UserContext) -> tuple[str, list[Citation]]:
    """A sentence built only from the item's real fields: the values it shares with the user's history and
    stated likes, what the user's request names, and one numeric field."""
    disliked = {(p.field, _norm(p.value)) for p in user.disliked_attributes}
    interest: Counter[tuple[str, str]] = Counter()
    for h in user.history:
        for name, value in h.attributes.items():
            interest.update((name, _norm(v)) for v in _string_values(value))
    for p in user.liked_attributes:
        interest[(p.field, _norm(p.value))] += 2
    need = _norm(user.need)

    shared: dict[str, list[str]] = {}
    asked: list[Citation] = []
    for name, value in item.item.metadata.items():
        for v in _string_values(value):
            key = (name, _norm(v))
            if key in disliked:
                continue
            if interest[key] > 0:
                shared.setdefault(name, []).append(clean_data(v))
            elif len(key[1]) >= 3 and re.search(rf"(?<!\w){re.escape(key[1])}(?!\w)", need):
                asked.append(Citation(field=name, value=clean_data(v)))
    cited: list[Citation] = []
    parts: list[str] = []
    if shared:
        ranked = sorted(shared.items(), key=lambda kv: -max(interest[(kv[0], _norm(v))] for v in kv[1]))[:2]
        phrases = []
        for name, values in ranked:
            top = sorted(values, key=lambda v: -interest[(name, _norm(v))])[:3]
            phrases.append(f"{_join(top)} ({clean_data(name)})")
            cited += [Citation(field=name, value=v) for v in top]
        parts.append("Matches your interest in " + " and ".join(phrases))
    if asked:
        parts.append("fits your request for " + _join([c.value for c in asked[:2]]))
        cited += asked[:2]
    used = {c.field for c in cited}
    numeric = next(
        (
            (n, v)
            for n, v in item.item.metadata.items()
            if n not in used and isinstance(v, int | float) and not isinstance(v, bool)
        ),
        None,
    )
    if not parts:
        lead = "Ranked highly for you among the candidates" if _knows_user(user) else _NOTHING_KNOWN
        first = next(((n, _string_values(v)) for n, v in item.item.metadata.items() if _string_values(v)), None)
        if first is not None:
            values = [clean_data(v) for v in first[1][:3]]
            parts.append(f"{lead}; {clean_data(first[0])}: {', '.join(values)}")
            cited += [Citation(field=first[0], value=v) for v in values]
        else:
            parts.append(lead)
    if numeric is not None:
        value = clean_data(numeric[1])
        parts.append(f"{clean_data(numeric[0])}: {value}")
        cited.append(Citation(field=numeric[0], value=value))
    sentence = "; ".join(parts)
    return sentence[0].upper() + sentence[1:] + ".", cited


def _use_template(out: Justification, req: ExplainRequest, note: str, *, flag: bool = True) -> None:
    out.text, out.cited = template_justification(req.item, req.user)
    earlier = out.note if out.note and out.note.startswith("listwise") else None
    out.source, out.grounded, out.note = "template", True, f"{earlier}; {note}" if earlier else note
    if flag:
        out.flags.append("template_justification")


# ------------------------------------------------------------------------------------------------ LLM
def item_prompt_vars(item: CandidateItem) -> dict[str, Any]:
    """The item as the explain template shows it: every field (metadata and free text) is an attribute, so
    the fields the prompt lists are exactly the schema's ``field`` enum."""
    attributes: dict[str, Any] = {k: v for k, v in item.item.metadata.items() if k != "title"}
    attributes.update({k: v for k, v in item.item.texts.items() if v and k != "title"})
    return {"title": item.title, "attributes": attributes}


def _parse(gen: Generation | str) -> _ExplainOutput | None:
    value = json_value(gen)
    if value is None:
        return None
    try:
        return _ExplainOutput.model_validate(value)
    except ValidationError:
        return None


def _ask(
    engine: LLMEngine,
    registry: PromptRegistry,
    reqs: Sequence[ExplainRequest],
    outs: Sequence[Justification],
    *,
    retry: bool,
) -> list[_ExplainOutput | str]:
    """One batched explain call; per request the parsed output or a failure reason."""
    config = reqs[0].config
    messages, schemas = [], []
    for req, out in zip(reqs, outs, strict=True):
        rendered = registry.render(
            req.config.explain_template,
            {
                "item": item_prompt_vars(req.item),
                "history": req.user.prompt_history(req.config.history_limit),
                "need": req.user.prompt_need(),
            },
            allow_extra=True,
        )
        out.prompt_version, out.layout = rendered.version_id, "chat"
        messages.append(rendered.chat_messages())
        schemas.append(explain_schema(req.item.field_names()))
    outcome = call_batch(
        engine,
        len(reqs),
        lambda idx: engine.generate(
            [messages[i] for i in idx],
            json_schema=[schemas[i] for i in idx],
            max_tokens=max(r.config.explain_max_tokens for r in reqs),
            temperature=config.retry_temperature if retry else config.temperature,
            seed=config.seed + (1 if retry else 0),
        ),
        timeout=config.explain_timeout_s,
    )
    instructions = [instruction_text(m) for m in messages]
    results: list[_ExplainOutput | str] = []
    for res, out in zip(outcome.results, outs, strict=True):
        out.llm_calls += 1
        if isinstance(res, CallFailure):
            raw = getattr(res.error, "raw", None)
            if isinstance(raw, str):
                out.raw.append(raw)
                recovered = _parse(raw) if res.reason == "invalid_output" else None
                if recovered is not None:  # complete JSON the strict parser refused (raw control characters)
                    results.append(recovered)
                    continue
            results.append(res.reason)
            continue
        out.raw.append(res.text)
        out.prompt_tokens += res.prompt_tokens
        out.completion_tokens += res.completion_tokens
        parsed = _parse(res)
        if parsed is not None and quotes_prompt(parsed.justification, instructions[len(results)]):
            results.append("quotes the prompt's instructions")
            continue
        results.append(parsed if parsed is not None else "invalid_output")
    return results


def _explain_by_layout(
    engine: LLMEngine,
    registry: PromptRegistry,
    requests: Sequence[ExplainRequest],
    outs: Sequence[Justification],
    ask: list[int],
    timings: dict[str, float],
) -> list[int]:
    """Justify the requests whose layout resolves to few-shot (one batch per template); return the others."""
    from agent.explain_fewshot import explain_fewshot, resolve_layout

    groups: dict[str, list[int]] = {}
    chat: list[int] = []
    for i in ask:
        cfg = requests[i].config
        if resolve_layout(cfg.prompt_format, engine, registry, cfg.explain_template) == "fewshot":
            groups.setdefault(cfg.explain_template, []).append(i)
        else:
            chat.append(i)
    for todo in groups.values():
        explain_fewshot(engine, registry, [requests[i] for i in todo], [outs[i] for i in todo], timings)
    return chat


def explain_many(
    engine: LLMEngine | None, registry: PromptRegistry, requests: Sequence[ExplainRequest]
) -> tuple[list[Justification], dict[str, float]]:
    """Justify every request's item; at most two engine calls in all (first ask, one re-ask). The sampling
    settings (temperature, seed, timeout) of the batch are those of the first LLM request's config.
    Returns the justifications and the wall time of each call in ms."""
    outs = [Justification() for _ in requests]
    timings: dict[str, float] = {}
    ask: list[int] = []
    for i, req in enumerate(requests):
        mode = req.config.explain
        if mode == "none":
            continue
        if mode == "template":
            _use_template(outs[i], req, "template justification (explain=template)", flag=False)
            continue
        if req.draft is not None:
            ok, note = check_grounding(req.draft, [], req.item, req.user, req.others, require_citation=False)
            if ok:
                outs[i].text, outs[i].source, outs[i].grounded, outs[i].note = req.draft, "listwise", True, note
                continue
            outs[i].note = f"listwise justification rejected: {note}"
            outs[i].flags.append("regenerated")
        ask.append(i)
    if not ask:
        return outs, timings
    if engine is None:
        for i in ask:
            _use_template(outs[i], requests[i], "no LLM engine: template justification")
        return outs, timings
    ask = _explain_by_layout(engine, registry, requests, outs, ask, timings)
    retry: list[int] = []
    for attempt, todo in (("explain", ask), ("explain_retry", retry)):
        if not todo:
            continue
        started = time.perf_counter()
        is_retry = attempt == "explain_retry"
        answers = _ask(engine, registry, [requests[i] for i in todo], [outs[i] for i in todo], retry=is_retry)
        timings[attempt] = (time.perf_counter() - started) * 1000
        for i, answer in zip(todo, answers, strict=True):
            req, out = requests[i], outs[i]
            last_try = is_retry or "regenerated" in out.flags
            if isinstance(answer, str):
                reason = f"explain failed ({answer})"
                if answer == "invalid_output" and not last_try:
                    out.note, out.flags = reason, [*out.flags, "regenerated"]
                    retry.append(i)
                else:
                    _use_template(out, req, f"{reason}: template justification")
                continue
            sentence = first_sentence(answer.justification)
            ok, note = check_grounding(sentence, answer.cited, req.item, req.user, req.others)
            if ok:
                out.text, out.cited, out.source, out.grounded = sentence, answer.cited, "llm", True
                out.note = note if not out.note else f"{out.note}; re-asked: {note}"
            elif last_try:
                _use_template(out, req, f"LLM justification rejected ({note}): template justification")
            else:
                out.note, out.flags = f"LLM justification rejected: {note}", [*out.flags, "regenerated"]
                retry.append(i)
    return outs, timings


def explain(
    engine: LLMEngine | None,
    registry: PromptRegistry,
    user: UserContext,
    items: Sequence[CandidateItem],
    *,
    config: RerankConfig | None = None,
    others: Sequence[CandidateItem] | None = None,
) -> list[Justification]:
    """Justify ``items`` for one user (``others``: every candidate shown, default ``items``)."""
    config = config or RerankConfig()
    pool = list(others) if others is not None else list(items)
    reqs = [ExplainRequest(user=user, item=it, others=pool, config=config) for it in items]
    return explain_many(engine, registry, reqs)[0]
