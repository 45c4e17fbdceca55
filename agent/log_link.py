"""An interaction log keyed by its own ids, linked BY TITLE to a catalog whose ids it does not share.

A deployment may hold a ratings/interaction log (its own item ids, a title and optionally a year per item) and a
catalog from elsewhere. :func:`link_titles` maps each log item to one catalog item, in this order:

1. **exact**: same normal title (lower case, punctuation dropped, a trailing article moved to the front:
   "American President, The (1995)" = "The American President (1995)") and the same year;
2. **title**: same normal title without the year, when it names one catalog item whose year (if both have one) is
   within ``year_slack`` of the log's;
3. **fuzzy**: the closest catalog title form by :class:`agent.chat.title_link.TitleLinker` (rapidfuzz ratio >=
   ``cutoff``) with the same numbers ("Ice Age 2" is not "Ice Age") and, when the log has a year, the same year
   (a one-letter difference plus a year apart is another film: "Bride & Prejudice" 2004, "Pride & Prejudice" 2005).

A title that names several catalog items at its best step (remakes, near ties) is **ambiguous** and not linked;
one that reaches none is **unlinked**. :func:`relabel` rewrites the log's rows to catalog ids (rows of
ambiguous/unlinked items dropped and counted), so the log-learned item-to-item sources (``ease``, ``transition``)
fit on it serve the catalog's ids: a conversation's mentioned movies are their seeds.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from agent.chat.catalog import _ARTICLE_TAIL, _YEAR_TAIL, norm_tokens
from agent.chat.title_link import TitleLinker
from agent.errors import InputError
from retrieval.interactions import Interactions

__all__ = ["LinkReport", "TitleLinkConfig", "link_titles", "linked_log", "read_titles", "relabel", "split_title"]

Status = Literal["exact", "title", "fuzzy", "ambiguous", "unlinked"]
STATUSES: tuple[Status, ...] = ("exact", "title", "fuzzy", "ambiguous", "unlinked")
_YEAR = re.compile(r"\(\s*(\d{4})")


def _numbers(text: str) -> list[str]:
    """The numbers of a title ("Ice Age 2" is not "Ice Age")."""
    return re.findall(r"\d+", text)


@dataclass(frozen=True)
class TitleLinkConfig:
    """How loosely log titles link to catalog titles."""

    cutoff: float = 90.0
    """Least rapidfuzz ratio (0-100) of a fuzzy link."""
    year_slack: int = 1
    """Years a linked pair may differ by (release vs. catalog year); more is a different film (a remake)."""
    fuzzy: bool = True
    """Whether step 3 runs (off: exact and year-less title links only)."""


def split_title(title: str, year: int | None = None) -> tuple[tuple[str, ...], int | None]:
    """(normal title tokens, year): the year from ``year`` or the title's "(YYYY)" tail; article moved first."""
    tail = _YEAR_TAIL.search(title)
    if year is None and tail:
        found = _YEAR.search(tail.group(0))
        year = int(found.group(1)) if found else None
    bare = _YEAR_TAIL.sub("", title).strip()
    m = _ARTICLE_TAIL.match(bare)
    if m:
        bare = f"{m['article']} {m['body']}"
    return norm_tokens(bare), year


@dataclass
class LinkReport:
    """Log item id -> catalog id (linked items only), each log item's status, and rows per status."""

    links: dict[str, str]
    status: dict[str, Status]
    rows: Counter[str] = field(default_factory=Counter)

    def items(self) -> Counter[str]:
        return Counter(self.status.values())

    def summary(self) -> str:
        """One line per status: items and (when counted) rows; linked = exact + title + fuzzy."""
        items = self.items()
        total_items, total_rows = len(self.status), sum(self.rows.values())
        linked = sum(items[s] for s in ("exact", "title", "fuzzy"))
        linked_rows = sum(self.rows[s] for s in ("exact", "title", "fuzzy"))
        lines = [f"log items: {total_items}, rows: {total_rows}",
                 f"linked: {linked} items, {linked_rows} rows (exact title+year {items['exact']}, "
                 f"title without year {items['title']}, fuzzy {items['fuzzy']})"]  # fmt: skip
        for status in ("ambiguous", "unlinked"):
            lines.append(f"{status} (not used): {items[status]} items, {self.rows[status]} rows")
        return "\n".join(lines)


