"""A small generic catalog (books, not movies: the chat must not be tuned to one domain) and its Chroma home."""

from __future__ import annotations

import json
from pathlib import Path

from agent.settings import Settings, load_settings
from retrieval.ingest import ingest
from retrieval.mapping import ColumnMapping
from retrieval.types import Item

BOOKS_COLLECTION = "chat-books"
SUBJECTS = ["mystery", "romance", "horror", "science fiction", "history", "cooking", "travel", "poetry"]
ADJECTIVES = ["Silent", "Crimson", "Hidden", "Golden", "Broken", "Distant", "Quiet", "Burning", "Frozen", "Wandering"]
NOUNS = ["Harbor", "Orchard", "Lantern", "Kingdom", "Garden", "Voyage"]
MAPPING = ColumnMapping(
    id="id",
    title="title",
    text=["description"],
    metadata={"subjects": "list", "published": "int", "pages": "int", "author": "str"},
)


def book_rows(n: int = 48) -> list[dict[str, object]]:
    rows = []
    for i in range(n):
        subjects = [SUBJECTS[i % len(SUBJECTS)], SUBJECTS[(i * 3 + 1) % len(SUBJECTS)]]
        subjects = list(dict.fromkeys(subjects))
        title = f"The {ADJECTIVES[i % len(ADJECTIVES)]} {NOUNS[i // len(ADJECTIVES) % len(NOUNS)]}"
        if i >= len(ADJECTIVES) * len(NOUNS):
            title += " Returns"
        rows.append(
            {
                "id": f"bk{i:02d}",
                "title": title,
                "description": f"A {subjects[0]} book about {subjects[-1]}, near a {NOUNS[i % len(NOUNS)].lower()}.",
                "subjects": subjects,
                "published": 1950 + (i * 7) % 71,
                "pages": 120 + (i * 37) % 700,
                "author": f"Writer {i % 5}",
            }
        )
    return rows


def book_items(n: int = 48) -> list[Item]:
    return [
        Item(
            id=str(r["id"]),
            title=str(r["title"]),
            texts={"description": str(r["description"])},
            metadata={k: r[k] for k in ("subjects", "published", "pages", "author")},  # type: ignore[misc]
        )
        for r in book_rows(n)
    ]


def build_books_home(home: Path) -> Settings:
    """Ingest the books into an embedded Chroma store under ``home`` (real embedder)."""
    path = home / "books.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in book_rows()) + "\n", encoding="utf-8")
    settings = load_settings(home=home, collection=BOOKS_COLLECTION)
    report = ingest(
        path,
        store_config=settings.store_config(),
        embed_config=settings.embed_config(progress=False),
        format="jsonl",
        mapping=MAPPING,
        collection=BOOKS_COLLECTION,
    )
    assert report.accepted == len(book_rows()), report.problems()
    return settings
