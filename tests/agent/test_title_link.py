"""Fuzzy title linking in chat messages: lower-case, year-less and misspelt titles, and an ambiguous one."""

from __future__ import annotations

import pytest

from agent.chat.catalog import CatalogIndex
from agent.chat.preferences import parse_message
from agent.chat.reply import which_one_reply
from retrieval.types import Item

TITLES = {"b": "The Babadook (2014)", "st2": "Super Troopers 2 (2018)", "su": "Super (2010)",
          "kk33": "King Kong (1933)", "kk05": "King Kong (2005)", "he": "Heist (2001)",
          "sh": "Shining, The (1980)", "x": "Horror Express (1972)"}  # fmt: skip


@pytest.fixture(scope="module")
def index() -> CatalogIndex:
    return CatalogIndex(
        Item(id=i, title=t, metadata={"genres": ["Horror"] if i in ("b", "sh") else ["Comedy"]})
        for i, t in TITLES.items()
    )


@pytest.mark.parametrize(
    ("message", "liked", "understood"),
    [
        ("I loved the babadook", ["b"], "'the babadook' as The Babadook (2014)"),  # lower case, no year
        ("i liked the babadok, something scary", ["b"], "'the babadok' as The Babadook (2014)"),  # misspelt
        ("something like super troopers 2", ["st2"], None),  # year-less: the exact matcher has it
        ("I loved Super Trooper 2", ["st2"], "'super trooper 2' as Super Troopers 2 (2018)"),  # not "Super"
        ("more like the shining", ["sh"], "'the shining' as Shining, The (1980)"),  # article moved back
    ],
)
def test_loosely_typed_titles_link_to_one_item(
    index: CatalogIndex, message: str, liked: list[str], understood: str | None
) -> None:
    up = parse_message(message, index, [])
    assert up.liked_ids == liked, up.notes
    assert up.understood == ([understood] if understood else [])
    assert not up.ambiguous


def test_ambiguous_title_asks_which_one(index: CatalogIndex) -> None:
    up = parse_message("I liked king kong", index, [])
    assert up.liked_ids == [] and [sorted(a) for a in up.ambiguous] == [["kk05", "kk33"]]
    question = which_one_reply(up.ambiguous, index)
    assert question.startswith("Which one do you mean: ") and "King Kong (1933)" in question
    assert "King Kong (2005)" in question
    # the user's answer with the year resolves it
    assert parse_message("King Kong (1933)", index, []).liked_ids == ["kk33"]
    # a shown item is no ambiguity: "that king kong" among the shown ones is the shown one
    assert parse_message("more like king kong", index, ["kk05"]).liked_ids == ["kk05"]


@pytest.mark.parametrize("message", ["a heist film with great acting", "I want something scary", "horror please"])
def test_words_are_not_titles(index: CatalogIndex, message: str) -> None:
    up = parse_message(message, index, [])
    assert up.liked_ids == [] and up.understood == [] and up.ambiguous == []


@pytest.mark.parametrize(
    ("extracted", "ids"),
    [
        ("The Babadook", ["b"]),  # exact form, no year
        ("the babadok", ["b"]),  # misspelt: the fuzzy linker
        ("Super Trooper 2", ["st2"]),
        ("Kng Kong", []),  # fuzzy and ambiguous (1933 / 2005): nothing, the rules path asks which one
        ("Heist", ["he"]),  # one word: exact only
        ("Heisst", []),  # one word is never linked fuzzily
        ("Completely Unknown Film", []),
    ],
)
def test_llm_extracted_titles_resolve_like_typed_ones(index: CatalogIndex, extracted: str, ids: list[str]) -> None:
    """The LLM extractor's titles go through CatalogIndex.resolve_title (agent/chat/conversation.py)."""
    assert index.resolve_title(extracted) == ids
