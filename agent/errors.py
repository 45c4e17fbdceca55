"""recagent's one error tree (agent level). Import errors from here in agent, eval and the CLI."""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError, InputError, PromptError, RecagentError
from retrieval.errors import CatalogError, StoreError

__all__ = [
    "CatalogError",
    "ConfigError",
    "EngineError",
    "EngineUnavailableError",
    "InputError",
    "ModelError",
    "PartialOutputError",
    "PromptError",
    "RecagentError",
    "SchemaError",
    "StoreError",
    "StructuredOutputError",
]


class EngineError(RecagentError):
    """The LLM engine failed while serving a request."""


class EngineUnavailableError(EngineError):
    """The LLM engine cannot be started or reached (missing package, server down)."""


class ModelError(ConfigError):
    """The configured model cannot be found, prepared or loaded."""


class SchemaError(InputError):
    """A JSON schema given for structured output is not a valid schema."""


class StructuredOutputError(EngineError):
    """The engine's output does not validate against the requested JSON schema.

    Carries the last raw completion so callers can log it or fall back.
    """

    def __init__(self, message: str, *, raw: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.raw = raw


class PartialOutputError(StructuredOutputError):
    """Some outputs of a batched ``generate`` call do not validate, the others do.

    ``outcomes`` holds one entry per request of the call: its ``Generation``, or the
    :class:`StructuredOutputError` of that request. Callers keep the valid outputs instead of generating the batch
    again (``agent.llm.batching.call_batch`` does); the message and ``raw`` are those of the first failure.
    """

    def __init__(self, outcomes: list[Any]) -> None:
        bad = [o for o in outcomes if isinstance(o, StructuredOutputError)]
        if not bad:
            raise ValueError("PartialOutputError needs at least one failed outcome")
        first = bad[0]
        super().__init__(
            f"{len(bad)} of {len(outcomes)} outputs do not validate; first: {first.message}",
            raw=first.raw,
            hint=first.hint,
        )
        self.outcomes = outcomes
