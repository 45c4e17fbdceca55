"""The LLM part of the chat's preference extraction (template ``extract_preferences``, structured output
``preferences_schema``), shared by the chat (:class:`agent.chat.conversation.Conversation`) and the extraction
evaluation (:mod:`eval.extraction`).

:class:`PreferenceExtractor` renders one prompt per message in the layout the settings and the engine pick
(:func:`agent.explain_fewshot.resolve_layout`, the resolution explain uses: ``prompt_format`` chat / fewshot /
auto; the few-shot layout's worked examples come from the catalog, :mod:`agent.chat.extract_examples`), sends all
messages in one engine call, and keeps only what checks out against the catalog (titles and values exist) and the
message (anything that removes items must be grounded in the user's words). Engine failures never raise: the
message's result is the failure reason, and the turn goes on with the rules.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agent.chat.catalog import CatalogIndex, norm_tokens, tokenize
from agent.chat.extract_examples import extraction_examples
from agent.chat.preferences import PreferenceUpdate, content_words
from agent.explain_fewshot import resolve_layout
from agent.llm.base import Generation, LLMEngine, accepts_stop
from agent.llm.batching import CallFailure, call_batch, loads_lenient
from agent.sessions import AttributePref, Avoidance
from agent.settings import Settings
from prompts import PromptRegistry, RenderedPrompt, preferences_schema
from retrieval.types import NumericRange

__all__ = ["EXTRACT_TEMPLATE", "ExtractInput", "PreferenceExtractor"]

EXTRACT_TEMPLATE = "extract_preferences"


@dataclass(frozen=True)
class ExtractInput:
    """One message to extract from: the message, the earlier turns the prompt shows (``{role, content}``, oldest
    first), the items shown last (ids; "that one" resolves among them) and the recent turns' texts (the words a
    ``need`` may use besides the message's)."""

    message: str
    conversation: Sequence[dict[str, str]] = ()
    shown: Sequence[str] = ()
    recent: Sequence[str] = ()


