"""`recagent serve`: the HTTP API and the web chat page (agent/server). Thin wiring only."""

from __future__ import annotations

from enum import StrEnum

import typer

app = typer.Typer()


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(
        None, help="Bind address (default RECAGENT_SERVER_HOST, 127.0.0.1; any other address needs a token)."
    ),
    port: int | None = typer.Option(None, min=1, max=65535, help="Port (default RECAGENT_SERVER_PORT, 8080)."),
    token: str | None = typer.Option(
        None,
        "--token",
        help="Bearer token every /v1 call must send (default RECAGENT_SERVER_TOKEN; prefer the variable: "
        "command lines are visible to other users of the machine).",
    ),
    log_level: LogLevel = typer.Option(LogLevel.info, "--log-level", help="Server log level."),
) -> None:
    """Serve the HTTP API (/v1/..., OpenAPI docs at /docs) and the web chat page (/) with one shared engine."""
    from pydantic import SecretStr

    from agent.server.run import serve as run_server

    settings = ctx.find_root().obj.settings
    if token is not None:
        settings = settings.model_copy(update={"server_token": SecretStr(token)})
    run_server(settings, host=host, port=port, log_level=log_level.value)
