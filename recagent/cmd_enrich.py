"""`recagent enrich`: LLM descriptions and keywords for thin catalog items (agent/enrich.py). Thin wiring only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from agent.enrich import EnrichReport

app = typer.Typer()


@app.command("enrich")
def enrich(
    ctx: typer.Context,
    collection: Annotated[str | None, typer.Option("--collection", help="Collection to enrich.")] = None,
    into: Annotated[
        str | None,
        typer.Option("--into", help="Copy the collection into this new one first and enrich the copy."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Enrich at most N items.")] = None,
    all_items: Annotated[bool, typer.Option("--all", help="Enrich every item, not only thin ones.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Generate again, ignoring the cache.")] = False,
    off: Annotated[bool, typer.Option("--off", help="Remove the enrichment: re-embed the original documents.")] = False,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Items per engine call (RECAGENT_ENRICH_BATCH_SIZE).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar.")] = True,
) -> None:
    """Write a short description and keywords for items with thin text (title and attributes only) with the LLM,
    store them beside the original fields and re-embed the documents with them. Cached and resumable."""
    from agent.enrich import enrich_command

    settings = ctx.find_root().obj.settings
    if batch_size is not None:
        settings = settings.model_copy(update={"enrich_batch_size": batch_size})
    report = enrich_command(settings, collection=collection, into=into, limit=limit, all_items=all_items,
                            force=force, off=off, progress=progress)  # fmt: skip
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        print_report(report, Console())


def print_report(report: EnrichReport, console: Console) -> None:
    table = Table(title=f"enrich {escape(report.collection)}", show_header=False, title_justify="left")
    if report.copied_from:
        table.add_row("copied from", escape(report.copied_from))
    table.add_row("items", f"{report.items_seen:,}")
    if report.on:
        table.add_row("thin / skipped (have text) / beyond --limit",
                      f"{report.thin:,} / {report.skipped:,} / {report.beyond_limit:,}")  # fmt: skip
        table.add_row("selected", f"{report.selected:,}")
        table.add_row("generated / cached", f"{report.generated:,} / {report.cached:,}")
        table.add_row("enriched", f"[green]{report.enriched:,}[/]")
        failed = sum(report.failed.values())
        detail = ", ".join(f"{k}: {v}" for k, v in report.failed.items())
        table.add_row("failed", f"[red]{failed:,}[/] ({escape(detail)})" if failed else "0")
        if report.failed_examples:
            table.add_row("failed e.g.", escape(", ".join(report.failed_examples)))
        table.add_row("tokens (prompt / completion)", f"{report.prompt_tokens:,} / {report.completion_tokens:,}")
        table.add_row("prompt / model", escape(f"{report.prompt_version} / {report.model}"))
    else:
        table.add_row("restored (enrichment off)", f"{report.restored:,}")
    table.add_row("re-embedded", f"{report.embedded:,}")
    table.add_row("enriched items in the collection", f"{report.enriched_total:,}")
    table.add_row("seconds", f"{report.seconds:.1f}")
    console.print(table)
