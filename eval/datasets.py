"""Evaluation datasets: interaction logs (catalog + ratings) and conversation turns (ReDial style).

Both load into :class:`EvalDataset`: the catalog (cleaned items, the file and how to ingest it) plus either an
:class:`~retrieval.interactions.Interactions` log or a list of :class:`EvalCase` built from conversation turns.
Gold items named by title in conversations are matched to catalog ids (exact id, exact title, then normalised
title + year); unmatched golds are counted in :class:`MatchReport`, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.errors import InputError
from eval.dialogues import CutReport, is_dialogue_file, iter_dialogue_turns
from retrieval.catalog import read_catalog
from retrieval.config import StoreConfig
from retrieval.dialogue_log import CONTEXT_TURNS, context_query
from retrieval.interactions import InteractionMapping, Interactions, read_interactions
from retrieval.mapping import ColumnMapping
from retrieval.types import HistoryEntry, Item

__all__ = [
    "REDIAL_MAPPING",
    "EvalCase",
    "EvalDataset",
    "MatchReport",
    "TitleIndex",
    "collection_items",
    "file_sha256",
    "load_dataset",
    "load_interaction_dataset",
    "load_turns",
    "normalise_title",
    "turn_catalog_format",
]

REDIAL_MAPPING = ColumnMapping(
    id="movieId",
    title="name",
    text=["plot"],
    metadata={"genre": "list", "director": "list", "writer": "list", "star": "list", "imdb_id": "str"},
    year_from_title=True,
)
"""How ReDial's ``movies.json`` (``{movieId: {name, genre[], plot, director[], ...}}``) maps to catalog items."""


class EvalCase(BaseModel):
    """One thing to recommend for, and the gold items that count as hits (``{item_id: relevance}``)."""

    model_config = ConfigDict(extra="forbid")

    case_id: str
    user_id: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    query: str | None = None
    liked: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    gold: dict[str, int]
    meta: dict[str, Any] = Field(default_factory=dict)


class MatchReport(BaseModel):
    """How conversation gold names were matched to catalog ids."""

    model_config = ConfigDict(extra="forbid")

    turns: int = 0
    gold_total: int = 0
    matched_exact: int = 0
    matched_normalised: int = 0
    unmatched: int = 0
    unmatched_examples: list[str] = Field(default_factory=list)
    turns_without_gold: int = Field(0, description="Turns whose gold names all failed to match (not scored).")
    context_mentions: int = 0
    context_matched: int = 0
    dialogues: int | None = Field(None, description="Raw dialogues read (when turns were cut from dialogues).")
    dialogues_skipped: int = Field(0, description="Malformed raw dialogues (no messages or speaker ids).")

    @property
    def matched(self) -> int:
        return self.matched_exact + self.matched_normalised


@dataclass
class EvalDataset:
    """A catalog plus either interactions (split later by a protocol) or ready-made conversation cases."""

    name: str
    kind: str  # "interactions" | "conversations"
    catalog_path: Path
    catalog_format: str
    mapping: ColumnMapping | None
    items: dict[str, Item]
    interactions: Interactions | None = None
    cases: list[EvalCase] = field(default_factory=list)
    match: MatchReport | None = None
    files: list[Path] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def diversity_field(self) -> str | None:
        """The list-valued metadata field used for attribute diversity (genres first)."""
        for name in ("genres", "genre"):
            if any(name in item.metadata for item in self.items.values()):
                return name
        return None

    def attributes(self) -> dict[str, list[str]]:
        name = self.diversity_field()
        if name is None:
            return {}
        out: dict[str, list[str]] = {}
        for item in self.items.values():
            value = item.metadata.get(name)
            out[item.id] = value if isinstance(value, list) else ([str(value)] if value is not None else [])
        return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ interactions
