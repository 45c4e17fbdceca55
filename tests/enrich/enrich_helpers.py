"""Helpers of the enrichment tests (a module with a unique name): a hashing embedder, small catalogs, scripted
LLM answers for the enrich / profile / propose prompts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.llm.base import LLMRequest
from retrieval.config import StoreConfig
from retrieval.store import Store
from retrieval.types import Item

import testkit
from fakes import text_of

MOVIES = [
    ("m1", "Heat (1995)", ["Action", "Crime", "Thriller"], 1995),
    ("m2", "Toy Story (1995)", ["Animation", "Children", "Comedy"], 1995),
    ("m3", "Alien (1979)", ["Horror", "Sci-Fi"], 1979),
    ("m4", "Aliens (1986)", ["Action", "Horror", "Sci-Fi"], 1986),
    ("m5", "Matrix, The (1999)", ["Action", "Sci-Fi", "Thriller"], 1999),
    ("m6", "Fargo (1996)", ["Comedy", "Crime", "Drama"], 1996),
    ("m7", "Amelie (2001)", ["Comedy", "Romance"], 2001),
    ("m8", "Gravity (2013)", ["Drama", "Sci-Fi", "IMAX"], 2013),
]
PRODUCTS = [
    ("p1", "Trail running shoe", "A light running shoe with a grippy sole for muddy forest trails and long races."),
    ("p2", "Espresso machine", "A compact pump espresso machine with a steam wand for milk drinks at home."),
    ("p3", "Noise cancelling headphones", "N/A"),  # thin: its text is too short to describe it
]


def catalog() -> list[Item]:
    movies = [Item(id=i, title=t, metadata={"genres": g, "year": y}) for i, t, g, y in MOVIES]
    products = [Item(id=i, title=t, texts={"description": d}, metadata={"category": "gear"}) for i, t, d in PRODUCTS]
    return movies + products


class HashEmbedder(testkit.HashEmbedder):
    """The hashing embedder under the enrichment tests' id (``enrich-hash-64``)."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__("enrich-hash", dim)


def make_store(home: Path, name: str, embedder: HashEmbedder, items: list[Item] | None = None) -> Store:
    store = Store(StoreConfig(path=home / "chroma", collection=name))
    store.upsert(items if items is not None else catalog(), embedder, collection=name, progress=False)
    return store


_TITLE = re.compile(r"^title: (.*)$", re.MULTILINE)


def prompt_kind(req: LLMRequest) -> str:
    text = text_of(req)
    if "You write catalog entries" in text:
        return "enrich"
    if "You summarise what a user likes" in text:
        return "profile"
    if "You suggest items from a catalog" in text:
        return "propose"
    return "other"


def enrich_answer(req: LLMRequest) -> str:
    title = _TITLE.findall(text_of(req))[0]
    return json.dumps({"description": f"About {title}: spaceship voyage.", "keywords": ["spaceship", title[:20]]})


def scripted(
    *,
    enrich: Callable[[LLMRequest], str] = enrich_answer,
    profile: str = "Likes tense science fiction about spaceship crews and dislikes romantic comedies.",
    proposals: list[dict[str, Any]] | None = None,
) -> Callable[[LLMRequest, dict[str, Any] | None], str]:
    """A FakeEngine generate_fn answering each prompt kind."""

    def answer(req: LLMRequest, schema: dict[str, Any] | None) -> str:
        kind = prompt_kind(req)
        if kind == "enrich":
            return enrich(req)
        if kind == "profile":
            return profile
        if kind == "propose":
            return json.dumps({"items": proposals or []})
        return "{}"

    return answer
