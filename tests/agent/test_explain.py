"""Grounded justifications: the check, the template sentence, the one re-ask, listwise drafts."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from agent.explain import check_grounding, explain, template_justification
from agent.llm.base import LLMRequest
from agent.rerank import RerankConfig, rank
from agent.schemas import AttributePreference, Citation
from prompts import PromptRegistry

from fakes import FakeEngine, explained_title, grounded_explanation, kind_of, make_candidates, make_user

CANDS = make_candidates(12)
ITEM = CANDS[1]  # Book 1: genres Drama + Horror, year 1981, author "Author 1", description "...numbered 1..."


def cite(name: str, value: str) -> list[Citation]:
    return [Citation(field=name, value=value)]


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("genres", "Drama", True),
        ("genres", "drama", True),
        ("genres", "Drama, Horror", True),
        ("genres", "Drama and Horror", True),
        ("genres", "Comedy", False),
        ("genres", "Drama, Comedy", False),
        ("year", "1981", True),
        ("year", "1981.0", True),
        ("year", "1982", False),
        ("author", "author 1", True),
        ("author", "Author 2", False),
        ("description", "numbered 1 about people", True),
        ("description", "about dragons", False),
        ("title", "Book 1", True),
        ("publisher", "Penguin", False),
    ],
)
def test_cited_values_must_exist_in_the_item(field: str, value: str, ok: bool) -> None:
    assert check_grounding("Book 1 is a fine pick.", cite(field, value), ITEM, make_user())[0] is ok


def test_user_stated_preferences_count_as_grounds() -> None:
    user = make_user(need="something with dragons", liked_attributes=[AttributePreference(field="mood", value="Cozy")])
    assert check_grounding("You asked for dragons: Book 1.", cite("description", "dragons"), ITEM, user)[0]
    assert check_grounding("Book 1 is a cozy read.", cite("mood", "cozy"), ITEM, user)[0]


def test_years_and_other_titles_in_the_text_are_checked() -> None:
    user = make_user()
    ok, note = check_grounding("A Drama from 1981.", cite("genres", "Drama"), ITEM, user)
    assert ok, note
    ok, note = check_grounding("A Drama from 2004.", cite("genres", "Drama"), ITEM, user)
    assert not ok and "2004" in note
    # 1995 is in the user's history: allowed ("like the 1995 book you loved")
    assert check_grounding("A Drama like your 1995 favourite.", cite("genres", "Drama"), ITEM, user)[0]
    ok, note = check_grounding("Better than Book 3.", cite("genres", "Drama"), ITEM, user, CANDS)
    assert not ok and "Book 3" in note
    # "Book 1" is a prefix of "Book 10": naming your own title is not naming another candidate
    assert check_grounding("Book 10 is great.", cite("title", "Book 10"), CANDS[10], user, CANDS)[0]
    assert not check_grounding("", cite("genres", "Drama"), ITEM, user)[0]
    assert not check_grounding("Nice.", [], ITEM, user)[0]
    ok, note = check_grounding("<one sentence>", [], ITEM, user, require_citation=False)
    assert not ok and "placeholder" in note


def test_template_justification_uses_only_real_shared_fields() -> None:
    user = make_user()  # history genres Comedy x2, Romance; author "Author 1"
    text, cited = template_justification(CANDS[0], user)  # Book 0: Comedy + Romance, 1980, Author 0
    assert text == "Matches your interest in Comedy and Romance (genres); year: 1980."
    assert [(c.field, c.value) for c in cited] == [("genres", "Comedy"), ("genres", "Romance"), ("year", "1980")]
    assert check_grounding(text, cited, CANDS[0], user, CANDS)[0]
    text, cited = template_justification(ITEM, user)  # nothing shared but the author
    assert text == "Matches your interest in Author 1 (author); year: 1981."
    disliked = make_user(history=[], disliked_attributes=[AttributePreference(field="author", value="Author 1")])
    text, _ = template_justification(ITEM, disliked)
    assert text == "Ranked highly for you among the candidates; genres: Drama, Horror; year: 1981."


def lie_then(second: str | None) -> Callable[[LLMRequest, dict[str, object] | None], str]:
    """Explain answers: first a planted false attribute, then ``second`` (None: lie again)."""
    seen: dict[str, int] = {}

    def script(req: LLMRequest, schema: dict[str, object] | None) -> str:
        assert kind_of(req) == "explain"
        title = explained_title(req)
        seen[title] = seen.get(title, 0) + 1
        if seen[title] == 1 or second is None:
            return json.dumps(
                {"justification": f"{title} is a Western.", "cited": [{"field": "genres", "value": "Western"}]}
            )
        return grounded_explanation(req, schema)

    return script


def test_planted_false_attribute_is_reasked_once_then_templated(registry: PromptRegistry) -> None:
    engine = FakeEngine(lie_then(None))
    notes = explain(engine, registry, make_user(), CANDS[:2], others=CANDS)
    assert [c.method for c in engine.calls] == ["generate", "generate"]  # one ask, one re-ask, both batched
    assert [len(c.requests) for c in engine.calls] == [2, 2]
    schema = engine.calls[0].schemas[0]
    assert schema is not None
    assert schema["properties"]["cited"]["items"]["properties"]["field"]["enum"] == [
        "title",
        "genres",
        "year",
        "author",
        "description",
    ]
    for note, item in zip(notes, CANDS[:2], strict=True):
        assert note.source == "template" and note.grounded
        assert note.flags == ["regenerated", "template_justification"]
        assert note.note and "Western" in note.note
        assert "Western" not in (note.text or "")
        assert check_grounding(note.text, note.cited, item, make_user(), CANDS)[0]
        assert note.llm_calls == 2


def test_a_grounded_reask_is_kept(registry: PromptRegistry) -> None:
    notes = explain(FakeEngine(lie_then("ok")), registry, make_user(), CANDS[:1])
    assert notes[0].source == "llm" and notes[0].flags == ["regenerated"]
    assert notes[0].text == "It has Comedy." and notes[0].cited == cite("genres", "Comedy")


def test_listwise_justifications_are_checked_too(registry: PromptRegistry) -> None:
    """The ranking's own justification for b0 invents a year; it is regenerated through explain (once)."""

    def script(req: LLMRequest, schema: dict[str, object] | None) -> str:
        if kind_of(req) == "listwise":
            return json.dumps(
                {
                    "ranking": [
                        {"id": "b0", "justification": "A 2019 bestseller."},
                        {"id": "b1", "justification": "A dark Horror pick."},
                    ]
                }
            )
        return grounded_explanation(req, schema)

    engine = FakeEngine(script)
    result = rank(
        engine, registry, make_user(), CANDS[:4], k=2, strategy="listwise", config=RerankConfig(llm_weight=1.0)
    )
    assert [len(c.requests) for c in engine.calls] == [1, 1]  # ranking, then one explain for b0 only
    first, second = result.items
    assert first.justification_source == "llm" and first.flags == ["regenerated"]
    assert first.grounding_note and "2019" in first.grounding_note and "re-asked" in first.grounding_note
    assert second.justification == "A dark Horror pick." and second.justification_source == "listwise"