class _CatalogTitles:
    def __init__(self, titles: Mapping[str, str], config: TitleLinkConfig) -> None:
        self.config = config
        self.year: dict[str, int | None] = {}
        self.titles = {i: _YEAR_TAIL.sub("", t) for i, t in titles.items()}
        self.by_title: dict[tuple[str, ...], list[str]] = {}
        for item_id, title in titles.items():
            tokens, year = split_title(title)
            self.year[item_id] = year
            if tokens:
                self.by_title.setdefault(tokens, []).append(item_id)
        self.linker = TitleLinker(titles, cutoff=config.cutoff) if config.fuzzy else None

    def _near(self, ids: list[str] | tuple[str, ...], year: int | None) -> list[str]:
        if year is None:
            return list(ids)
        slack = self.config.year_slack
        return [i for i in ids if (y := self.year[i]) is None or abs(y - year) <= slack]

    def link(self, title: str, year: int | None) -> tuple[Status, list[str]]:
        tokens, year = split_title(title, year)
        if not tokens:
            return "unlinked", []
        same = self.by_title.get(tokens, [])
        if year is not None:
            exact = [i for i in same if self.year[i] == year]
            if exact:
                return ("exact" if len(exact) == 1 else "ambiguous"), exact
        near = self._near(same, year)
        if near:
            return ("title" if len(near) == 1 else "ambiguous"), near
        if self.linker is None or len(tokens) < 2:
            return "unlinked", []
        ids, _ = self.linker.lookup(" ".join(tokens))
        fuzzy = [i for i in ids if _numbers(self.titles[i]) == _numbers(" ".join(tokens))]
        if year is not None:  # a typo-level match must also agree on the year: "Bride & Prejudice" (2004) is no
            fuzzy = [i for i in fuzzy if self.year[i] == year]  # "Pride & Prejudice" (2005)
        if not fuzzy:
            return "unlinked", []
        return ("fuzzy" if len(fuzzy) == 1 else "ambiguous"), fuzzy


def link_titles(log_titles: Mapping[str, str], catalog_titles: Mapping[str, str],
                config: TitleLinkConfig | None = None, *, log_years: Mapping[str, int] | None = None,
                ) -> LinkReport:  # fmt: skip
    """Link every log item (id -> title, optionally id -> year) to a catalog item (id -> title); see the module
    doc. An InputError when either side is empty."""
    if not log_titles or not catalog_titles:
        side = "log" if not log_titles else "catalog"
        raise InputError(f"cannot link titles: the {side} has no titles",
                         hint="give a log with a title column and a catalog with item titles")  # fmt: skip
    catalog = _CatalogTitles(catalog_titles, config or TitleLinkConfig())
    years = log_years or {}
    links: dict[str, str] = {}
    status: dict[str, Status] = {}
    for item_id, title in log_titles.items():
        state, ids = catalog.link(title, years.get(item_id))
        status[item_id] = state
        if state in ("exact", "title", "fuzzy"):
            links[item_id] = ids[0]
    return LinkReport(links, status)


def relabel(interactions: Interactions, report: LinkReport) -> Interactions:
    """The log's rows with catalog ids (rows of ambiguous/unlinked items dropped); ``report.rows`` counts every
    row by its item's status (items without a title count as unlinked)."""
    log_ids = np.array(interactions.item_ids, dtype=object)
    states = np.array([report.status.get(i, "unlinked") for i in interactions.item_ids], dtype=object)
    row_states = states[interactions.items]
    report.rows = Counter({s: int((row_states == s).sum()) for s in STATUSES})
    keep = np.array([i in report.links for i in interactions.item_ids], dtype=bool)[interactions.items]
    rows = np.nonzero(keep)[0]
    if not len(rows):
        raise InputError("no row of the interaction log links to a catalog title:\n" + report.summary(),
                         hint="check that the log's title column holds the same films as the catalog")  # fmt: skip
    users = [interactions.user_ids[u] for u in interactions.users[rows]]
    items = [report.links[str(i)] for i in log_ids[interactions.items[rows]]]
    ratings = [None if np.isnan(r) else float(r) for r in interactions.ratings[rows]]
    return Interactions.from_records(users, items, ratings, interactions.timestamps[rows].tolist())


def read_titles(path: Path, *, id_col: str, title_col: str, year_col: str | None = None,
                ) -> tuple[dict[str, str], dict[str, int]]:  # fmt: skip
    """(id -> title, id -> year) from a CSV of the log's items (e.g. MovieLens movies.csv: movieId, title); an
    InputError naming the missing columns; rows without an id or a title are skipped."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [c for c in (id_col, title_col, year_col) if c and c not in (reader.fieldnames or [])]
            if columns:
                raise InputError(f"{path}: no column {', '.join(columns)} (columns: {reader.fieldnames})",
                                 hint="name the log's item id, title (and year) columns")  # fmt: skip
            titles: dict[str, str] = {}
            years: dict[str, int] = {}
            for row in reader:
                item_id, title = (row.get(id_col) or "").strip(), (row.get(title_col) or "").strip()
                if item_id and title:
                    titles[item_id] = title
                    year = (row.get(year_col) or "").strip() if year_col else ""
                    if year.isdigit():
                        years[item_id] = int(year)
    except OSError as exc:
        raise InputError(f"cannot read the log's titles {path}: {exc}", hint="check the path") from exc
    return titles, years


def linked_log(ratings: Path, titles: Path, catalog_titles: Mapping[str, str], *, id_col: str = "movieId",
               title_col: str = "title", year_col: str | None = None,
               config: TitleLinkConfig | None = None) -> tuple[Interactions, LinkReport]:  # fmt: skip
    """The interaction log at ``ratings`` (any format :func:`retrieval.interactions.read_interactions` reads) with
    its items linked by the titles in ``titles`` (a CSV: ``id_col``, ``title_col``, optional ``year_col``) to the
    catalog (id -> title), rewritten to catalog ids; the report counts linked / ambiguous / unlinked items and rows."""
    from retrieval.interactions import read_interactions

    log_titles, years = read_titles(titles, id_col=id_col, title_col=title_col, year_col=year_col)
    report = link_titles(log_titles, catalog_titles, config, log_years=years)
    return relabel(read_interactions(ratings), report), report
