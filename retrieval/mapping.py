"""The column mapping of a catalog: which columns (CSV) or keys (JSON) hold the id, the title, the free texts and
the typed metadata; built from command-line flags (:func:`mapping_from`) or a TOML/JSON file (:func:`load_mapping`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from retrieval.errors import CatalogError
from retrieval.textio import read_mapping_table

__all__ = ["RESERVED_KEYS", "ColumnMapping", "FieldType", "load_mapping", "mapping_from"]

FieldType = Literal["int", "float", "str", "list", "bool"]
RESERVED_KEYS = frozenset({"title", "id", "document"})


class ColumnMapping(BaseModel):
    """Which columns (CSV) or keys (JSON) hold the id, the title, the free texts and the typed metadata.

    With neither ``text`` nor ``metadata`` given, every other column becomes a text field.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default="id", min_length=1)
    title: str = Field(default="title", min_length=1)
    text: list[str] = Field(default_factory=list)
    metadata: dict[str, FieldType] = Field(default_factory=dict)
    list_sep: str = Field(default="|", min_length=1)
    delimiter: str | None = Field(default=None, description="CSV delimiter; None sniffs , ; TAB | from the header.")
    encoding: str = Field(default="auto", description="auto (UTF-8, falling back to cp1252 per line) or a codec name.")
    year_from_title: bool = Field(default=False, description="Parse 'Title (1995)' into metadata year.")

    @model_validator(mode="after")
    def _consistent(self) -> ColumnMapping:
        if self.id == self.title:
            raise ValueError("id and title must be different columns")
        both = set(self.text) & set(self.metadata)
        if both:
            raise ValueError(f"column(s) {sorted(both)} are both text and metadata")
        for key in [*self.text, *self.metadata]:
            if key in RESERVED_KEYS or key.startswith(("rc_", "#", "$")) or not key.strip():
                raise ValueError(f"field name {key!r} is reserved (title, id, document, rc_*, #*, $*)")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {self.delimiter!r}")
        return self

    def columns(self) -> list[str]:
        return list(dict.fromkeys([self.id, self.title, *self.text, *self.metadata]))


def mapping_from(
    base: ColumnMapping | None = None,
    *,
    id_col: str | None = None,
    title_col: str | None = None,
    text_cols: list[str] | None = None,
    metadata: dict[str, FieldType] | None = None,
    list_sep: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
) -> ColumnMapping:
    """``base`` (or the default mapping) with command-line options layered on top; CatalogError if invalid."""
    data = (base or ColumnMapping()).model_dump()
    overrides = {
        "id": id_col,
        "title": title_col,
        "text": text_cols,
        "metadata": metadata,
        "list_sep": list_sep,
        "delimiter": delimiter,
        "encoding": encoding,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    return _validate_mapping(data, "the command-line mapping options")


def load_mapping(path: str | Path) -> ColumnMapping:
    """Read a :class:`ColumnMapping` from a TOML or JSON file (top level or a ``[mapping]`` table; an
    ``[interactions]`` table beside it is the log's mapping, see :func:`retrieval.interactions.load_log_mapping`)."""
    data = read_mapping_table(path, "mapping", skip=("interactions",))
    return _validate_mapping(data, f"mapping file {path}")


def _validate_mapping(data: dict[str, Any], where: str) -> ColumnMapping:
    try:
        return ColumnMapping.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'mapping'}: {e['msg']}" for e in exc.errors())
        raise CatalogError(
            f"invalid column mapping in {where}: {problems}",
            hint="keys: id, title, text (list), metadata ({column = int|float|str|list|bool}), list_sep, "
            "delimiter, encoding, year_from_title; see docs/retrieval.md",
        ) from exc
