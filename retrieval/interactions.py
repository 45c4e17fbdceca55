"""Interaction logs (who rated/bought what, when) in a compact numpy form.

Readers: MovieLens ``ratings.csv`` (latest), ``u.data`` (100k), ``ratings.dat`` (1m), and any CSV with a
user, an item, and optionally a rating and a timestamp column. Rows are sorted by user, then time, so a user's
history is one slice; the report counts rows read = accepted + rejected like the catalog's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retrieval.errors import CatalogError
from retrieval.textio import (
    LOG_MAPPING_FIX,
    csv_rows,
    decode,
    large_csv_fields,
    missing_columns_error,
    read_bytes,
    read_mapping_table,
    sniff_delimiter,
)
from retrieval.types import HistoryEntry, IngestReport


class InteractionMapping(BaseModel):
    """Columns of a generic interaction CSV. ``rating``/``timestamp`` None: used when a column of that name exists."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(default="user", min_length=1)
    item: str = Field(default="item", min_length=1)
    rating: str | None = None
    timestamp: str | None = None
    delimiter: str | None = None
    encoding: str = "auto"
    repeats: Literal["keep", "first", "last"] = Field(
        "keep",
        description="A (user, item) pair on several rows (e.g. several tags of one movie): keep every row (repeat "
        "consumption), or only the user's first / last one in time order (the others are counted as rejected).",
    )


def log_mapping_from(
    base: InteractionMapping | None = None,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: str | None = None,
) -> InteractionMapping:
    """``base`` (or the default mapping) with column options layered on top; CatalogError if invalid."""
    data = (base or InteractionMapping()).model_dump()
    overrides = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": time_col}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return _validate_log_mapping(data, "the command-line log options")


def load_log_mapping(path: str | Path) -> InteractionMapping:
    """An :class:`InteractionMapping` from a TOML or JSON file: its ``[interactions]`` table, or the top level (so
    the catalog's mapping file can hold the log's columns too)."""
    return _validate_log_mapping(read_mapping_table(path, "interactions", skip=("mapping",)), f"mapping file {path}")


def _validate_log_mapping(data: dict[str, Any], where: str) -> InteractionMapping:
    try:
        return InteractionMapping.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'mapping'}: {e['msg']}" for e in exc.errors())
        raise CatalogError(
            f"invalid interaction-log mapping in {where}: {problems}",
            hint="keys of the [interactions] table: user, item, rating, timestamp (column names), delimiter, encoding",
        ) from exc