def test_explain_modes(registry: PromptRegistry) -> None:
    engine = FakeEngine()
    res = rank(engine, registry, make_user(), CANDS[:3], k=2, strategy="retrieval", config=RerankConfig(explain="none"))
    assert engine.calls == [] and all(it.justification is None for it in res.items)
    res = rank(
        engine, registry, make_user(), CANDS[:3], k=2, strategy="retrieval", config=RerankConfig(explain="template")
    )
    assert engine.calls == [] and all(it.justification_source == "template" for it in res.items)
    assert res.template_justifications == 0  # asked for, not a failure


def test_template_justification_names_what_the_request_asked_for() -> None:
    user = make_user(history=[], need="Anything by Author 1 please")
    text, cited = template_justification(ITEM, user)
    assert text == "Fits your request for Author 1; year: 1981."
    assert cited == [Citation(field="author", value="Author 1"), Citation(field="year", value="1981")]


def test_user_context_from_a_retrieval_query() -> None:
    from agent.schemas import UserContext
    from retrieval.types import HistoryEntry, UserQuery

    items = {c.id: c.item for c in CANDS}
    query = UserQuery(
        user_id="u9",
        history=[
            HistoryEntry(item_id="b2", rating=4.0, timestamp=20),
            HistoryEntry(item_id="b1", timestamp=10),
            HistoryEntry(item_id="missing"),
            HistoryEntry(item_id="b3", rating=2.0),
        ],
        need="  a mystery ",
        liked=["b5", "b2"],
    )
    user = UserContext.from_query(query, items)
    assert [(h.item_id, h.rating) for h in user.history] == [("b3", 2.0), ("b1", None), ("b2", 4.0), ("b5", None)]
    assert user.need == "a mystery" and user.history[0].attributes == CANDS[3].item.metadata


def test_a_rejected_draft_and_a_rejected_reask_end_in_a_template(registry: PromptRegistry) -> None:
    def script(req: LLMRequest, schema: dict[str, object] | None) -> str:
        if kind_of(req) == "listwise":
            return json.dumps({"ranking": [{"id": "b0", "justification": "<one sentence>"}]})
        return json.dumps({"justification": "<one sentence>", "cited": [{"field": "title", "value": "Book 0"}]})

    engine = FakeEngine(script)
    result = rank(
        engine, registry, make_user(), CANDS[:3], k=1, strategy="listwise", config=RerankConfig(llm_weight=1.0)
    )
    (item,) = result.items
    assert [len(c.requests) for c in engine.calls] == [1, 1]  # no second re-ask: the draft was the first try
    assert item.justification_source == "template" and item.flags == ["regenerated", "template_justification"]
    assert item.grounding_note is not None
    assert item.grounding_note.startswith("listwise justification rejected: copies the prompt's placeholder")
