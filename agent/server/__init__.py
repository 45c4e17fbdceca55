"""The HTTP service: FastAPI app (JSON API, server-sent events, the chat page) over one shared Recommender."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.server.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:  # lazy: importing agent.server does not pull in FastAPI
    if name == "create_app":
        from agent.server.app import create_app

        return create_app
    raise AttributeError(name)
