"""MovieLens catalogs: latest(-small) ``movies.csv`` with its ``tags.csv``, ml-100k ``u.item``, ml-1m
``movies.dat``; read through :func:`retrieval.catalog.read_catalog` (``--format movielens`` or detected)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from retrieval.catalog import Catalog, _Cleaner, _finish, read_csv
from retrieval.config import CleanConfig
from retrieval.errors import CatalogError
from retrieval.mapping import ColumnMapping
from retrieval.textio import csv_rows, decode, large_csv_fields, read_bytes
from retrieval.types import IngestReport

__all__ = ["MOVIELENS_MAPPING", "movielens_variant", "read_movielens"]

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip

MOVIELENS_MAPPING = ColumnMapping(
    id="movieId", title="title", metadata={"genres": "list"}, list_sep="|", year_from_title=True
)


def read_movielens(
    path: str | Path,
    *,
    variant: str = "auto",
    strict: bool = False,
    limit: int | None = None,
    clean: CleanConfig | None = None,
) -> Catalog:
    """Read a MovieLens folder (or its movies file): latest(-small) CSV with tags, ml-100k ``u.item``, ml-1m."""
    path, clean, started = Path(path), clean or CleanConfig(), time.perf_counter()
    if variant in ("auto", "movielens"):
        variant = movielens_variant(path)
    folder = path if path.is_dir() else path.parent
    if variant == "movielens-latest":
        movies = path if path.is_file() else folder / "movies.csv"
        catalog = read_csv(movies, MOVIELENS_MAPPING, strict=False, limit=limit, clean=clean, fmt=variant)
        _merge_tags(catalog, folder / "tags.csv", clean)
    elif variant == "movielens-100k":
        catalog = _read_ml_fixed(path if path.is_file() else folder / "u.item", "|", variant, limit, clean)
    elif variant == "movielens-1m":
        catalog = _read_ml_fixed(path if path.is_file() else folder / "movies.dat", "::", variant, limit, clean)
    else:
        raise CatalogError(f"unknown MovieLens variant {variant!r}", hint="use auto, latest, 100k or 1m")
    for item in catalog.items:
        genres = item.metadata.get("genres")
        if isinstance(genres, list) and "(no genres listed)" in genres:
            rest = [g for g in genres if g != "(no genres listed)"]
            if rest:
                item.metadata["genres"] = rest
            else:
                del item.metadata["genres"]
    cleaner = _Cleaner(MOVIELENS_MAPPING, clean, catalog.report)
    cleaner.items = {item.id: item for item in catalog.items}
    return _finish(cleaner, strict, path, started)


def movielens_variant(path: Path) -> str:
    names = {p.name for p in path.iterdir()} if path.is_dir() else {path.name}
    if "movies.csv" in names:
        return "movielens-latest"
    if "u.item" in names:
        return "movielens-100k"
    if "movies.dat" in names:
        return "movielens-1m"
    raise CatalogError(
        f"{path} is not a MovieLens folder (no movies.csv, u.item or movies.dat)",
        hint="give the unzipped MovieLens folder, or use --format csv/jsonl with a column mapping",
    )


def _read_ml_fixed(path: Path, sep: str, variant: str, limit: int | None, clean: CleanConfig) -> Catalog:
    """ml-100k ``u.item`` (pipe, genre flags) and ml-1m ``movies.dat`` (``::``), both latin-1 without header."""
    started = time.perf_counter()
    report = IngestReport(source=str(path), format=variant)
    text = decode(read_bytes(path), path, "latin-1", report)
    genre_names = ML100K_GENRES
    genre_file = path.parent / "u.genre"
    if variant == "movielens-100k" and genre_file.is_file():
        pairs = [ln.rsplit("|", 1) for ln in genre_file.read_text(encoding="latin-1").splitlines() if "|" in ln]
        names = {int(i): n for n, i in pairs if i.strip().isdigit()}
        if names and sorted(names) == list(range(len(names))):
            genre_names = [names[i] for i in range(len(names))]
    cleaner = _Cleaner(MOVIELENS_MAPPING, clean, report)
    fields = ["movieId", "title", "genres"]
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if limit is not None and report.rows_read >= limit:
            report.note("limit_reached", f"stopped after {limit} rows (--limit)")
            break
        parts = line.split(sep)
        if variant == "movielens-100k":
            flags = parts[5:]
            if len(parts) < 6 or len(flags) != len(genre_names) or any(f not in ("0", "1") for f in flags):
                report.rows_read += 1
                report.reject("wrong_column_count", f"line {number}: {len(parts)} fields, expected "
                              f"{5 + len(genre_names)} with 0/1 genre flags")  # fmt: skip
                continue
            genres = "|".join(g for g, f in zip(genre_names, flags, strict=True) if f == "1")
            record = {"movieId": parts[0], "title": parts[1], "genres": genres}
        else:
            if len(parts) != 3:
                report.rows_read += 1
                report.reject("wrong_column_count", f"line {number}: {len(parts)} fields, expected 3")
                continue
            record = dict(zip(fields, parts, strict=True))
        cleaner.add(record, f"line {number}", [], {"genres": "list"})
    report.seconds = round(time.perf_counter() - started, 3)
    return Catalog(items=list(cleaner.items.values()), report=report)


def _merge_tags(catalog: Catalog, tags_file: Path, clean: CleanConfig) -> None:
    """Add the ``max_tags`` most frequent tags of each movie (case-insensitive) as metadata ``tags``."""
    if not tags_file.is_file() or clean.max_tags == 0:
        return
    report = catalog.report
    scratch = IngestReport(source=str(tags_file), format="tags")
    text = decode(read_bytes(tags_file), tags_file, "auto", scratch)
    counts: dict[str, Counter[str]] = {}
    display: dict[str, str] = {}
    rows = skipped = 0
    header: list[str] | None = None
    with large_csv_fields():
        for line, row in csv_rows(text, ","):
            if header is None:
                header = [h.strip() for h in row]
                if "movieId" not in header or "tag" not in header:
                    report.note("tags_ignored", f"{tags_file.name}: no movieId/tag columns")
                    return
                i_movie, i_tag = header.index("movieId"), header.index("tag")
                continue
            rows += 1
            if len(row) != len(header) or not row[i_tag].strip():
                skipped += 1
                if skipped <= 3:
                    report.note("tag_rows_skipped", f"{tags_file.name} line {line}: malformed or empty tag")
                continue
            tag = " ".join(row[i_tag].split())
            key = tag.lower()
            display.setdefault(key, tag)
            counts.setdefault(row[i_movie].strip(), Counter())[key] += 1
    by_id = {item.id: item for item in catalog.items}
    unknown = [m for m in counts if m not in by_id]
    if unknown:
        report.note("tags_for_unknown_movies", f"{len(unknown)} movie id(s) in tags.csv not in the catalog")
    for movie_id, counter in counts.items():
        item = by_id.get(movie_id)
        if item is not None:
            top = [display[k] for k, _ in counter.most_common(clean.max_tags)]
            item.metadata["tags"] = top
    report.note("tags_merged", f"{rows} tag rows for {len(counts) - len(unknown)} movies ({scratch.encoding})")
