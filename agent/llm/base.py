"""The one LLM engine interface every layer above uses, and its wire types."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.errors import InputError, PartialOutputError, SchemaError, StructuredOutputError

Role = Literal["system", "user", "assistant"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Role
    content: str


class LLMRequest(BaseModel):
    """Either a plain completion ``prompt`` or chat ``messages`` (exactly one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LLMRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        return self

    @classmethod
    def of(cls, item: str | Sequence[ChatMessage] | Sequence[dict[str, str]] | LLMRequest) -> LLMRequest:
        if isinstance(item, LLMRequest):
            return item
        if isinstance(item, str):
            return cls(prompt=item)
        return cls(messages=tuple(m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in item))


RequestLike = str | Sequence[ChatMessage] | Sequence[dict[str, str]] | LLMRequest


class Generation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = Field(description="'stop', 'length', ... as the engine reports it")
    parsed: Any = Field(None, description="The decoded JSON value when a json_schema was given")


class OptionScores(BaseModel):
    """Next-token log-probabilities of each label after a prompt."""

    model_config = ConfigDict(extra="forbid")
    logprobs: dict[str, float]
    prompt_tokens: int
    exact: dict[str, bool] = Field(
        default_factory=dict,
        description="False for a label whose value is an upper bound (it was outside the top-k the server returned "
        "and could not be looked up exactly).",
    )

    def ranked(self) -> list[str]:
        """Labels sorted by decreasing log-probability (ties keep label order)."""
        order = list(self.logprobs)
        return sorted(order, key=lambda lab: (-self.logprobs[lab], order.index(lab)))


def check_schema(schema: dict[str, Any]) -> None:
    """Raise :class:`SchemaError` when ``schema`` is not a valid JSON schema."""
    if not isinstance(schema, dict):
        raise SchemaError(
            f"json_schema must be a JSON object, got {type(schema).__name__}",
            hint="pass a dict such as {'type': 'object', 'properties': {...}}",
        )
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise SchemaError(
            f"json_schema is not a valid JSON schema: {exc.message}",
            hint="validate it at https://json-schema.org or with `python -m jsonschema`",
        ) from exc


def parse_structured(text: str, schema: dict[str, Any]) -> Any:
    """Decode ``text`` as JSON and validate it against ``schema``; raise with the raw text on failure."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StructuredOutputError(
            f"the model's output is not valid JSON ({exc.msg} at char {exc.pos})",
            raw=text,
            hint="raise max_tokens (the output may be cut off) or check the engine supports structured output",
        ) from exc
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        raise StructuredOutputError(f"the model's JSON does not match the schema: {exc.message}", raw=text) from exc
    return value


def parse_outputs(gens: list[Generation], schemas: Sequence[Schema | None]) -> list[Generation]:
    """Decode and validate every structured output of a batch (sets ``parsed``), never losing the valid ones.

    When some outputs do not validate, a batch raises :class:`PartialOutputError` carrying every request's
    outcome (its Generation or its StructuredOutputError), so that nothing is generated twice; a single request
    raises its own StructuredOutputError."""
    outcomes: list[Generation | StructuredOutputError] = []
    for gen, schema in zip(gens, schemas, strict=True):
        if schema is None:
            outcomes.append(gen)
            continue
        try:
            gen.parsed = parse_structured(gen.text, schema)
        except StructuredOutputError as exc:
            outcomes.append(exc)
            continue
        outcomes.append(gen)
    errors = [o for o in outcomes if isinstance(o, StructuredOutputError)]
    if not errors:
        return gens
    if len(outcomes) == 1:
        raise errors[0]
    raise PartialOutputError(list(outcomes))


Schema = dict[str, Any]
SchemaArg = Schema | Sequence[Schema | None] | None


def schemas_per_request(json_schema: SchemaArg, n: int) -> list[Schema | None]:
    """One schema (or None) per request: a single schema applies to all; a list gives each its own
    (e.g. a ranking schema whose id enum is that request's candidates). Every schema is checked."""
    if json_schema is None:
        return [None] * n
    if isinstance(json_schema, dict):
        check_schema(json_schema)
        return [json_schema] * n
    schemas = list(json_schema)
    if len(schemas) != n:
        raise InputError(
            f"got {len(schemas)} JSON schemas for {n} requests", hint="pass one schema, or exactly one per request"
        )
    for schema in schemas:
        if schema is not None:
            check_schema(schema)
    return schemas


def check_labels(labels: Sequence[str]) -> list[str]:
    labels = list(labels)
    if not labels:
        raise InputError("score_options needs at least one label", hint="pass labels such as ['A', 'B', 'C']")
    if len(set(labels)) != len(labels):
        raise InputError(f"labels must be distinct, got {labels}", hint="remove the repeated labels")
    return labels


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """``text`` up to (not including) the earliest occurrence of any ``stop`` string, as engines apply stop strings."""
    cut = len(text)
    for s in stop or ():
        at = text.find(s) if s else -1
        if 0 <= at < cut:
            cut = at
    return text[:cut]


class StopFilter:
    """Applies stop strings to a stream of text deltas: :meth:`feed` returns the part of each delta that is safe to
    emit (a tail that could be the start of a stop string is held back until the next delta shows it is not), and
    :attr:`stopped` turns True once a stop string appeared. :meth:`flush` returns what was held back at the end."""

    def __init__(self, stop: Sequence[str] | None) -> None:
        self.stop = [s for s in stop or () if s]
        self.text = ""
        self.sent = 0
        self.stopped = False
        self._hold = max((len(s) for s in self.stop), default=1) - 1

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        self.text += delta
        cut = cut_at_stop(self.text, self.stop)
        if len(cut) < len(self.text):
            self.stopped = True
            out, self.sent = cut[self.sent :], len(cut)
            return out
        safe = max(self.sent, len(self.text) - self._hold)
        out, self.sent = self.text[self.sent : safe], safe
        return out

    def flush(self) -> str:
        if self.stopped:
            return ""
        out, self.sent = self.text[self.sent :], len(self.text)
        return out


def accepts_stop(engine: Any) -> bool:
    """Whether ``engine.generate`` takes ``stop`` (wrappers written before it was added do not)."""
    import inspect

    try:
        return "stop" in inspect.signature(engine.generate).parameters
    except (TypeError, ValueError):
        return False


def log_softmax_subset(logprobs: dict[str, float]) -> dict[str, float]:
    """Renormalise label log-probs over the labels only (a distribution over the options)."""
    finite = [v for v in logprobs.values() if math.isfinite(v)]
    if not finite:
        return dict(logprobs)
    top = max(finite)
    z = top + math.log(sum(math.exp(v - top) for v in finite))
    return {k: v - z for k, v in logprobs.items()}


class LLMEngine(ABC):
    """A generative LLM. Implementations: ``vllm_local``, ``openai_server``, ``hf_local``."""

    backend: str = "?"
    model_id: str = "?"

    @abstractmethod
    def generate(
        self,
        requests: Sequence[RequestLike],
        *,
        json_schema: SchemaArg = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Generate one completion per request, batched. With ``json_schema`` (one for all requests, or one per
        request) decoding is constrained and the output validated (:class:`StructuredOutputError` carries the raw
        text when it still fails). With ``stop``, decoding ends at the earliest stop string, which the text does
        not include (``finish_reason`` "stop")."""

    @abstractmethod
    def score_options(self, requests: Sequence[RequestLike], labels: Sequence[str]) -> list[OptionScores]:
        """Log-probability of each label as the single next token after each request's prompt."""

    def stream(
        self,
        request: RequestLike,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """One completion as text deltas, yielded as the engine decodes. Their concatenation equals the text
        :meth:`generate` returns for the same arguments, cut before the earliest ``stop`` string (engines stop
        decoding there). Errors are raised by the iteration (the first ``next`` for a bad request); closing the
        iterator early cancels the generation where the engine allows it.

        This default, for engines that cannot stream, runs :meth:`generate` and yields its whole text once."""
        gen = self.generate([request], max_tokens=max_tokens, temperature=temperature, seed=seed)[0]
        text = cut_at_stop(gen.text, stop)
        if text:
            yield text

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model_id}

    def has_chat_template(self) -> bool | None:
        """Whether the model has a chat template (an instruct model); None when the engine cannot tell (a remote
        server, a fake). Prompt format ``auto`` uses the few-shot layout only on a definite False."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's resources."""

    def __enter__(self) -> LLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
