"""`recagent ingest PATH`: read a catalog, clean it, embed it into Chroma, print the report. No logic of its own.

Register with ``app.add_typer(cmd_ingest.app)`` (no ``name``: typer then merges the ``ingest`` command into the
root, so the command line is ``recagent ingest PATH``; with ``name="ingest"`` it would be ``recagent ingest
ingest``). The store/embedding configuration comes from a provider: by default :func:`configs_from_context` maps
``ctx.obj.settings`` (fields ``chroma_path``, ``chroma_url``, ``collection``, ``embed_model``, ``embed_batch_size``,
``embed_device``) onto the retrieval config objects; :func:`build_app` takes another provider (tests pass one with
a fake embedder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recagent.mapping_opts import IdCol, MappingFile, TextCols, TitleCol
from retrieval.config import CleanConfig, EmbedConfig, StoreConfig

if TYPE_CHECKING:
    from retrieval.embed import Embedder
    from retrieval.types import IngestReport


@dataclass
class IngestDeps:
    """What the command needs besides its options: explicit configs, and optionally a loaded embedder."""

    store_config: StoreConfig
    embed_config: EmbedConfig
    embedder: Embedder | None = None
    clean: CleanConfig | None = None


Provider = Callable[[typer.Context], IngestDeps]


def configs_from_context(ctx: typer.Context) -> IngestDeps:
    """The retrieval configs from the settings the root command built."""
    settings = ctx.find_root().obj.settings
    return IngestDeps(settings.store_config(), settings.embed_config(), clean=settings.clean_config())


def ingest_command(
    path: Path,
    store_config: StoreConfig,
    embed_config: EmbedConfig,
    *,
    format: str = "auto",
    mapping_file: Path | None = None,
    id_col: str | None = None,
    title_col: str | None = None,
    text_cols: list[str] | None = None,
    meta: list[str] | None = None,
    list_sep: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    collection: str | None = None,
    strict: bool = False,
    prune: bool = False,
    limit: int | None = None,
    embedder: Embedder | None = None,
    clean: CleanConfig | None = None,
    console: Console | None = None,
    as_json: bool = False,
) -> IngestReport:
    """Run :func:`retrieval.ingest.ingest` with the command-line options and print its report."""
    from recagent.mapping_opts import catalog_mapping
    from retrieval.ingest import ingest

    mapping = catalog_mapping(mapping_file, id_col=id_col, title_col=title_col, text_cols=text_cols, meta=meta,
                              list_sep=list_sep, delimiter=delimiter, encoding=encoding)  # fmt: skip
    report = ingest(
        path,
        store_config=store_config,
        embed_config=embed_config,
        format=format,
        mapping=mapping,
        collection=collection,
        strict=strict,
        prune=prune,
        limit=limit,
        clean=clean,
        embedder=embedder,
    )
    console = console or Console()
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        print_report(report, console)
    return report


def print_report(report: IngestReport, console: Console) -> None:
    """The report as rich tables: counts, then every reason with its examples, then what the store did."""
    table = Table(title=f"ingest {escape(report.source)}", show_header=False, title_justify="left")
    table.add_row("format / encoding", f"{report.format} / {report.encoding}")
    table.add_row("rows read", f"{report.rows_read:,}")
    table.add_row("accepted", f"[green]{report.accepted:,}[/]")
    table.add_row("rejected", f"[red]{report.rejected:,}[/]" if report.rejected else "0")
    if report.store is not None:
        s = report.store
        table.add_row("collection", f"{s.collection} ({s.embedder})")
        table.add_row("added / updated / unchanged", f"{s.added:,} / {s.updated:,} / {s.unchanged:,}")
        table.add_row("embedded / pruned", f"{s.embedded:,} / {s.pruned:,}")
    table.add_row("seconds", f"{report.seconds:.1f}")
    console.print(table)
    for title, entries, style in (
        ("rejected rows", report.rejections, "red"),
        ("fixed values", report.fixes, "yellow"),
        ("notes", report.notes, "dim"),
    ):
        if not entries:
            continue
        reasons = Table(title=title, title_justify="left", title_style=style)
        reasons.add_column("reason")
        reasons.add_column("count", justify="right")
        reasons.add_column("examples")
        for reason, entry in entries.items():
            reasons.add_row(reason, f"{entry.count:,}", escape("\n".join(entry.examples)))
        console.print(reasons)


def build_app(provider: Provider = configs_from_context) -> typer.Typer:
    """The ``ingest`` sub-app; ``provider`` supplies the configs (and optionally an embedder) per invocation."""
    app = typer.Typer(help="Ingest a catalog into the vector store.", add_completion=False)

    @app.command("ingest")
    def ingest_cli(
        ctx: typer.Context,
        path: Annotated[Path, typer.Argument(help="Catalog file, or a MovieLens folder (latest, 100k, 1m).")],
        format: Annotated[str, typer.Option("--format", help="auto, movielens, csv, jsonl or json.")] = "auto",
        mapping: MappingFile = None,
        id_col: IdCol = None,
        title_col: TitleCol = None,
        text_cols: TextCols = None,
        meta: Annotated[
            list[str] | None,
            typer.Option("--meta", help="Typed metadata column COLUMN:TYPE (int/float/str/list/bool)."),
        ] = None,
        list_sep: Annotated[str | None, typer.Option("--list-sep", help="Separator inside list columns.")] = None,
        delimiter: Annotated[str | None, typer.Option("--delimiter", help="CSV delimiter (default: sniffed).")] = None,
        encoding: Annotated[str | None, typer.Option("--encoding", help="auto (default), utf-8, latin-1...")] = None,
        collection: Annotated[str | None, typer.Option("--collection", help="Target collection.")] = None,
        strict: Annotated[bool, typer.Option("--strict", help="Fail on any rejected row or fixed value.")] = False,
        prune: Annotated[bool, typer.Option("--prune", help="Delete stored items that are not in the file.")] = False,
        limit: Annotated[int | None, typer.Option("--limit", help="Read only the first N rows.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Embedding progress bar.")] = True,
    ) -> None:
        """Read, clean, embed and store a catalog; unchanged items are not embedded again."""
        deps = provider(ctx)
        ingest_command(
            path,
            deps.store_config,
            deps.embed_config.model_copy(update={"progress": progress and deps.embed_config.progress}),
            format=format,
            mapping_file=mapping,
            id_col=id_col,
            title_col=title_col,
            text_cols=text_cols,
            meta=meta,
            list_sep=list_sep,
            delimiter=delimiter,
            encoding=encoding,
            collection=collection,
            strict=strict,
            prune=prune,
            limit=limit,
            embedder=deps.embedder,
            clean=deps.clean,
            as_json=as_json,
        )

    return app


app = build_app()
