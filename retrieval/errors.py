"""The errors of the retrieval room, on the root of the error tree (:mod:`core.errors`).

Retrieval modules and their callers import errors from here: the root classes are re-exported, and the catalog and
store errors are defined here. ``agent.errors`` re-exports everything and adds the agent-level errors.
"""

from __future__ import annotations

from core.errors import ConfigError, InputError, RecagentError

__all__ = ["CatalogError", "ConfigError", "InputError", "RecagentError", "StoreError"]


class CatalogError(InputError):
    """A catalog or interaction file cannot be read or fails ``--strict`` cleaning."""


class StoreError(RecagentError):
    """The vector store (Chroma) is unreachable, read-only or inconsistent."""
