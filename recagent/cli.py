"""The `recagent` console command: thin wiring of agent, retrieval, prompts and eval. No logic lives here."""

from __future__ import annotations

import os
import sys

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from agent.errors import RecagentError
from agent.shutdown import graceful_shutdown
from recagent import (
    cmd_chat,
    cmd_enrich,
    cmd_eval,
    cmd_ingest,
    cmd_llm,
    cmd_models,
    cmd_prompts,
    cmd_recommend,
    cmd_serve,
    cmd_sessions,
    cmd_train,
)
from recagent.context import app_state
from recagent.options import validation_hint

app = typer.Typer(
    name="recagent",
    help="LLM prompt-based recommender agent: explainable suggestions, conversational recommendations, offline "
    "evaluation. Settings come from RECAGENT_* environment variables and recagent.toml (`recagent config`).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(cmd_models.app, name="models")
app.add_typer(cmd_llm.app, name="llm")
app.add_typer(cmd_prompts.app, name="prompts")
app.add_typer(cmd_ingest.app)  # merges `recagent ingest PATH` into the root
app.add_typer(cmd_enrich.app)  # `recagent enrich`
app.add_typer(cmd_recommend.app)
app.add_typer(cmd_chat.app)
app.add_typer(cmd_eval.app, name="eval")
app.add_typer(cmd_serve.app)  # `recagent serve`
app.add_typer(cmd_train.app, name="train")
app.add_typer(cmd_sessions.app, name="sessions")

err_console = Console(stderr=True)


@app.callback()
def _root(
    ctx: typer.Context,
    config: str | None = typer.Option(None, "--config", help="TOML settings file (default: ./recagent.toml)."),
) -> None:
    ctx.obj = app_state(config)


@app.command("config")
def config_cmd(ctx: typer.Context) -> None:
    """Show every setting with its current value (env RECAGENT_<NAME> or recagent.toml key <name>)."""
    from recagent.render import print_settings

    print_settings(ctx.obj.settings)


@app.command("demo")
def demo_cmd(ctx: typer.Context) -> None:
    """Run the demo on the bundled defaults (what `make demo` runs)."""
    from recagent.demo import run_demo

    run_demo(ctx.obj.settings, Console())


def main() -> None:
    try:
        with graceful_shutdown():  # SIGTERM ends a command like Ctrl-C: engines closed, no engine process orphaned
            app(standalone_mode=False)
    except RecagentError as exc:
        if os.environ.get("RECAGENT_DEBUG") == "1":
            raise
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        if exc.hint:
            err_console.print(f"[yellow]how to fix:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except ValidationError as exc:
        if os.environ.get("RECAGENT_DEBUG") == "1":
            raise
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        err_console.print(f"[bold red]error:[/] invalid input: {escape(problems)}", highlight=False, soft_wrap=True)
        err_console.print(f"[yellow]how to fix:[/] {escape(validation_hint(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and friends
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):  # usage errors of typer's own copy of click (typer._click)
            show()
            sys.exit(code)
        raise
