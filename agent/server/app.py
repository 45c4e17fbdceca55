"""The app factory: ``create_app(settings)`` wires one Recommender, one Conversation, the batchers, the middleware,
the error envelope, the API routes and the chat page. ``run.py`` serves it with uvicorn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from agent.pipeline import Recommender
from agent.server.errors import NotFoundError, install_error_handlers
from agent.server.health import package_version
from agent.server.middleware import EdgeMiddleware
from agent.server.state import ServerState
from agent.settings import Settings

if TYPE_CHECKING:
    from agent.chat.conversation import Conversation
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

DOCS_ASSETS = {  # the Swagger UI files /docs needs, served from the swagger-ui-bundle-v2 package (no CDN)
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def create_app(
    settings: Settings, *, recommender: Recommender | None = None, conversation: Conversation | None = None
) -> FastAPI:
    """The HTTP app. Parts not given are built from ``settings`` (the Recommender lazily starts its engine on first
    use; ``ServerState.warm_up`` starts it at once). Parts given are shared, not closed on shutdown."""
    from agent.chat.conversation import Conversation
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
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: /docs is served below from local files
        redoc_url=None,
    )
    app.state.recagent = state
    install_error_handlers(app)
    app.include_router(api)
    app.include_router(meta)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_offline_docs(app)

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


def _swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    folder = Path(str(swagger_ui_path))
    return folder if all((folder / name).is_file() for name in DOCS_ASSETS) else None


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI whose script, style sheet and icon come from this server (``/docs/assets/...``), so the
    page works without internet. ``/openapi.json`` is FastAPI's own."""
    folder = _swagger_dir()
    if folder is None:
        log.warning(
            "the Swagger UI assets are missing (package swagger-ui-bundle-v2): /docs is not served; "
            "reinstall with `make setup`. /openapi.json still describes the API"
        )
        return
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
            oauth2_redirect_url=None,
            # no badge from the online validator (Swagger UI would fetch it from swagger.io)
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Cache-Control"] = "no-cache"
        return page

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        media_type = DOCS_ASSETS.get(name)
        if media_type is None:
            raise NotFoundError(f"no docs asset {name!r}", hint="the API docs are at /docs")
        return FileResponse(folder / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})