def load_interaction_dataset(
    catalog: Path,
    interactions: Path,
    *,
    catalog_format: str = "auto",
    mapping: ColumnMapping | None = None,
    name: str | None = None,
    log_mapping: InteractionMapping | None = None,
    items: dict[str, Item] | None = None,
) -> EvalDataset:
    """A catalog and an interaction log; interactions whose item is not in the catalog are rejected and counted,
    and an InputError is raised when none (or under half) of them match. ``log_mapping`` names the log's columns
    (default: MovieLens files by name, else columns user/item/rating/timestamp); ``items`` given (an ingested
    collection's items) replaces reading ``catalog``, which is then only a label."""
    if items is None:
        items = {item.id: item for item in read_catalog(catalog, format=catalog_format, mapping=mapping).items}
    log = read_interactions(interactions, items=set(items), mapping=log_mapping)
    report = log.report
    rejected = report.rejections.get("unknown_item") if report else None
    unknown = rejected.count if rejected else 0
    total = len(log) + unknown
    if total and unknown > total / 2:
        examples = "; ".join(rejected.examples) if rejected else ""
        raise InputError(
            f"{unknown} of {total} interactions in {interactions} name items that are not in the catalog {catalog} "
            f"(e.g. {examples})",
            hint="give the catalog the interaction log was recorded on (item ids must match the catalog's id column; "
            "map the columns with --mapping / --interactions-mapping)",
        )
    folder = catalog if catalog.is_dir() else catalog.parent
    files = [f for f in _data_files(catalog) + _data_files(interactions) if f.is_file()]
    if catalog_format == "collection":
        files = [f for f in _data_files(interactions) if f.is_file()]
    return EvalDataset(
        name=name or folder.name,
        kind="interactions",
        catalog_path=catalog,
        catalog_format=catalog_format,
        mapping=mapping,
        items=items,
        interactions=log,
        files=list(dict.fromkeys(files)),
        notes={"interactions": len(log), "unknown_item_interactions": unknown, "catalog_items": len(items)},
    )


def _data_files(path: Path) -> list[Path]:
    if not path.exists():
        return []
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in (".csv", ".dat", ".data", ".item", ".json", ".jsonl"))


# ------------------------------------------------------------------------------------------------ titles
_ARTICLE_SUFFIX = re.compile(r"^(.*),\s*(the|a|an|les|la|le|el|il|der|die|das)$", re.IGNORECASE)
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_NON_WORD = re.compile(r"[^\w]+")


