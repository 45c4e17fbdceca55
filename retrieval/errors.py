"""The root of recagent's one error tree.

It lives on the ground floor (``retrieval``) because ``retrieval`` and ``prompts`` may not import ``agent``;
``agent.errors`` re-exports everything here and adds the agent-level errors. Every error carries a ``hint``
that tells the user how to fix the problem; the CLI prints ``message`` and ``hint``, never a traceback
(unless ``RECAGENT_DEBUG=1``).
"""

from __future__ import annotations


class RecagentError(Exception):
    """Base class of every error recagent raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  how to fix: {self.hint}"
        return self.message


class ConfigError(RecagentError):
    """A setting is missing, malformed or contradicts another one."""

    exit_code = 2


class InputError(RecagentError):
    """A file, mapping or request the user gave cannot be used."""

    exit_code = 2


class CatalogError(InputError):
    """A catalog or interaction file cannot be read or fails ``--strict`` cleaning."""


class StoreError(RecagentError):
    """The vector store (Chroma) is unreachable, read-only or inconsistent."""


class PromptError(RecagentError):
    """A prompt template is unknown, malformed, or misses a variable."""
