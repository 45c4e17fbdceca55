"""recagent's one error tree (agent level). Import errors from here in agent, eval and the CLI."""

from __future__ import annotations

from retrieval.errors import (
    CatalogError,
    ConfigError,
    InputError,
    PromptError,
    RecagentError,
    StoreError,
)

__all__ = [
    "CatalogError",
    "ConfigError",
    "EngineError",
    "EngineUnavailableError",
    "InputError",
    "ModelError",
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