@dataclass
class Interactions:
    """Interactions sorted by (user, time). ``users``/``items`` index ``user_ids``/``item_ids``.

    ``ratings`` is NaN where the log has no rating; ``timestamps`` is 0 where it has no time (file order is kept).
    """

    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    report: IngestReport | None = None
    user_ptr: np.ndarray = field(init=False, repr=False)
    user_index: dict[str, int] = field(init=False, repr=False)
    item_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        order = np.lexsort((np.arange(len(self.users)), self.timestamps, self.users))
        self.users = np.asarray(self.users, dtype=np.int32)[order]
        self.items = np.asarray(self.items, dtype=np.int32)[order]
        self.ratings = np.asarray(self.ratings, dtype=np.float32)[order]
        self.timestamps = np.asarray(self.timestamps, dtype=np.int64)[order]
        counts = np.bincount(self.users, minlength=len(self.user_ids))
        self.user_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {t: i for i, t in enumerate(self.item_ids)}

    @classmethod
    def from_records(
        cls,
        users: Sequence[str],
        items: Sequence[str],
        ratings: Sequence[float | None] | None = None,
        timestamps: Sequence[int | None] | None = None,
        report: IngestReport | None = None,
    ) -> Interactions:
        """Build from parallel lists of raw ids (ratings/timestamps optional)."""
        user_ids = list(dict.fromkeys(users))
        item_ids = list(dict.fromkeys(items))
        u_index = {u: i for i, u in enumerate(user_ids)}
        i_index = {t: i for i, t in enumerate(item_ids)}
        n = len(users)
        rating_arr = np.array([np.nan if r is None else r for r in ratings], np.float32) if ratings else None
        time_arr = np.array([0 if t is None else t for t in timestamps], np.int64) if timestamps else None
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            users=np.fromiter((u_index[u] for u in users), np.int32, n),
            items=np.fromiter((i_index[t] for t in items), np.int32, n),
            ratings=rating_arr if rating_arr is not None else np.full(n, np.nan, np.float32),
            timestamps=time_arr if time_arr is not None else np.zeros(n, np.int64),
            report=report,
        )

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _rows(self, user_id: str) -> slice:
        index = self.user_index.get(user_id)
        if index is None:
            return slice(0, 0)
        return slice(int(self.user_ptr[index]), int(self.user_ptr[index + 1]))

    def history(self, user_id: str) -> list[HistoryEntry]:
        """The user's interactions, oldest first (empty for an unknown user)."""
        rows = self._rows(user_id)
        return [
            HistoryEntry(
                item_id=self.item_ids[int(i)],
                rating=None if math.isnan(float(r)) else float(r),
                timestamp=int(t) if t else None,
            )
            for i, r, t in zip(self.items[rows], self.ratings[rows], self.timestamps[rows], strict=True)
        ]

    def popularity(self, min_rating: float | None = None) -> np.ndarray:
        """Interactions per item index (only ratings >= ``min_rating`` when given)."""
        mask = self.ratings >= min_rating if min_rating is not None else slice(None)
        return np.bincount(self.items[mask], minlength=self.n_items)

    def matrix(self, min_rating: float | None = None, binary: bool = True) -> sp.csr_matrix:
        """Users x items sparse matrix: 1 per interacted pair (``binary``), else the rating (1 when missing)."""
        mask = self.ratings >= min_rating if min_rating is not None else np.ones(len(self), bool)
        values = np.ones(int(mask.sum()), np.float32) if binary else np.nan_to_num(self.ratings[mask], nan=1.0)
        mat = sp.csr_matrix(
            (values, (self.users[mask], self.items[mask])), shape=(self.n_users, self.n_items), dtype=np.float32
        )
        if binary:
            mat.data = np.minimum(mat.data, 1.0)
        return mat

    def subset(self, keep: np.ndarray) -> Interactions:
        """The interactions where the boolean mask ``keep`` is true (same id maps, so matrices stay aligned)."""
        return Interactions(
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            users=self.users[keep],
            items=self.items[keep],
            ratings=self.ratings[keep],
            timestamps=self.timestamps[keep],
            report=self.report,
        )

    def repeated_rows(self, keep: Literal["first", "last"] = "first") -> np.ndarray:
        """Mask of the rows that repeat an earlier (``keep="first"``) or a later (``"last"``) row of the same
        (user, item) pair in time order; each pair's kept row is False."""
        key = self.users.astype(np.int64) * max(self.n_items, 1) + self.items
        order = np.arange(len(key)) if keep == "first" else np.arange(len(key))[::-1]
        _, first = np.unique(key[order], return_index=True)
        repeated = np.ones(len(key), bool)
        repeated[order[first]] = False
        return repeated

    def holdout_last_positive(
        self,
        min_rating: float = 4.0,
        *,
        users: Sequence[str] | None = None,
        sample: int | None = None,
        seed: int = 0,
    ) -> tuple[Interactions, dict[str, str]]:
        """Leave-last-positive-out split.

        For each chosen user with an earlier interaction, the last interaction rated >= ``min_rating`` becomes the
        held-out positive; it and everything after it are removed from that user's history. Other users are kept
        whole. Returns (train interactions, {user_id: held-out item id}).
        """
        chosen = list(users) if users is not None else list(self.user_ids)
        eligible = []
        keep = np.ones(len(self), bool)
        for user in chosen:
            rows = self._rows(user)
            positives = np.nonzero(self.ratings[rows] >= min_rating)[0]
            if len(positives) and positives[-1] > 0:
                eligible.append((user, rows.start + int(positives[-1]), rows.stop))
        if sample is not None and sample < len(eligible):
            eligible = random.Random(seed).sample(eligible, sample)
        heldout: dict[str, str] = {}
        for user, cut, stop in eligible:
            heldout[user] = self.item_ids[int(self.items[cut])]
            keep[cut:stop] = False
        return self.subset(keep), heldout


