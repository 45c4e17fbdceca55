"""Serve the app with uvicorn: refuse an unauthenticated non-loopback bind, start the engine, then listen."""

from __future__ import annotations

import ipaddress
import logging

from agent.errors import ConfigError
from agent.settings import Settings

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings) -> None:
    """Beyond loopback the API must have a token: anyone who can reach the port could otherwise use it."""
    if not is_loopback(host) and settings.server_token is None:
        raise ConfigError(
            f"refusing to serve on {host} without a token: every client on the network could use the API",
            hint="set RECAGENT_SERVER_TOKEN (or pass --token), or bind to 127.0.0.1 (the default)",
        )
    if settings.server_token is not None and len(settings.server_token.get_secret_value()) < 8:
        raise ConfigError(
            "the server token is shorter than 8 characters", hint="use a long random token, e.g. `openssl rand -hex 32`"
        )


def serve(settings: Settings, *, host: str | None = None, port: int | None = None, log_level: str = "info") -> None:
    """Build the app, start its engine in this (main) thread, then serve until interrupted."""
    import uvicorn

    from agent.server.app import create_app

    host = host or settings.server_host
    port = port or settings.server_port
    check_bind(host, settings)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(levelname)s: %(message)s")
    app = create_app(settings)
    log.info("starting the engine and opening the catalog")
    app.state.recagent.warm_up()
    log.info("serving on http://%s:%d (chat page at /, API docs at /docs)", host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30, access_log=True)
