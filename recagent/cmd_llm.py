"""`recagent llm ...`: talk to the configured engine directly, or serve the model over HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from agent.errors import InputError

app = typer.Typer(help="Use the configured LLM engine directly, or serve it.", no_args_is_help=True)


@app.command("generate")
def generate(
    ctx: typer.Context,
    prompt: str = typer.Argument(..., help="Prompt text (a completion prompt)."),
    json_schema: Path | None = typer.Option(None, "--json-schema", help="JSON schema file constraining the output."),
    max_tokens: int = typer.Option(128, min=1),
    temperature: float = typer.Option(0.0, min=0.0),
    seed: int = typer.Option(0),
) -> None:
    """Generate a completion with the configured engine."""
    from agent.llm import create_engine

    schema = None
    if json_schema is not None:
        try:
            schema = json.loads(json_schema.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read JSON schema {json_schema}: {exc}", hint="give a readable JSON file") from exc
    engine = create_engine(ctx.obj.settings)
    gen = engine.generate([prompt], json_schema=schema, max_tokens=max_tokens, temperature=temperature, seed=seed)[0]
    typer.echo(gen.model_dump_json(indent=2))


@app.command("score")
def score(
    ctx: typer.Context,
    prompt: str = typer.Argument(..., help="Prompt whose next token is one of the labels."),
    labels: str = typer.Option("A,B,C,D", help="Comma-separated one-token labels."),
) -> None:
    """Log-probability of each label as the next token."""
    from agent.llm import create_engine

    engine = create_engine(ctx.obj.settings)
    result = engine.score_options([prompt], [x.strip() for x in labels.split(",") if x.strip()])[0]
    typer.echo(result.model_dump_json(indent=2))


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Bind address (default 127.0.0.1; others need an API key)."),
    port: int | None = typer.Option(None, help="Port (default RECAGENT_LLM_SERVER_PORT, 8000)."),
) -> None:
    """Start an OpenAI-compatible vLLM server (`vllm serve`) on the configured model, in the foreground."""
    from agent.llm.vllm_serve import check_llm_bind, serve_command, server_env

    settings = ctx.obj.settings
    check_llm_bind(host or settings.llm_server_host, settings.llm_api_key)
    cmd = serve_command(settings, host=host, port=port)
    typer.echo("starting: " + " ".join(cmd), err=True)
    url = f"http://{host or settings.llm_server_host}:{port or settings.llm_server_port}/v1"
    typer.echo(f"use it with RECAGENT_LLM_SERVER_URL={url}", err=True)
    os.execve(cmd[0], cmd, server_env(settings))
