"""Catalog readers: any CSV / JSONL / JSON file with a column mapping (:mod:`retrieval.mapping`), MovieLens
(latest-small, 100k, 1m; :mod:`retrieval.movielens`) through the same entry point, :func:`read_catalog`.

Every reader returns :class:`Catalog` (cleaned :class:`Item` s and an :class:`IngestReport`) where
``rows_read == accepted + rejected``. ``strict=True`` turns any rejection or fix into a :class:`CatalogError`.
The document text that gets embedded is built by :func:`item_document` (template in docs/retrieval.md).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from retrieval.config import CleanConfig
from retrieval.errors import CatalogError
from retrieval.mapping import RESERVED_KEYS, ColumnMapping, FieldType
from retrieval.rowcheck import drop_non_finite, row_problem
from retrieval.textio import csv_rows, decode, large_csv_fields, missing_columns_error, read_bytes, sniff_delimiter
from retrieval.types import IngestReport, Item, MetaValue

Format = Literal["auto", "movielens", "movielens-latest", "movielens-100k", "movielens-1m", "csv", "jsonl", "json"]
_YEAR_IN_TITLE = re.compile(r"\((\d{4})(?:\s*[-–]\s*\d{0,4})?\)\s*$")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass
class Catalog:
    """Cleaned items and the report of how they were read."""

    items: list[Item]
    report: IngestReport


class _Cleaner:
    """Turns raw records into Items, counting every rejection and fix in the report."""

    def __init__(self, mapping: ColumnMapping, clean: CleanConfig, report: IngestReport) -> None:
        self.mapping = mapping
        self.clean = clean
        self.report = report
        self.items: dict[str, Item] = {}

    def add(self, record: dict[str, Any], where: str, texts: list[str], meta: dict[str, FieldType]) -> None:
        m, report = self.mapping, self.report
        report.rows_read += 1
        problem = row_problem(record, m.id, m.title)
        if problem is not None:
            report.reject(problem[0], f"{where}: {problem[1]}")
            return
        record, dropped = drop_non_finite(record)
        for col in dropped:
            report.fix("non_finite_dropped", f"{where}: {col!r} held NaN/Infinity (dropped)")
        item_id = _scalar_text(record.get(m.id))
        if not item_id:
            report.reject("missing_id", f"{where}: empty {m.id!r}")
            return
        if item_id in self.items:
            report.reject("duplicate_id", f"{where}: id {item_id!r} (first occurrence kept)")
            return
        title = _scalar_text(record.get(m.title))
        if not title:
            report.reject("missing_title", f"{where}: id {item_id!r} has an empty {m.title!r}")
            return
        title = self._truncate(title, self.clean.max_title_chars, "title_truncated", where, m.title)
        item_texts: dict[str, str] = {}
        for col in texts:
            value = record.get(col)
            text = ", ".join(str(v) for v in value) if isinstance(value, list) else _scalar_text(value)
            if text:
                item_texts[col] = self._truncate(text, self.clean.max_field_chars, "text_truncated", where, col)
        metadata: dict[str, MetaValue] = {}
        for col, kind in meta.items():
            value = self._convert(record.get(col), kind, where, col)
            if value is not None:
                metadata[col] = value
        if m.year_from_title and "year" not in metadata:
            match = _YEAR_IN_TITLE.search(title)
            if match:
                metadata["year"] = int(match.group(1))
            else:
                report.note("no_year_in_title", f"{where}: {title[:60]!r}")
        self.items[item_id] = Item(id=item_id, title=title, texts=item_texts, metadata=metadata)
        report.accepted += 1

    def _truncate(self, text: str, limit: int, reason: str, where: str, col: str) -> str:
        if len(text) <= limit:
            return text
        self.report.fix(reason, f"{where}: {col!r} had {len(text):,} characters, kept {limit:,}")
        return text[:limit]

    def _convert(self, value: Any, kind: FieldType, where: str, col: str) -> MetaValue | None:
        if value is None or (isinstance(value, str) and not value.strip()) or value == []:
            return None
        try:
            if kind == "list":
                parts = value if isinstance(value, list) else str(value).split(self.mapping.list_sep)
                out = list(dict.fromkeys(p for p in (_scalar_text(x) for x in parts) if p))
                if len(out) > self.clean.max_list_items:
                    self.report.fix("list_truncated", f"{where}: {col!r} had {len(out)} values")
                    out = out[: self.clean.max_list_items]
                return out or None
            if isinstance(value, list | dict):
                raise ValueError("a list/object where a scalar was expected")
            if kind == "int":
                number = float(value) if not isinstance(value, int) else value
                if isinstance(number, float) and not number.is_integer():
                    raise ValueError("not an integer")
                return int(number)
            if kind == "float":
                result = float(value)
                if result != result or result in (float("inf"), float("-inf")):
                    raise ValueError("not a finite number")
                return result
            if kind == "bool":
                if isinstance(value, bool):
                    return value
                text = str(value).strip().lower()
                if text in _TRUE or text in _FALSE:
                    return text in _TRUE
                raise ValueError("not a boolean")
            text = _scalar_text(value)
            return self._truncate(text, self.clean.max_field_chars, "text_truncated", where, col) if text else None
        except (TypeError, ValueError):
            self.report.fix(f"invalid_{kind}", f"{where}: {col!r} = {str(value)[:40]!r} dropped")
            return None


def _scalar_text(value: Any) -> str:
    if value is None or isinstance(value, list | dict):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _resolve_fields(mapping: ColumnMapping, columns: list[str]) -> tuple[list[str], dict[str, FieldType]]:
    if mapping.text or mapping.metadata:
        return list(mapping.text), dict(mapping.metadata)
    rest = [c for c in columns if c not in (mapping.id, mapping.title) and c and c not in RESERVED_KEYS]
    rest = [c for c in rest if not c.startswith(("rc_", "#", "$"))]
    return rest, {}


def _finish(cleaner: _Cleaner, strict: bool, path: Path, started: float) -> Catalog:
    report = cleaner.report
    report.seconds = round(time.perf_counter() - started, 3)
    if strict and report.problems():
        raise CatalogError(
            f"{path}: --strict refuses {report.rejected} rejected row(s) and "
            f"{sum(v.count for v in report.fixes.values())} fixed value(s): " + " | ".join(report.problems()),
            hint="fix the file, or drop --strict to ingest the clean rows and get a report",
        )
    if not cleaner.items:
        detail = "; ".join(report.problems()) or "the file has no data rows"
        raise CatalogError(
            f"{path}: no usable item among {report.rows_read} row(s): {detail}",
            hint="check the file and its column mapping (the id and title columns must be filled)",
        )
    return Catalog(items=list(cleaner.items.values()), report=report)


def read_csv(
    path: str | Path,
    mapping: ColumnMapping | None = None,
    *,
    strict: bool = False,
    limit: int | None = None,
    clean: CleanConfig | None = None,
    fmt: str = "csv",
) -> Catalog:
    """Read a delimited text file with a header line."""
    path, mapping, started = Path(path), mapping or ColumnMapping(), time.perf_counter()
    report = IngestReport(source=str(path), format=fmt)
    text = decode(read_bytes(path), path, mapping.encoding, report)
    delimiter = mapping.delimiter or sniff_delimiter(text)
    cleaner = _Cleaner(mapping, clean or CleanConfig(), report)
    with large_csv_fields():
        rows = csv_rows(text, delimiter)
        header: list[str] | None = None
        for line, row in rows:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if header is None:
                header = [h.strip() for h in row]
                missing = [c for c in mapping.columns() if c not in header]
                if missing:
                    raise missing_columns_error(path, missing, header, delimiter)
                texts, meta = _resolve_fields(mapping, header)
                continue
            if limit is not None and report.rows_read >= limit:
                report.note("limit_reached", f"stopped after {limit} rows (--limit)")
                break
            if len(row) != len(header):
                report.rows_read += 1
                report.reject("wrong_column_count", f"line {line}: {len(row)} fields, header has {len(header)}")
                continue
            cleaner.add(dict(zip(header, row, strict=True)), f"line {line}", texts, meta)
    if header is None:
        raise CatalogError(f"{path} has no header line", hint="the first line must name the columns")
    return _finish(cleaner, strict, path, started)


def read_jsonl(
    path: str | Path,
    mapping: ColumnMapping | None = None,
    *,
    strict: bool = False,
    limit: int | None = None,
    clean: CleanConfig | None = None,
) -> Catalog:
    """Read one JSON object per line."""
    path, mapping, started = Path(path), mapping or ColumnMapping(), time.perf_counter()
    report = IngestReport(source=str(path), format="jsonl")
    text = decode(read_bytes(path), path, mapping.encoding, report)
    records: list[tuple[str, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if limit is not None and len(records) + report.rejected >= limit:
            report.note("limit_reached", f"stopped after {limit} rows (--limit)")
            break
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            report.rows_read += 1
            report.reject("invalid_json", f"line {number}: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(obj, dict):
            report.rows_read += 1
            report.reject("not_an_object", f"line {number}: a JSON {type(obj).__name__}")
            continue
        records.append((f"line {number}", obj))
    return _clean_records(path, records, mapping, report, strict, clean, started)


def read_json(
    path: str | Path,
    mapping: ColumnMapping | None = None,
    *,
    strict: bool = False,
    limit: int | None = None,
    clean: CleanConfig | None = None,
) -> Catalog:
    """Read a JSON array of objects, or an object of ``{id: {...}}`` (the key becomes the id if absent)."""
    path, mapping, started = Path(path), mapping or ColumnMapping(), time.perf_counter()
    report = IngestReport(source=str(path), format="json")
    text = decode(read_bytes(path), path, mapping.encoding, report)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            hint="fix the JSON, or use --format jsonl for one object per line",
        ) from exc
    if isinstance(data, dict):
        pairs = [(str(k), v) for k, v in data.items()]
        data = [{mapping.id: k, **v} if isinstance(v, dict) else v for k, v in pairs]
    if not isinstance(data, list):
        raise CatalogError(f"{path} holds a JSON {type(data).__name__}", hint="use a list of objects or {id: object}")
    records: list[tuple[str, dict[str, Any]]] = []
    for index, obj in enumerate(data[:limit] if limit is not None else data):
        if not isinstance(obj, dict):
            report.rows_read += 1
            report.reject("not_an_object", f"element {index}: a JSON {type(obj).__name__}")
            continue
        records.append((f"element {index}", obj))
    if limit is not None and len(data) > limit:
        report.note("limit_reached", f"stopped after {limit} rows (--limit)")
    return _clean_records(path, records, mapping, report, strict, clean, started)


def _clean_records(
    path: Path,
    records: list[tuple[str, dict[str, Any]]],
    mapping: ColumnMapping,
    report: IngestReport,
    strict: bool,
    clean: CleanConfig | None,
    started: float,
) -> Catalog:
    seen_keys: Counter[str] = Counter()
    for _, obj in records:
        seen_keys.update(obj.keys())
    if records:
        missing = [c for c in mapping.columns() if c not in seen_keys]
        if missing:
            raise missing_columns_error(path, missing, list(seen_keys), ",")
    texts, meta = _resolve_fields(mapping, list(seen_keys))
    cleaner = _Cleaner(mapping, clean or CleanConfig(), report)
    for where, obj in records:
        cleaner.add(obj, where, texts, meta)
    return _finish(cleaner, strict, path, started)


# --- entry point -----------------------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """movielens-latest / movielens-100k / movielens-1m / csv / jsonl / json, from the path (and a header peek)."""
    path = Path(path)
    if path.is_dir():
        from retrieval.movielens import movielens_variant

        return movielens_variant(path)
    if not path.exists():
        raise CatalogError(f"{path} does not exist", hint="check the path (relative paths start in the current folder)")
    name, suffix = path.name.lower(), path.suffix.lower()
    if name in ("u.item",):
        return "movielens-100k"
    if name == "movies.dat":
        return "movielens-1m"
    if name == "movies.csv":
        with path.open("rb") as fh:
            head = fh.readline().decode("utf-8", errors="replace").strip().lstrip("\ufeff")
        if head.replace(" ", "") == "movieId,title,genres":
            return "movielens-latest"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".csv", ".tsv", ".txt", ".psv"):
        return "csv"
    raise CatalogError(
        f"cannot tell the format of {path.name}",
        hint="pass --format csv, jsonl, json or movielens (extensions known: .csv .tsv .txt .jsonl .json)",
    )


def read_catalog(
    path: str | Path,
    *,
    format: str = "auto",
    mapping: ColumnMapping | None = None,
    strict: bool = False,
    limit: int | None = None,
    clean: CleanConfig | None = None,
) -> Catalog:
    """Read any supported catalog into cleaned items with a report (the one entry point the CLI uses)."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise CatalogError(f"--limit must be at least 1, got {limit}", hint="drop --limit to read the whole file")
    fmt = detect_format(path) if format == "auto" else format
    if fmt.startswith("movielens"):
        if mapping is not None and mapping != ColumnMapping():
            raise CatalogError(
                "a column mapping was given for a MovieLens catalog",
                hint="drop --mapping/--id-col/--title-col/--text-cols, or pass --format csv to use them",
            )
        from retrieval.movielens import read_movielens

        return read_movielens(path, variant=fmt, strict=strict, limit=limit, clean=clean)
    if path.is_dir():
        raise CatalogError(f"{path} is a folder", hint="give the catalog file for --format csv/jsonl/json")
    if fmt == "csv":
        return read_csv(path, mapping, strict=strict, limit=limit, clean=clean)
    if fmt == "jsonl":
        return read_jsonl(path, mapping, strict=strict, limit=limit, clean=clean)
    if fmt == "json":
        return read_json(path, mapping, strict=strict, limit=limit, clean=clean)
    raise CatalogError(f"unknown format {format!r}", hint="use auto, movielens, csv, jsonl or json")


# --- the document that gets embedded ---------------------------------------------------------------------------

_FIRST_KEYS = ("genres", "tags")


def _label(key: str) -> str:
    return key.replace("_", " ").strip().capitalize()


def item_document(item: Item) -> str:
    """The text embedded for an item (template documented in docs/retrieval.md)::

    {title} ({year})           <- year only when it is not already in the title
    Genres: {genres, ...}
    Tags: {tags, ...}
    {Other list or text metadata}: {value, ...}   <- in key order
    {Text field}: {text}                          <- in mapping order
    """
    year = item.metadata.get("year")
    head = item.title
    if isinstance(year, int) and not isinstance(year, bool) and str(year) not in head:
        head = f"{head} ({year})"
    lines = [head]
    keys = [k for k in _FIRST_KEYS if k in item.metadata]
    keys += sorted(k for k in item.metadata if k not in _FIRST_KEYS)
    for key in keys:
        value = item.metadata[key]
        if isinstance(value, list):
            lines.append(f"{_label(key)}: {', '.join(value)}")
        elif isinstance(value, str):
            lines.append(f"{_label(key)}: {value}")
    lines.extend(f"{_label(key)}: {text}" for key, text in item.texts.items())
    return "\n".join(lines)
