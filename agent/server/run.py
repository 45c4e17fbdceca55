"""Serve the app with uvicorn: refuse an unauthenticated non-loopback bind, start the engine, then listen."""

from __future__ import annotations

import logging

from agent.network import BindGuard, check_bind
from agent.settings import Settings

log = logging.getLogger(__name__)

API_BIND = BindGuard(
    service="",
    credential="a token",
    setting="set RECAGENT_SERVER_TOKEN (or pass --token)",
    name="the server token",
    min_length=8,
)


def check_server_bind(host: str, settings: Settings) -> None:
    """The API beyond loopback needs a token of 8 characters or more (see :func:`agent.network.check_bind`)."""
    token = settings.server_token.get_secret_value() if settings.server_token is not None else None
    check_bind(host, token, API_BIND)


def serve(settings: Settings, *, host: str | None = None, port: int | None = None, log_level: str = "info") -> None:
    """Build the app, start its engine in this (main) thread, then serve until interrupted."""
    import uvicorn

    from agent.server.app import create_app

    host = host or settings.server_host
    port = port or settings.server_port
    check_server_bind(host, settings)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(levelname)s: %(message)s")
    app = create_app(settings)
    log.info("starting the engine and opening the catalog")
    app.state.recagent.warm_up()
    log.info("serving on http://%s:%d (chat page at /, API docs at /docs)", host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30, access_log=True)