def _said_number(value: Any, words: tuple[str, ...]) -> bool:
    """Whether the number ``value`` is one of the message's ``words`` ("1990" or "1990s")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    text = str(int(number)) if number.is_integer() else str(number)
    return text in words or any(w.startswith(text) and w[len(text) :] in ("s", "") for w in words)


class PreferenceExtractor:
    """The LLM extraction over one catalog (see the module doc). Thread-safe; the worked examples are built once."""

    def __init__(self, index: CatalogIndex, registry: PromptRegistry) -> None:
        self.index = index
        self.registry = registry
        self._examples: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The few-shot layout's worked examples (from the catalog; the same for every turn)."""
        with self._lock:
            if self._examples is None:
                spec = self.registry.get(EXTRACT_TEMPLATE).fewshot
                self._examples = extraction_examples(self.index, spec.examples if spec is not None else 0)
            return self._examples

    def layout(self, settings: Settings, engine: LLMEngine | None) -> str:
        """``chat`` or ``fewshot``: the layout ``settings.prompt_format`` picks for this engine."""
        return resolve_layout(settings.prompt_format, engine, self.registry, EXTRACT_TEMPLATE)

    def prompts(self, inputs: Sequence[ExtractInput], layout: str) -> list[RenderedPrompt]:
        fields = self.index.field_names()
        variables: dict[str, Any] = {"fields": fields}
        if layout == "fewshot":
            variables["examples"] = self.examples
        return [
            self.registry.render(
                EXTRACT_TEMPLATE,
                {**variables, "conversation": list(inp.conversation), "message": inp.message},
                layout=layout,
            )
            for inp in inputs
        ]

    def extract(
        self,
        engine: LLMEngine,
        inputs: Sequence[ExtractInput],
        settings: Settings,
        *,
        record: list[str] | None = None,
    ) -> list[PreferenceUpdate | str]:
        """Per input the checked LLM update, or why there is none (``llm_extract_failed: <reason>``, or
        ``llm_extract_unusable`` when the answer was no JSON object). One engine call for all inputs. ``record``
        receives each input's raw answer (or the failure reason)."""
        if not inputs:
            return []
        layout = self.layout(settings, engine)
        rendered = self.prompts(inputs, layout)
        fields = self.index.field_names()
        schema = preferences_schema(fields or None)
        max_tokens = settings.chat_extract_max_tokens
        extra: dict[str, Any] = {}
        if layout == "fewshot":
            max_tokens = min(max_tokens, rendered[0].max_tokens or max_tokens)
            if accepts_stop(engine):
                extra["stop"] = rendered[0].stop
        requests = [r.engine_input() for r in rendered]
        outcome = call_batch(
            engine,
            len(inputs),
            lambda idx: engine.generate(
                [requests[i] for i in idx],
                json_schema=schema,
                max_tokens=max_tokens,
                temperature=0.0,
                seed=settings.seed,
                **extra,
            ),
            timeout=settings.rerank_timeout_s,
        )
        out: list[PreferenceUpdate | str] = []
        for inp, res in zip(inputs, outcome.results, strict=True):
            if isinstance(res, CallFailure):
                out.append(f"llm_extract_failed: {res.reason}")
                if record is not None:
                    record.append(f"({res.reason})")
                continue
            if record is not None:
                record.append(res.text)
            update = self.checked(res, inp)
            out.append(update if update is not None else "llm_extract_unusable")
        return out

    def checked(self, gen: Generation, inp: ExtractInput) -> PreferenceUpdate | None:
        """The LLM's extraction, keeping only what checks out against the catalog and the message."""
        value = gen.parsed
        if value is None:
            try:
                value = loads_lenient(gen.text)
            except ValueError:
                return None
        if not isinstance(value, dict):
            return None
        index, said = self.index, tokenize(inp.message)
        said_words = tuple(t.text for t in said)
        context = said_words + tuple(t.text for text in inp.recent for t in tokenize(text))
        shown = list(inp.shown)
        up = PreferenceUpdate()

        def grounded(text: str, words: tuple[str, ...]) -> bool:
            form = norm_tokens(text)
            n = len(form)
            return bool(n) and any(words[i : i + n] == form for i in range(len(words) - n + 1))

        try:
            for key, target in (("liked_titles", up.liked_ids), ("disliked_titles", up.disliked_ids)):
                for title in value.get(key) or []:
                    ids = index.resolve_title(str(title))  # exact, then fuzzy (typos) as on the rules path
                    if ids and (grounded(str(title), said_words) or set(ids) & set(shown)):
                        target.extend(i for i in ids if i not in target)
            for key in ("liked_attributes", "disliked_attributes"):
                for pair in value.get(key) or []:
                    spelled = index.has_value(str(pair.get("field")), str(pair.get("value")))
                    if spelled is None or (key == "disliked_attributes" and not grounded(spelled, said_words)):
                        continue
                    getattr(up, key).append(AttributePref(field=str(pair["field"]), value=spelled))
            constraints = value.get("constraints") or {}
            for key, target_name in (("exclude", "disliked_attributes"), ("require", "required_attributes")):
                for pair in constraints.get(key) or []:
                    spelled = index.has_value(str(pair.get("field")), str(pair.get("value")))
                    if spelled is not None and grounded(spelled, said_words):
                        getattr(up, target_name).append(AttributePref(field=str(pair["field"]), value=spelled))
            numeric = set(index.numeric_fields())
            for span in constraints.get("ranges") or []:
                name, low, high = span.get("field"), span.get("min"), span.get("max")
                numbers = [x for x in (low, high) if x is not None]
                if name in numeric and numbers and all(_said_number(x, said_words) for x in numbers):
                    up.ranges[str(name)] = NumericRange(min=low, max=high)
            for entry in value.get("avoid") or []:
                concept = " ".join(content_words(str(entry.get("concept") or "")))
                if concept and grounded(concept, said_words) and len(concept) <= 80:
                    strength = "soft" if entry.get("strength") == "soft" else "hard"
                    up.avoid.append(Avoidance(concept=concept, strength=strength))
            need = str(value.get("need") or "").strip()
            words = content_words(need)
            if words and sum(w_ in context for w_ in words) * 2 >= len(words):
                up.need = need[:300]
        except (ValidationError, TypeError, ValueError, AttributeError):
            return None
        for i in up.liked_ids:
            if i in shown:
                up.accepted_ids.append(i)
        for i in list(up.disliked_ids):
            if i in shown:
                up.disliked_ids.remove(i)
                up.rejected_ids.append(i)
        up.notes.append("llm")
        return up