def _parse_time(text: str) -> int:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
        if math.isfinite(value):
            return int(value)
    except ValueError:
        pass
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


MOVIELENS_LOG = InteractionMapping(user="userId", item="movieId", rating="rating", timestamp="timestamp")


def _movielens_ratings(path: Path) -> tuple[Path, str, list[str] | None, str]:
    """(file, delimiter, fixed header or None, encoding) of a MovieLens ratings file or folder."""
    files = [path] if path.is_file() else [path / n for n in ("ratings.csv", "u.data", "ratings.dat")]
    for file in files:
        if file.name == "ratings.csv" and file.is_file():
            return file, ",", None, "auto"
        if file.name == "u.data" and file.is_file():
            return file, "\t", ["userId", "movieId", "rating", "timestamp"], "latin-1"
        if file.name == "ratings.dat" and file.is_file():
            return file, "::", ["userId", "movieId", "rating", "timestamp"], "latin-1"
    raise CatalogError(
        f"no MovieLens ratings file (ratings.csv, u.data, ratings.dat) at {path}",
        hint="give the MovieLens folder or the ratings file, or --format csv with user/item columns",
    )


def read_interactions(
    path: str | Path,
    *,
    format: str = "auto",
    mapping: InteractionMapping | None = None,
    items: Collection[str] | None = None,
    strict: bool = False,
    limit: int | None = None,
) -> Interactions:
    """Read an interaction log; ``items`` (catalog ids) rejects interactions with unknown items, counted."""
    path = Path(path)
    fmt = format
    if fmt == "auto":
        is_ml = path.is_dir() or path.name in ("ratings.csv", "u.data", "ratings.dat")
        fmt = "movielens" if is_ml and mapping is None else "csv"
    report = IngestReport(source=str(path), format=fmt)
    file, delimiter, header, encoding, mapping = _log_source(path, format, fmt, mapping, report)
    text = decode(read_bytes(file), file, encoding, report)
    if header is None and not delimiter:
        delimiter = sniff_delimiter(text)
    cols: dict[str, int] = {}
    users: list[str] = []
    item_ids: list[str] = []
    ratings: list[float | None] = []
    stamps: list[int | None] = []
    width = 0
    for number, row in _split(text, delimiter, header is not None):
        if not any(c.strip() for c in row):
            continue
        if not cols:
            names = header or [c.strip() for c in row]
            cols, width = _columns(names, mapping, file, delimiter), len(names)
            if header is None:
                continue
        if limit is not None and report.rows_read >= limit:
            report.note("limit_reached", f"stopped after {limit} rows (--limit)")
            break
        report.rows_read += 1
        parsed = _parse_row(row, cols, width, f"line {number}", items, report)
        if parsed is not None:
            users.append(parsed[0])
            item_ids.append(parsed[1])
            ratings.append(parsed[2])
            stamps.append(parsed[3])
            report.accepted += 1
    _check_read(file, report, strict, has_header=bool(cols), accepted=len(users))
    return _repeats(Interactions.from_records(users, item_ids, ratings, stamps, report=report), mapping, report)


def _repeats(log: Interactions, mapping: InteractionMapping, report: IngestReport) -> Interactions:
    """``log`` with the mapping's ``repeats`` rule applied: repeated (user, item) rows dropped and counted as
    rejected (``first``/``last``), or kept and counted in a note that names the setting (``keep``)."""
    keep = "first" if mapping.repeats == "keep" else mapping.repeats
    repeated = log.repeated_rows(keep)
    n = int(repeated.sum())
    if n == 0:
        return log
    pairs = len(log) - n
    if mapping.repeats == "keep":
        fix = 'set repeats = "first" (or "last") in the interactions mapping to keep one row per pair'
        report.note("repeated_pairs", f"{n} row(s) repeat one of {pairs} (user, item) pairs and are all kept; {fix}")
        return log
    for row in np.nonzero(repeated)[0]:
        report.reject("repeated_pair", f"user {log.user_ids[log.users[row]]} item {log.item_ids[log.items[row]]}")
    report.accepted -= n
    return log.subset(~repeated)


