"""The root of recagent's one error tree.

It lives below both ground-floor packages (``prompts`` and ``retrieval`` import it; neither imports the other, and
neither may import ``agent``). ``retrieval.errors`` adds the retrieval errors, ``agent.errors`` re-exports everything
and adds the agent-level errors. Every error carries a ``hint`` that tells the user how to fix the problem; the CLI
prints ``message`` and ``hint``, never a traceback (unless ``RECAGENT_DEBUG=1``).
"""

from __future__ import annotations

__all__ = ["ConfigError", "InputError", "PromptError", "RecagentError"]


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


class PromptError(RecagentError):
    """A prompt template is unknown, malformed, or misses a variable (bad input or settings: exit code 2)."""

    exit_code = 2
