"""Reading text files defensively: encodings, binary files, delimiters, CSV field limits.

Shared by the catalog and interaction readers. Every problem becomes a :class:`CatalogError` with a hint, or a
counted fix/note in an :class:`IngestReport`; nothing is dropped silently.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retrieval.errors import CatalogError
from retrieval.types import IngestReport

DELIMITERS = (",", ";", "\t", "|")
_LINE_BREAK = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_MAX_CSV_FIELD = min(sys.maxsize, 2**31 - 1)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, or a CatalogError saying why they cannot be read."""
    if not path.exists():
        raise CatalogError(f"{path} does not exist", hint="check the path (relative paths start in the current folder)")
    if path.is_dir():
        raise CatalogError(f"{path} is a folder, not a file", hint="give the file inside it, or a MovieLens folder")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}", hint="check the file's permissions") from exc
    if not data.strip():
        raise CatalogError(f"{path} is empty", hint="give a file with a header line and at least one data row")
    return data


def decode(data: bytes, path: Path, encoding: str, report: IngestReport) -> str:
    """Decode ``data``; ``encoding='auto'`` means UTF-8 (BOM aware, UTF-16 by BOM), falling back to cp1252/latin-1.

    A file whose non-ASCII lines are all invalid UTF-8 is taken as cp1252 (a note). A file mixing valid UTF-8 lines
    with invalid ones keeps the valid lines and decodes the others as cp1252 (a fix per line). With an explicit
    codec, undecodable bytes become U+FFFD (a fix per line).
    """
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom) and encoding in ("auto", "utf-16"):
            report.encoding = "utf-16"
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise CatalogError(
                    f"{path} starts with a UTF-16 mark but is not valid UTF-16: {exc}",
                    hint="re-save the file as UTF-8",
                ) from exc
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CatalogError(
            f"{path} looks like a binary file (NUL byte at offset {nul}), not text",
            hint="give a CSV/JSONL text file (unzip archives first; Excel files must be saved as CSV)",
        )
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if encoding != "auto":
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise CatalogError(
                f"unknown encoding {encoding!r}", hint="use auto, utf-8, latin-1, cp1252 or another Python codec name"
            ) from exc
        report.encoding = encoding
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            pass
        out = []
        for number, line in enumerate(data.splitlines(keepends=True), start=1):
            try:
                out.append(line.decode(encoding))
            except UnicodeDecodeError:
                text = line.decode(encoding, errors="replace")
                report.fix("invalid_bytes_replaced", f"line {number}: {text.strip()[:80]}")
                out.append(text)
        return "".join(out)
    try:
        text = data.decode("utf-8")
        report.encoding = "utf-8"
        return text
    except UnicodeDecodeError:
        pass
    lines = data.splitlines(keepends=True)
    good_non_ascii = 0
    decoded: list[tuple[str, bool]] = []
    for line in lines:
        try:
            text = line.decode("utf-8")
            good_non_ascii += not line.isascii()
            decoded.append((text, True))
        except UnicodeDecodeError:
            decoded.append((_decode_8bit(line), False))
    if good_non_ascii == 0:
        report.encoding = "cp1252"
        report.note("encoding_not_utf8", "no line is valid UTF-8 with non-ASCII text: read as cp1252 (latin-1)")
        return "".join(t for t, _ in decoded)
    report.encoding = "utf-8 (some lines cp1252)"
    for number, (text, ok) in enumerate(decoded, start=1):
        if not ok:
            report.fix("line_decoded_as_cp1252", f"line {number}: {text.strip()[:80]}")
    return "".join(t for t, _ in decoded)


def _decode_8bit(line: bytes) -> str:
    try:
        return line.decode("cp1252")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def first_line(text: str) -> str:
    """The first non-blank line of ``text`` (any line break)."""
    stripped = text.lstrip("\r\n")
    match = _LINE_BREAK.search(stripped)
    return stripped[: match.start()] if match else stripped


def sniff_delimiter(header_line: str) -> str:
    """The delimiter among , ; TAB | that splits the header line into the most columns (',' on a tie)."""
    counts: dict[str, int] = {}
    for d in DELIMITERS:
        try:
            counts[d] = len(next(csv.reader([first_line(header_line)], delimiter=d), []))
        except csv.Error:
            counts[d] = 0
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] > 1 else ","


@contextlib.contextmanager
def large_csv_fields() -> Iterator[None]:
    """Lift the csv module's 128 KiB field limit while reading (fields are truncated afterwards, and counted)."""
    old = csv.field_size_limit()
    csv.field_size_limit(_MAX_CSV_FIELD)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def csv_rows(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each CSV record of ``text``; raises CatalogError on a malformed file."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    line = 1
    try:
        for row in reader:
            yield line, row
            line = reader.line_num + 1
    except csv.Error as exc:
        raise CatalogError(
            f"line {reader.line_num}: the CSV cannot be parsed: {exc}",
            hint="check the quoting around that line (a field with a quote must be quoted and its quotes doubled)",
        ) from exc


CATALOG_MAPPING_FIX = (
    "fix the column mapping (--mapping FILE, or --id-col/--title-col/--text-cols) to use columns found"
)
LOG_MAPPING_FIX = (
    "map the log's columns with --interactions-mapping FILE (an [interactions] table: user, item, rating, "
    "timestamp = column names) to use columns found"
)


def missing_columns_error(
    path: Path, missing: list[str], found: list[str], delimiter: str, fix: str = CATALOG_MAPPING_FIX
) -> CatalogError:
    """An error that names the missing columns, lists the ones found and guesses a wrong delimiter; ``fix`` says
    how to map the columns (the catalog's options by default)."""
    hint = fix
    if len(found) == 1:
        other = [d for d in DELIMITERS if d != delimiter and d in found[0]]
        if other:
            hint = f"the header has one column; the file seems delimited by {other[0]!r}: pass --delimiter {other[0]!r}"
    shown = ", ".join(repr(c) for c in found[:40]) + (" ..." if len(found) > 40 else "")
    return CatalogError(
        f"{path}: column(s) {', '.join(repr(c) for c in missing)} not found; columns found: {shown}", hint=hint
    )


def read_mapping_table(path: str | Path, table: str, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The mapping object of a TOML or JSON file: its ``[table]`` when it has one, else the top level without the
    tables named in ``skip`` (so one file may hold a catalog mapping and an ``[interactions]`` table)."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"mapping file {path} does not exist", hint="give a .toml or .json mapping file")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"mapping file {path} cannot be parsed: {exc}", hint="fix its TOML/JSON syntax") from exc
    if isinstance(data, dict) and isinstance(data.get(table), dict):
        return dict(data[table])
    if not isinstance(data, dict):
        raise CatalogError(f"mapping file {path} must hold an object", hint='e.g. id = "isbn" / title = "name"')
    return {k: v for k, v in data.items() if k not in skip}
