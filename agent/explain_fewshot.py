"""Justifications for base models: a few-shot completion prompt whose answer line starts with real evidence.

Per batch (all items of all users) ONE engine call, plus at most one cheap repair of the answers that fail the
check (a more constrained continuation, below), then the template fallback:

1. worked examples come from pairs of the batch's own candidates that share a value
   (:func:`agent.evidence.fewshot_examples`): with the header they are the same for the whole batch, and the
   user's request follows them, so every prompt of a user shares one prefix (the engine's prefix cache reuses it);
2. per item, the evidence is chosen among the user's few most relevant liked items
   (:func:`agent.evidence.relevant_liked`); the open case shows that one liked item, as each example does;
3. per item, the evidence (:func:`agent.evidence.choose_evidence`: the liked item sharing the most values, the
   shared values, the values the request names) and the item's title open the answer line ("Like Heat (Crime,
   Thriller), Se7en"), and the model writes the short rest ("adds Mystery.")
   (the template's ``fewshot.max_tokens`` cap, cut at its stop string, first sentence, <= 30 words; an answer
   cut by the cap keeps its complete part: up to its first sentence end, else its last comma);
4. the repair (answers that failed) continues a longer lead: the evidence, the title and the verb the item's real
   values allow (:func:`continuation_verb`: "adds" when the item has values the evidence did not name, "is
   another" when the evidence named them all), so the model's words are the item's values, not a copy of the item
   line or another title; greedy, since the prompt differs from the first one;
5. the sentence is checked (:func:`agent.explain.check_grounding`, with the model-written part checked for values
   the item lacks) and must not recite the prompt's instructions or worked answers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.evidence import (
    MIN_TITLE,
    Evidence,
    choose_evidence,
    fewshot_examples,
    item_values,
    norm,
    relevant_liked,
    short_title,
)
from agent.llm.base import LLMEngine, accepts_stop, cut_at_stop
from agent.llm.batching import CallFailure, call_batch
from agent.schemas import CandidateItem, UserContext
from agent.sentence_check import example_title, references, repeats_itself
from prompts import PromptRegistry, RenderedPrompt

if TYPE_CHECKING:
    from agent.explain import ExplainRequest, Justification

__all__ = ["LIKED_SHOWN", "MAX_WORDS", "continuation_verb", "explain_fewshot", "resolve_layout"]

MAX_WORDS = 30
REQUEST_WORDS = 5
LIKED_SHOWN = 3


def resolve_layout(prompt_format: str, engine: LLMEngine | None, registry: PromptRegistry, template: str) -> str:
    """``chat`` or ``fewshot`` for ``prompt_format`` (auto: few-shot when the engine's model has no chat template
    and the template defines a few-shot layout that auto may pick, ``fewshot.auto``; an engine that cannot tell
    keeps the chat layout)."""
    found = registry.get(template)
    layouts = found.layouts
    if prompt_format == "fewshot" and "fewshot" in layouts:
        return "fewshot"
    automatic = found.fewshot is not None and found.fewshot.auto
    if prompt_format == "auto" and automatic and engine is not None:
        return "fewshot" if engine.has_chat_template() is False else "chat"
    return "chat"


_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_CLOSING = (".", "!", "?", ",", ";", ":", ")")


def continuation_verb(item: CandidateItem, evidence: Evidence) -> str:
    """The verb that continues the repair's lead, chosen from the item's real values: "adds" when the item has a
    categorical value the evidence does not name (the model then names it), "is another" when the evidence named
    them all (the model names one of those as the kind of pick), "is" when the item has no categorical value."""
    named = {(c.field, norm(c.value)) for c in evidence.citations()}
    values = [(f, norm(v)) for f, v in item_values(item.item.metadata)]
    if any(v not in named for v in values):
        return "adds"
    return "is another" if values else "is"


def _join(lead: str, rest: str) -> str:
    """``lead`` and the model's ``rest`` as one sentence (no space before closing punctuation)."""
    rest = rest.strip()
    if not lead or not rest:
        return lead or rest
    return f"{lead}{rest}" if rest.startswith(_CLOSING) else f"{lead} {rest}"


