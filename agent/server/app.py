"""The app factory: ``create_app(settings)`` wires one Recommender, one Conversation, the batchers, the middleware,
the error envelope, the API routes and the chat page. ``run.py`` serves it with uvicorn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from agent.pipeline import Recommender
from agent.server.errors import install_error_handlers
from agent.server.health import package_version
from agent.server.middleware import EdgeMiddleware
from agent.server.state import ServerState
from agent.settings import Settings

if TYPE_CHECKING:
    from agent.conversation import Conversation
    from agent.sessions import SessionStore

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

# the page loads nothing from elsewhere and runs no inline script: a stored reply cannot execute code
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def create_app(
    settings: Settings, *, recommender: Recommender | None = None, conversation: Conversation | None = None
) -> FastAPI:
    """The HTTP app. Parts not given are built from ``settings`` (the Recommender lazily starts its engine on first
    use; ``ServerState.warm_up`` starts it at once). Parts given are shared, not closed on shutdown."""
    from agent.conversation import Conversation
    from agent.server.api import api, meta
    from agent.sessions import open_session_store

    owns_recommender = recommender is None
    rec = recommender or Recommender(settings)
    owns_sessions = conversation is None
    store: SessionStore | None
    if conversation is None:
        store = open_session_store(settings)
        conversation = Conversation(rec, store, settings)
    else:
        store = getattr(conversation, "store", None)  # for the health check only
    state = ServerState(
        settings=settings,
        recommender=rec,
        conversation=conversation,
        owns_recommender=owns_recommender,
        sessions=store,
        owns_sessions=owns_sessions,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        log.info("shutting down: finishing queued requests")
        state.close()

    app = FastAPI(
        title="recagent",
        summary="Explainable recommendations and conversational recommendation over a catalog.",
        description='JSON API of recagent. Errors always come as `{"error": {"message", "type", "code", '
        '"hint", "request_id"}}`. When the server has a token, every `/v1` call needs '
        "`Authorization: Bearer TOKEN`. The chat page is at `/`.",
        version=package_version(),
        lifespan=lifespan,
    )
    app.state.recagent = state
    install_error_handlers(app)
    app.include_router(api)
    app.include_router(meta)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    if settings.server_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server_cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    token = settings.server_token.get_secret_value() if settings.server_token else None
    # added last = outermost: every answer (CORS preflights, 401, 413, 500 included) carries the request id
    app.add_middleware(EdgeMiddleware, token=token, max_body_bytes=settings.server_max_body_bytes)
    return app
