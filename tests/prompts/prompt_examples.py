"""Realistic variable sets for three kinds of catalog (movies, books, products) and helpers to write templates."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

MOVIES: dict[str, Any] = {
    "history": [
        {
            "title": "Toy Story (1995)",
            "attributes": {"genres": ["Animation", "Children", "Comedy"], "year": 1995},
            "rating": 5.0,
        },
        {
            "title": "Heat (1995)",
            "attributes": {"genres": ["Action", "Crime", "Thriller"], "year": 1995},
            "rating": 3.5,
        },
        {"title": "Fargo (1996)", "attributes": {"genres": ["Comedy", "Crime", "Drama"], "year": 1996}},
    ],
    "need": "Something funny I can watch with my kids tonight, nothing too scary.",
    "candidates": [
        {
            "id": "2355",
            "title": "Bug's Life, A (1998)",
            "attributes": {"genres": ["Adventure", "Animation"], "year": 1998},
        },
        {"id": "1258", "title": "Shining, The (1980)", "attributes": {"genres": ["Horror"], "year": 1980}},
        {
            "id": "4886",
            "title": "Monsters, Inc. (2001)",
            "attributes": {"genres": ["Animation", "Comedy"], "year": 2001},
            "text": "Monsters generate their city's power by scaring children, but they are terribly afraid of them.",
        },
    ],
    "conversation": [
        {"role": "user", "content": "I loved Toy Story."},
        {"role": "assistant", "content": "Great choice! Do you want more animated comedies?"},
    ],
    "message": "Yes, but nothing older than 1995 and no horror please.",
    "fields": ["genres", "year"],
}

BOOKS: dict[str, Any] = {
    "history": [
        {
            "title": "Pride and Prejudice",
            "attributes": {"authors": ["Jane Austen"], "subjects": ["Romance", "Classics"]},
            "rating": 4,
        },
        {
            "title": "The Name of the Wind",
            "attributes": {"authors": ["Patrick Rothfuss"], "subjects": ["Fantasy"]},
            "rating": 5,
        },
    ],
    "need": "",
    "candidates": [
        {
            "id": "OL45883W",
            "title": "Emma",
            "attributes": {"authors": ["Jane Austen"], "year": 1815, "subjects": ["Romance", "Classics"]},
            "text": "Emma Woodhouse, handsome, clever, and rich, meddles in the love lives of her friends. " * 12,
        },
        {
            "id": "OL27448W",
            "title": "The Hobbit",
            "attributes": {"authors": ["J. R. R. Tolkien"], "subjects": ["Fantasy", "Adventure"]},
        },
        {
            "id": "OL82563W",
            "title": "Mistborn: The Final Empire",
            "attributes": {"authors": ["Brandon Sanderson"], "subjects": ["Fantasy"]},
        },
        {
            "id": "OL1168083W",
            "title": "Gone Girl",
            "attributes": {"authors": ["Gillian Flynn"], "subjects": ["Thriller"]},
        },
    ],
    "conversation": [],
    "message": "I want an epic fantasy series, but not by Rothfuss, I can't wait for book three any longer.",
    "fields": ["authors", "subjects", "year"],
}

PRODUCTS: dict[str, Any] = {
    "history": [
        {
            "title": "Anker PowerCore 10000 Portable Charger",
            "attributes": {"category": "Electronics > Chargers", "brand": "Anker", "price": 21.99},
        },
        {
            "title": "Logitech MX Master 3S Wireless Mouse",
            "attributes": {"category": "Computers > Mice", "brand": "Logitech", "price": 99.0},
        },
    ],
    "need": "a keyboard for programming under $120",
    "candidates": [
        {
            "id": "B07S92QBCJ",
            "title": "Keychron K2 Wireless Mechanical Keyboard",
            "attributes": {"category": "Computers > Keyboards", "brand": "Keychron", "price": 89.0},
        },
        {
            "id": "B09HM94VDS",
            "title": "Logitech MX Keys Mini",
            "attributes": {"category": "Computers > Keyboards", "brand": "Logitech", "price": 99.99},
            "text": "Minimalist wireless illuminated keyboard.\nSmart backlighting.\n\n\nUSB-C charging.",
        },
        {
            "id": "B0BQJG4R5V",
            "title": "USB-C Hub 7-in-1",
            "attributes": {"category": "Computers > Hubs", "brand": None, "price": 25.5},
        },
    ],
    "conversation": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello, how can I help?"}],
    "message": "Show me keyboards, but not Logitech.",
    "fields": ["category", "brand", "price"],
}

CATALOGS = {"movies": MOVIES, "books": BOOKS, "products": PRODUCTS}


def variables_for(name: str, catalog: dict[str, Any]) -> dict[str, Any]:
    """The variables a built-in template takes, drawn from one catalog example."""
    c = catalog
    if name == "rank_listwise":
        return {"history": c["history"], "need": c["need"], "candidates": c["candidates"], "k": 2}
    if name == "rank_options":
        return {"history": c["history"], "need": c["need"], "candidates": c["candidates"]}
    if name == "rank_pointwise":
        return {"history": c["history"], "need": c["need"], "candidate": c["candidates"][0]}
    if name == "explain":
        return {"item": c["candidates"][0], "history": c["history"], "need": c["need"]}
    if name == "extract_preferences":
        return {"conversation": c["conversation"], "message": c["message"], "fields": c["fields"]}
    if name == "chat_reply":
        return {"message": c["message"], "items": c["candidates"]}
    if name == "enrich_item":
        return {"item": c["candidates"][1]}
    if name == "user_profile":
        return {"history": c["history"], "need": c["need"]}
    if name == "propose_items":
        return {"need": c["need"], "n": 3, "liked": [h["title"] for h in c["history"]]}
    raise AssertionError(f"no example variables for {name}")


BUILTINS = [
    "rank_listwise",
    "rank_options",
    "rank_pointwise",
    "explain",
    "extract_preferences",
    "chat_reply",
    "enrich_item",
    "user_profile",
    "propose_items",
]


def write_template(
    directory: Path,
    name: str,
    body: str,
    *,
    task: str = "rank_options",
    variables: str = "  x: Some text.\n",
    extra: str = "",
) -> Path:
    """Write NAME.j2 with a valid front matter (override pieces to make it invalid)."""
    front = (
        f"---\nname: {name}\nversion: test\ntask: {task}\ndescription: A test template.\noutput: text\n"
        f"variables:\n{variables}{extra}---\n"
    )
    path = directory / f"{name}.j2"
    path.write_text(front + textwrap.dedent(body), encoding="utf-8")
    return path