def _complete_part(text: str, cut: bool) -> str:
    """The first sentence of the model's ``text``; when the token cap ``cut`` it mid-sentence, its part up to the
    last comma (closed with a period), or "" when no complete part is left."""
    text = text.strip()
    parts = _SENTENCE_END.split(text, maxsplit=1)
    if len(parts) > 1 or not cut:
        return parts[0].strip()
    if text.endswith((".", "!", "?")):
        return text
    if "," not in text:
        return ""
    kept = text.rsplit(",", 1)[0].rstrip(" ,;:")
    return f"{kept}." if kept.strip() else ""


def _user_key(user: UserContext) -> str:
    return user.model_dump_json()


def _cap_words(text: str, limit: int = MAX_WORDS) -> str:
    words = text.split()
    return text if len(words) <= limit else " ".join(words[:limit]).rstrip(",;:") + "…"


class _Batch:
    """The rendered prompts of one batch and what each answer is checked against."""

    def __init__(self, registry: PromptRegistry, reqs: Sequence[ExplainRequest]) -> None:
        from agent.explain import item_prompt_vars

        template = registry.get(reqs[0].config.explain_template)
        spec = template.fewshot
        assert spec is not None
        targets = {r.item.id for r in reqs}
        # items whose title has markup characters ("B*A*P*S") make worked answers the check would refuse
        pool = [c for r in reqs for c in r.others if example_title(c.title) is not None]
        needs = any(r.user.prompt_need() for r in reqs)
        self.examples = fewshot_examples(pool, targets, spec.examples, with_request=needs)
        groups: dict[str, list[CandidateItem]] = {}
        for r in reqs:
            groups.setdefault(_user_key(r.user), []).append(r.item)
        liked = {key: relevant_liked(r.user, groups[key], LIKED_SHOWN) for r in reqs for key in [_user_key(r.user)]}
        shown_titles = {t for e in self.examples for t in (str(e["liked"]), str(e["item"]["title"]))}
        self.evidence: list[Evidence] = []
        self.titles: list[set[str]] = []
        self.leads: list[str] = []  # the answer line's start that the first attempt continues
        self.repair_leads: list[str] = []  # the longer start that the repair continues
        self.prompts: list[RenderedPrompt] = []
        self.repair_prompts: list[RenderedPrompt] = []
        for r in reqs:
            shown = liked[_user_key(r.user)]
            ev = choose_evidence(r.item, r.user, shown)
            lead = f"{ev.prefix()} {short_title(r.item.title)}".strip()
            variables: dict[str, Any] = {
                "item": item_prompt_vars(r.item),
                "history": [],
                "need": r.user.prompt_need(),
                "liked": ev.liked or "(nothing yet)",
                "examples": self.examples,
                "evidence": lead,
            }
            self.evidence.append(ev)
            self.titles.append(shown_titles | ({ev.liked} if ev.liked else set()))
            self.leads.append(lead)
            self.prompts.append(template.render(variables, allow_extra=True, layout="fewshot"))
            repair = f"{lead} {continuation_verb(r.item, ev)}"
            self.repair_leads.append(repair)
            self.repair_prompts.append(
                template.render({**variables, "evidence": repair}, allow_extra=True, layout="fewshot")
            )
        header = self.prompts[0].text.split("\n", 1)[0]
        self.instructions = "\n".join([header, *(str(e["answer"]) for e in self.examples)])
        self.max_tokens = spec.max_tokens
        self.stop = list(spec.stop)


def _ask(engine: LLMEngine, batch: _Batch, todo: Sequence[int], reqs: Sequence[ExplainRequest], retry: bool) -> list:
    config = reqs[todo[0]].config
    stop: dict[str, Any] = {"stop": batch.stop} if accepts_stop(engine) else {}  # else cut after decoding
    prompts = batch.repair_prompts if retry else batch.prompts
    outcome = call_batch(
        engine,
        len(todo),
        lambda idx: engine.generate(
            [prompts[todo[i]].text for i in idx],
            max_tokens=batch.max_tokens,
            temperature=config.temperature,  # the repair's prompt differs: no need to sample
            seed=config.seed + (1 if retry else 0),
            **stop,
        ),
        timeout=config.explain_timeout_s,
    )
    return list(outcome.results)