def _log_source(
    path: Path, format: str, fmt: str, mapping: InteractionMapping | None, report: IngestReport
) -> tuple[Path, str, list[str] | None, str, InteractionMapping]:
    """(file, delimiter or "" to sniff, fixed header or None, encoding, mapping) of a log in format ``fmt``."""
    if fmt == "movielens":
        file, delimiter, header, encoding = _movielens_ratings(path)
        report.source = str(file)
        return file, delimiter, header, encoding, MOVIELENS_LOG
    if fmt == "csv":
        mapping = mapping or InteractionMapping()
        return path, mapping.delimiter or "", None, mapping.encoding, mapping
    raise CatalogError(f"unknown interactions format {format!r}", hint="use auto, movielens or csv")


def _columns(names: list[str], mapping: InteractionMapping, file: Path, delimiter: str) -> dict[str, int]:
    """Positions of the user, item and (when present) rating and time columns in the header ``names``."""
    rating_col = mapping.rating or ("rating" if "rating" in names else None)
    time_col = mapping.timestamp or ("timestamp" if "timestamp" in names else None)
    wanted = [c for c in (mapping.user, mapping.item, rating_col, time_col) if c]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise missing_columns_error(file, missing, names, delimiter, fix=LOG_MAPPING_FIX)
    cols = {"user": names.index(mapping.user), "item": names.index(mapping.item)}
    if rating_col:
        cols["rating"] = names.index(rating_col)
    if time_col:
        cols["time"] = names.index(time_col)
    return cols


def _parse_row(
    row: list[str],
    cols: dict[str, int],
    width: int,
    where: str,
    items: Collection[str] | None,
    report: IngestReport,
) -> tuple[str, str, float | None, int | None] | None:
    """(user, item, rating, timestamp) of one data row, or None with the reason counted in ``report``."""
    if len(row) != width:
        report.reject("wrong_column_count", f"{where}: {len(row)} fields, expected {width}")
        return None
    user, item = row[cols["user"]].strip(), row[cols["item"]].strip()
    if not user or not item:
        report.reject("missing_user_or_item", f"{where}: user={user!r} item={item!r}")
        return None
    if items is not None and item not in items:
        report.reject("unknown_item", f"{where}: item {item!r} is not in the catalog")
        return None
    rating: float | None = None
    if "rating" in cols and row[cols["rating"]].strip():
        try:
            rating = float(row[cols["rating"]])
            if not math.isfinite(rating):
                raise ValueError
        except ValueError:
            report.reject("invalid_rating", f"{where}: {row[cols['rating']][:30]!r}")
            return None
    stamp: int | None = None
    if "time" in cols and row[cols["time"]].strip():
        try:
            stamp = _parse_time(row[cols["time"]])
        except (ValueError, OverflowError):
            report.reject("invalid_timestamp", f"{where}: {row[cols['time']][:30]!r}")
            return None
    return user, item, rating, stamp


def _check_read(file: Path, report: IngestReport, strict: bool, *, has_header: bool, accepted: int) -> None:
    """A log with no header, a ``strict`` read with problems, or no usable row is refused with the reasons."""
    if not has_header:
        raise CatalogError(f"{file} has no rows", hint="give a file with a header and interaction rows")
    if strict and report.problems():
        raise CatalogError(
            f"{file}: --strict refuses {report.rejected} rejected row(s): " + " | ".join(report.problems()),
            hint="fix the file, or drop --strict to keep the clean rows",
        )
    if not accepted:
        raise CatalogError(
            f"{file}: no usable interaction among {report.rows_read} row(s): "
            + ("; ".join(report.problems()) or "no data rows"),
            hint="check the file and its user/item column mapping",
        )


def _split(text: str, delimiter: str, fixed: bool) -> Any:
    """Records of ``text``: plain splitting for MovieLens' fixed formats (``::`` is not a CSV delimiter)."""
    if fixed:
        return ((n, line.split(delimiter)) for n, line in enumerate(text.splitlines(), start=1))

    def rows() -> Any:
        with large_csv_fields():
            yield from csv_rows(text, delimiter)

    return rows()
