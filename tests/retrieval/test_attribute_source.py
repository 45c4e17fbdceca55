"""The attribute source: catalog field values named in the conversation, ordered by a dialogue log's prior."""

from __future__ import annotations

import pytest

from retrieval.attribute_source import AttributeConfig, AttributeIndex, AttributeSource, tokens
from retrieval.candidates import SourceRequest
from retrieval.dialogue_log import DialogueLog, DialogueTurn
from retrieval.dialogue_sources import dialogue_sources, fit_dialogue_model
from retrieval.types import Item, UserQuery

ITEMS = [
    Item(id="1", title="Superbad (2007)", metadata={"genre": ["comedy"], "star": ["Jonah Hill"], "year": 2007}),
    Item(id="2", title="Airplane! (1980)", metadata={"genre": ["comedy"], "star": ["Leslie Nielsen"]}),
    Item(id="3", title="Alien (1979)", metadata={"genre": ["horror", "sci-fi"], "star": ["Sigourney Weaver"]}),
    Item(id="4", title="Moneyball (2011)", metadata={"genre": ["drama"], "star": ["Jonah Hill", "Brad Pitt"]}),
    Item(id="5", title="Tv (2000)", metadata={"genre": ["tv"], "country": "Spain"}),
]


def _request(need: str, **kw: object) -> SourceRequest:
    query = UserQuery(need=need, **kw)  # type: ignore[arg-type]
    return SourceRequest(query=query, k=10, exclude=frozenset(query.excluded_ids()))


def test_tokens_keep_hyphenated_words() -> None:
    assert tokens("Any SCI-FI, or O'Brien's films?") == ["any", "sci-fi", "or", "o'brien's", "films"]


def test_named_values_plural_multiword_and_min_chars() -> None:
    index = AttributeIndex(ITEMS)
    assert index.named("Any good comedies? I love jonah hill and sci-fi") == ["comedy", "jonah hill", "sci-fi"]
    assert index.named("hill jonah, a tv show") == []  # word order counts; "tv" is shorter than min_chars
    assert index.named("a film from Spain") == []  # a text field is not a list field: not matched by default
    assert AttributeIndex(ITEMS, AttributeConfig(fields=("country",))).named("a film from spain") == ["spain"]
    only_genre = AttributeIndex(ITEMS, AttributeConfig(fields=("genre",)))
    assert only_genre.named("jonah hill comedy") == ["comedy"]


def test_scores_are_hits_times_floor_plus_prior_by_hand() -> None:
    """A comedy with Jonah Hill: Superbad holds both values (2 hits), Airplane! and Moneyball one each. Prior:
    an item outside the catalog 8, Airplane! 4, Moneyball 2, Superbad 0 -> scaled by the maximum (8): 0.5, 0.25,
    0; floor 0.1. Superbad 2 * 0.1 = 0.2, Airplane! 1 * 0.6 = 0.6, Moneyball 1 * 0.35 = 0.35."""
    source = AttributeSource(AttributeIndex(ITEMS), prior={"2": 4.0, "4": 2.0, "unknown": 8.0})
    got = dict(source.retrieve(_request("a comedy with Jonah Hill")))
    assert got == pytest.approx({"2": 0.6, "4": 0.35, "1": 0.2})
    no_prior = dict(AttributeSource(AttributeIndex(ITEMS)).retrieve(_request("a comedy with Jonah Hill")))
    assert no_prior == pytest.approx({"1": 0.2, "2": 0.1, "4": 0.1})


def test_nothing_named_nothing_returned_and_exclusions_hold() -> None:
    source = AttributeSource(AttributeIndex(ITEMS))
    assert source.retrieve(_request("hello there")) == []
    assert [i for i, _ in source.retrieve(_request("comedy", liked=["1"]))] == ["2"]  # a liked item is excluded


def test_dialogue_sources_add_the_attribute_source_with_the_log_prior() -> None:
    log = DialogueLog([DialogueTurn("d1", ("3",), ("2",)), DialogueTurn("d2", ("3",), ("2", "4"))])
    model = fit_dialogue_model(log)
    assert [s.name for s in dialogue_sources(model)] == ["comention", "recommended_popularity"]
    sources = dialogue_sources(model, AttributeIndex(ITEMS))
    assert [s.name for s in sources] == ["comention", "recommended_popularity", "attribute"]
    ranked = [i for i, _ in sources[2].retrieve(_request("any comedy?"))]
    assert ranked == ["2", "1"]  # Airplane! was recommended twice, Superbad never