def _written_problem(written: str, shown: set[str], req: ExplainRequest) -> str | None:
    """What the model-written rest must do beyond the general check: name something of the item besides its
    title, name no other title the prompt showed (liked items, worked examples), not copy the request."""
    from agent.explain import quotes_prompt

    short = short_title(req.item.title)
    own = {req.item.title, short}
    rest = written
    tail = req.item.title[len(short) :].strip() if req.item.title.startswith(short) else ""
    if tail and rest.lstrip().startswith(tail):
        rest = rest.lstrip()[len(tail) :]  # "(1994)" after the prefilled short title is the title's own year
    for title in sorted(own, key=len, reverse=True):
        rest = rest.replace(title, " ")  # the title's own words and year are not something said about it
    refs = references(rest, req.item, req.user)
    if not [r for r in refs.item if r not in own]:
        return "says nothing about the item beyond its title"
    if repeats_itself(written):
        return "repeats itself"
    said = f" {' '.join(written.casefold().split())} "
    named = sorted(t for t in shown - own if len(t) >= MIN_TITLE and f" {t.casefold()}" in said)
    if named:
        return f"names another item from the prompt ({', '.join(map(repr, named[:2]))})"
    if quotes_prompt(written, req.user.need, REQUEST_WORDS):
        return "copies the request"
    return None


def _judge(batch: _Batch, i: int, req: ExplainRequest, out: Justification, result: Any, retry: bool) -> str | None:
    """Record one answer on ``out``; the reason it failed, or None when it passed."""
    from agent.explain import check_grounding, quotes_prompt

    out.llm_calls += 1
    if isinstance(result, CallFailure):
        return f"explain failed ({result.reason})"
    out.raw.append(result.text)
    out.prompt_tokens += result.prompt_tokens
    out.completion_tokens += result.completion_tokens
    answer = cut_at_stop(result.text, batch.stop).strip()
    if not answer:
        return "the model wrote nothing after the evidence"
    cut = answer == result.text.strip() and result.finish_reason == "length"
    written = _complete_part(answer, cut)
    if not written:
        return "cut off by the token cap before the sentence ended"
    prefix = batch.repair_leads[i] if retry else batch.leads[i]
    sentence = _cap_words(_join(prefix, written))
    if quotes_prompt(written, batch.instructions):
        return "quotes the prompt's instructions or worked answers"
    problem = _written_problem(written, batch.titles[i], req)
    if problem:
        return f"LLM justification rejected: {problem}"
    cited = batch.evidence[i].citations()
    ok, note = check_grounding(sentence, cited, req.item, req.user, req.others, require_citation=False, written=written)
    if not ok:
        return f"LLM justification rejected: {note}"
    out.text, out.cited, out.source, out.grounded = sentence, cited, "llm", True
    out.note = f"evidence: {prefix or '(none)'}; {note}" if not out.note else f"{out.note}; re-asked: {note}"
    return None


def explain_fewshot(
    engine: LLMEngine,
    registry: PromptRegistry,
    reqs: Sequence[ExplainRequest],
    outs: Sequence[Justification],
    timings: dict[str, float],
) -> None:
    """Fill ``outs`` for ``reqs`` (see the module doc); failures end as template justifications."""
    from agent.explain import _use_template

    batch = _Batch(registry, reqs)
    for out, prompt in zip(outs, batch.prompts, strict=True):
        out.prompt_version, out.layout = prompt.version_id, "fewshot"
    todo = list(range(len(reqs)))
    for attempt in ("explain", "explain_retry"):
        if not todo:
            break
        retry = attempt == "explain_retry"
        started = time.perf_counter()
        results = _ask(engine, batch, todo, reqs, retry)
        timings[attempt] = (time.perf_counter() - started) * 1000
        failed = []
        for i, result in zip(todo, results, strict=True):
            reason = _judge(batch, i, reqs[i], outs[i], result, retry)
            if reason is None:
                continue
            if retry or (isinstance(result, CallFailure) and result.reason != "invalid_output"):
                first = f"{outs[i].note}; re-asked: " if retry and outs[i].note else ""
                _use_template(outs[i], reqs[i], f"{first}{reason}: template justification")
            else:
                outs[i].note, outs[i].flags = reason, [*outs[i].flags, "regenerated"]
                failed.append(i)
        todo = failed