def normalise_title(title: str) -> tuple[str, str | None]:
    """(normalised name, year or None): accents and punctuation removed, lower case, a trailing article moved to
    the front ("Matrix, The (1999)" and "The Matrix (1999)" both give ("the matrix", "1999"))."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    year = None
    match = _YEAR.search(text)
    if match:
        year, text = match.group(1), text[: match.start()]
    text = text.strip()
    art = _ARTICLE_SUFFIX.match(text)
    if art:
        text = f"{art.group(2)} {art.group(1)}"
    text = re.sub(r"\s*\([^)]*\)\s*$", "", text)  # MovieLens alternative titles "(a.k.a. ...)"
    return " ".join(_NON_WORD.sub(" ", text.lower()).split()), year


class TitleIndex:
    """Looks names up in a catalog: id, exact title, then normalised title with the year (or a unique title
    without year when the name has none)."""

    def __init__(self, items: Iterable[Item]) -> None:
        self.ids: set[str] = set()
        self.exact: dict[str, str] = {}
        self.normalised: dict[tuple[str, str | None], list[str]] = {}
        for item in items:
            self.ids.add(item.id)
            self.exact.setdefault(item.title, item.id)
            name, year = normalise_title(item.title)
            year = year or (str(item.metadata["year"]) if "year" in item.metadata else None)
            self.normalised.setdefault((name, year), []).append(item.id)
            self.normalised.setdefault((name, None), []).append(item.id)

    def match(self, name: str) -> tuple[str | None, str]:
        """(item id or None, how: 'exact' | 'normalised' | 'unmatched')."""
        name = name.strip()
        if name in self.ids:
            return name, "exact"
        if name in self.exact:
            return self.exact[name], "exact"
        key = normalise_title(name)
        hits = self.normalised.get(key, [])
        if len(hits) >= 1 and (key[1] is not None or len(hits) == 1):
            return hits[0], "normalised"
        return None, "unmatched"


# ------------------------------------------------------------------------------------------------ conversations
def turn_catalog_format(
    catalog: Path, catalog_format: str = "auto", mapping: ColumnMapping | None = None
) -> tuple[str, ColumnMapping | None]:
    """How a dialogue dataset's catalog is read (format, mapping): ReDial's ``movies.json`` through
    :data:`REDIAL_MAPPING` unless a mapping is given, any other file as given."""
    if mapping is None and catalog.suffix == ".json" and catalog.name == "movies.json":
        return "json", REDIAL_MAPPING
    return catalog_format, mapping


def load_turns(
    turns: Path,
    catalog: Path,
    *,
    catalog_format: str = "auto",
    mapping: ColumnMapping | None = None,
    limit: int | None = None,
    context_turns: int = CONTEXT_TURNS,
    name: str | None = None,
) -> EvalDataset:
    """Turn-level conversation cases from JSONL ``{dialog_id, turn_id, context: [...], rec: [gold names],
    entity: [...]}``, or from raw ReDial dialogues (``{messages, movieMentions, ...}``, cut into such turns by
    :mod:`eval.dialogues`): the query is the last ``context_turns`` utterances, movies mentioned in ``entity`` (or
    ``context``) that match the catalog become ``liked`` seeds (and are never recommended), gold = ``rec``."""
    catalog_format, mapping = turn_catalog_format(catalog, catalog_format, mapping)
    read = read_catalog(catalog, format=catalog_format, mapping=mapping)
    items = {item.id: item for item in read.items}
    index = TitleIndex(read.items)
    report = MatchReport()
    cases: list[EvalCase] = []
    cut = CutReport() if turns.is_file() and is_dialogue_file(turns) else None
    rows = iter_dialogue_turns(turns, cut) if cut is not None else _jsonl(turns)
    for number, row in rows:
        if limit is not None and report.turns >= limit:
            break
        report.turns += 1
        rec = row.get("rec")
        context = row.get("context")
        if not isinstance(rec, list) or not isinstance(context, list):
            raise InputError(
                f"{turns} line {number}: a turn needs lists 'context' and 'rec'",
                hint="each line: {dialog_id, turn_id, context: [utterances], rec: [gold movie names]}",
            )
        gold = _match_gold(rec, index, report)
        liked = _match_mentions(row.get("entity") or [], index, gold, report)
        if not gold:
            report.turns_without_gold += 1
            continue
        case_id = f"{row.get('dialog_id', number)}_{row.get('turn_id', 0)}"
        cases.append(
            EvalCase(
                case_id=case_id,
                query=context_query(context, context_turns),
                liked=list(dict.fromkeys(liked)),
                gold=gold,
                meta={"dialog_id": str(row.get("dialog_id", "")), "turn_id": row.get("turn_id")},
            )
        )
    if cut is not None:
        report.dialogues, report.dialogues_skipped = cut.dialogues, cut.skipped
    if not cases:
        raise InputError(
            f"no usable turn in {turns}: {report.turns} turns read, {report.gold_total} gold names, "
            f"{report.unmatched} unmatched (e.g. {', '.join(report.unmatched_examples[:3])})",
            hint="check that the catalog is the one the turns refer to (gold names as 'Name (Year)')",
        )
    return EvalDataset(
        name=name or turns.parent.name,
        kind="conversations",
        catalog_path=catalog,
        catalog_format=catalog_format,
        mapping=mapping,
        items=items,
        cases=cases,
        match=report,
        files=[turns, catalog],
        notes={"catalog_items": len(items)},
    )


def _match_gold(rec: list[Any], index: TitleIndex, report: MatchReport) -> dict[str, int]:
    """The catalog ids of a turn's gold names (relevance 1); unmatched names are counted, the first ten kept."""
    gold: dict[str, int] = {}
    for gold_name in rec:
        report.gold_total += 1
        item_id, how = index.match(str(gold_name))
        if item_id is None:
            report.unmatched += 1
            if len(report.unmatched_examples) < 10:
                report.unmatched_examples.append(str(gold_name))
            continue
        report.matched_exact += how == "exact"
        report.matched_normalised += how == "normalised"
        gold[item_id] = 1
    return gold


def _match_mentions(entities: list[Any], index: TitleIndex, gold: dict[str, int], report: MatchReport) -> list[str]:
    """The catalog ids of the movies a turn's context mentions ('Name (Year)'), gold items left out."""
    liked: list[str] = []
    for mention in [str(e) for e in entities if _YEAR.search(str(e))]:
        report.context_mentions += 1
        item_id, _ = index.match(mention)
        if item_id is not None and item_id not in gold:
            report.context_matched += 1
            liked.append(item_id)
    return liked


