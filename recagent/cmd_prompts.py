"""`recagent prompts ...`: list, show and render prompt templates. Thin: all logic lives in ``prompts``."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from prompts import PromptError, PromptRegistry

app = typer.Typer(
    name="prompts",
    help="Prompt templates: list them, show one, render one with variables from a JSON file.",
    no_args_is_help=True,
)

DirsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--dir",
        "-d",
        help="Extra template directory (its NAME.j2 files add templates); repeat for several.",
        file_okay=False,
    ),
]


class Format(StrEnum):
    text = "text"
    messages = "messages"
    json = "json"


def _registry(dirs: list[Path] | None) -> PromptRegistry:
    return PromptRegistry(dirs or None)


@app.command("list")
def list_templates(dirs: DirsOption = None) -> None:
    """List every template: name, task, version label, content hash and description."""
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "task", "version", "hash", "description")
    for info in _registry(dirs).list():
        table.add_row(info.name, info.task, info.version, info.hash, info.description)
    Console().print(table)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Template name, e.g. rank_options.")], dirs: DirsOption = None
) -> None:
    """Print a template file (front matter and body) with its version id and path."""
    template = _registry(dirs).get(name)
    typer.echo(f"# {template.version_id}  ({template.path})")
    typer.echo(template.source, nl=not template.source.endswith("\n"))


def _read_vars(path: str) -> dict[str, Any]:
    where = "standard input" if path == "-" else path
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"cannot read variables from {where}: {exc}", hint="pass a readable UTF-8 JSON file") from exc
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PromptError(
            f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            hint='write one JSON object mapping variable names to values, e.g. {"candidates": [...]}',
        ) from exc
    if not isinstance(values, dict):
        raise PromptError(
            f"{where} holds a JSON {type(values).__name__}, not an object",
            hint='wrap the variables in one object: {"history": [...], "candidates": [...]}',
        )
    return values


@app.command("render")
def render(
    name: Annotated[str, typer.Argument(help="Template name, e.g. rank_options.")],
    vars_file: Annotated[
        str, typer.Option("--vars", help="JSON file with the variables (an object); '-' reads standard input.")
    ],
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="text: completion form; messages: chat form; json: everything.")
    ] = Format.text,
    allow_extra: Annotated[
        bool, typer.Option("--allow-extra", help="Ignore variables the template does not declare.")
    ] = False,
    dirs: DirsOption = None,
) -> None:
    """Render a template with variables from a JSON file, exactly as the agent would send it."""
    prompt = _registry(dirs).render(name, _read_vars(vars_file), allow_extra=allow_extra)
    if fmt is Format.json:
        typer.echo(prompt.model_dump_json(indent=2))
    elif fmt is Format.messages:
        for message in prompt.messages:
            typer.echo(f"----- {message.role} -----")
            typer.echo(message.content)
    else:
        typer.echo(prompt.text)
