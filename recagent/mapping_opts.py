"""The column-mapping options shared by `ingest`, `eval run` and the `train` commands: any catalog and any log.

A catalog: ``--mapping FILE`` (TOML/JSON: id, title, text, metadata, ...; docs/retrieval.md) with ``--id-col``,
``--title-col``, ``--text-cols`` layered on top. A log: ``--interactions-mapping FILE`` (its ``[interactions]``
table, or the top level: user, item, rating, timestamp). One file may hold both (``[mapping]`` and
``[interactions]`` tables).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from retrieval.interactions import InteractionMapping
    from retrieval.mapping import ColumnMapping

__all__ = ["catalog_mapping", "log_mapping", "parse_meta", "split_cols"]

MappingFile = Annotated[
    Path | None, typer.Option("--mapping", help="Catalog column mapping file (TOML or JSON); see docs/retrieval.md.")
]
IdCol = Annotated[str | None, typer.Option("--id-col", help="Catalog column holding the item id.")]
TitleCol = Annotated[str | None, typer.Option("--title-col", help="Catalog column holding the title.")]
TextCols = Annotated[
    list[str] | None, typer.Option("--text-cols", help="Catalog free-text columns to embed (comma separated).")
]
LogMappingFile = Annotated[
    Path | None,
    typer.Option(
        "--interactions-mapping",
        help="Interaction-log column mapping file: its interactions table (or the top level) with user, item, "
        "rating, timestamp = column names; no timestamp column = file order is time.",
    ),
]


def parse_meta(values: list[str]) -> dict[str, Any]:
    """``COLUMN:TYPE`` options -> {column: type}."""
    from typing import get_args

    from retrieval.catalog import FieldType
    from retrieval.errors import InputError

    types = get_args(FieldType)
    out: dict[str, Any] = {}
    for value in values:
        name, colon, kind = value.partition(":")
        if not name or not colon:
            raise InputError(f"--meta {value!r} is not COLUMN:TYPE", hint="e.g. --meta year:int --meta authors:list")
        if kind not in types:
            raise InputError(
                f"--meta {value!r}: unknown type {kind!r}",
                hint=f"use one of {', '.join(types)} (e.g. --meta year:int --meta authors:list)",
            )
        out[name] = kind
    return out


def split_cols(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def catalog_mapping(
    mapping_file: Path | None = None,
    *,
    id_col: str | None = None,
    title_col: str | None = None,
    text_cols: list[str] | None = None,
    meta: list[str] | None = None,
    list_sep: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
) -> ColumnMapping | None:
    """The catalog mapping the options describe (file, then options on top), or None when none is given."""
    from retrieval.mapping import load_mapping, mapping_from

    texts, metadata = split_cols(text_cols), parse_meta(meta or []) or None
    options = (id_col, title_col, texts, metadata, list_sep, delimiter, encoding)
    if mapping_file is None and all(o is None for o in options):
        return None
    base = load_mapping(mapping_file) if mapping_file is not None else None
    return mapping_from(base, id_col=id_col, title_col=title_col, text_cols=texts, metadata=metadata,
                        list_sep=list_sep, delimiter=delimiter, encoding=encoding)  # fmt: skip


def log_mapping(mapping_file: Path | None) -> InteractionMapping | None:
    """The interaction-log mapping of ``--interactions-mapping``, or None (MovieLens names / default columns)."""
    if mapping_file is None:
        return None
    from retrieval.interactions import load_log_mapping

    return load_log_mapping(mapping_file)