def _jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise InputError(f"turn file {path} does not exist", hint="give a turns.jsonl file")
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path} line {number} is not JSON: {exc.msg}", hint="one JSON object per line"
                ) from exc
            if not isinstance(row, dict):
                raise InputError(f"{path} line {number} is not a JSON object", hint="one JSON object per line")
            yield number, row


# ------------------------------------------------------------------------------------------------ dispatch
MOVIELENS_CATALOGS = ("movies.csv", "u.item", "movies.dat")


def load_dataset(
    path: Path,
    *,
    limit: int | None = None,
    catalog: Path | None = None,
    mapping: ColumnMapping | None = None,
    interactions: Path | None = None,
    log_mapping: InteractionMapping | None = None,
    collection: tuple[str, Callable[[], dict[str, Item]]] | None = None,
) -> EvalDataset:
    """A dataset from a path: a MovieLens folder (movies + ratings), a folder with ``turns.jsonl`` and
    ``movies.json`` (ReDial), or a ``turns.jsonl`` file (its catalog next to it, or ``catalog``).

    Any catalog and log: ``catalog`` (read with ``mapping``) and ``interactions`` (read with ``log_mapping``; by
    default the folder's ratings.csv / u.data / ratings.dat). ``collection`` = (name, loader of its items): with no
    ``catalog`` given and no MovieLens catalog in the folder, the items of that ingested collection are used and no
    catalog file is read."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"dataset {path} does not exist", hint="give a MovieLens folder or a turns.jsonl file")
    if path.is_dir() and interactions is None:
        if (path / "turns.jsonl").is_file():
            return load_turns(path / "turns.jsonl", catalog or path / "movies.json", limit=limit, mapping=mapping)
        if (path / "dialogues.jsonl").is_file():
            return load_turns(path / "dialogues.jsonl", catalog or path / "movies.json", limit=limit, mapping=mapping)
        interactions = next((path / n for n in ("ratings.csv", "u.data", "ratings.dat") if (path / n).is_file()), None)
        if interactions is None:
            raise InputError(
                f"{path} is not a dataset folder (no ratings.csv/u.data/ratings.dat and no turns.jsonl)",
                hint="give a MovieLens folder, a ReDial folder with turns.jsonl (or dialogues.jsonl) and movies.json, "
                "or the log with --interactions FILE",
            )
    if interactions is not None:
        if not Path(interactions).is_file():
            raise InputError(f"interaction log {interactions} does not exist", hint="give the ratings file itself")
        folder = path if path.is_dir() else path.parent
        source = catalog or (path if path.is_file() else folder)
        has_catalog = catalog is not None or path.is_file() or any((folder / n).is_file() for n in MOVIELENS_CATALOGS)
        if not has_catalog and collection is not None:
            name, load_items = collection
            return load_interaction_dataset(Path(name), Path(interactions), catalog_format="collection",
                                            name=folder.name, log_mapping=log_mapping, items=load_items())  # fmt: skip
        if not has_catalog:
            raise InputError(
                f"no catalog for the log {interactions}: {folder} holds no MovieLens catalog file",
                hint="give --catalog FILE (with --mapping for its columns), or --collection NAME of an ingested one",
            )
        return load_interaction_dataset(source, Path(interactions), mapping=mapping, log_mapping=log_mapping)
    if path.suffix == ".jsonl":
        return load_turns(path, catalog or path.parent / "movies.json", limit=limit, mapping=mapping)
    raise InputError(
        f"cannot tell what dataset {path} is", hint="give a folder, a turns .jsonl file, or the log with --interactions"
    )


def collection_items(store_config: StoreConfig, name: str) -> dict[str, Item]:
    """The items of an ingested collection (ids, titles, metadata), read from the store instead of a catalog file."""
    from retrieval.store import Store

    coll = Store(store_config).collection(name)
    ids = coll.ids()
    return {i: item for at in range(0, len(ids), 2000) for i, item in coll.get_items(ids[at : at + 2000]).items()}


def gold_ids(cases: Sequence[EvalCase]) -> set[str]:
    return {i for c in cases for i in c.gold}
