"""Avoidances in chat ("not too violent", "no gore", "nothing depressing", "without subtitles"): the rules read them,
the policy applies them to candidates (hard: left out, soft: ranked lower) and the reply says how; hand-made
catalogs for the logic, and a real embedded Chroma store with the bundled MiniLM for a whole chat (slow)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.chat.avoid import AvoidancePolicy, clause_avoidances, demote, fold_avoidances
from agent.chat.catalog import CatalogIndex
from agent.chat.conversation import Conversation
from agent.chat.preferences import apply_update, parse_message
from agent.chat.reply import clarifying_reply, template_reply
from agent.llm.base import LLMRequest
from agent.pipeline import RecommendedItem, Recommender
from agent.sessions import Avoidance, Preferences, SessionState, open_session_store
from agent.settings import Settings, load_settings
from retrieval.avoid import TEMPLATE, ConceptMatcher
from retrieval.ingest import ingest
from retrieval.mapping import ColumnMapping
from retrieval.types import Candidate, Item, SourceHit

from fakes import FakeEngine, text_of


def film(i: int, tags: list[str], genres: list[str], plot: str = "") -> Item:
    return Item(
        id=f"f{i:02d}",
        title=f"Film Number {i}",
        texts={"plot": plot} if plot else {},
        metadata={"genres": genres, "tags": tags, "year": 1990 + i},
    )


FILMS = [
    film(0, ["violence", "heist"], ["Crime", "Thriller"]),
    film(1, ["brutality"], ["Crime"]),
    film(2, ["witty", "heist"], ["Crime", "Comedy"]),
    film(3, ["gore", "zombies"], ["Horror"]),
    film(4, ["feel-good"], ["Comedy"], "Two friends open a bakery."),
    film(5, ["atmospheric"], ["Drama"], "A violent gang takes over the town."),
    film(6, ["subtitles", "french"], ["Drama"]),
    film(7, ["depressing"], ["Drama"]),
]


@pytest.fixture(scope="module")
def index() -> CatalogIndex:
    return CatalogIndex(FILMS)


# ------------------------------------------------------------------------------------------------ rules path
@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Something like that, but not too violent?", [("violent", "soft")]),
        ("no gore please", [("gore", "hard")]),
        ("nothing depressing", [("depressing", "hard")]),
        ("a drama without subtitles", [("subtitles", "hard")]),
        ("less violence", [("violence", "soft")]),
        ("I don't want anything scary or gory", [("scary", "hard"), ("gory", "hard")]),
        ("no jump scares", [("jump scares", "hard")]),
        ("not too dark and no gore", [("dark", "soft"), ("gore", "hard")]),
    ],
)
def test_rules_read_avoidances(index: CatalogIndex, message: str, expected: list[tuple[str, str]]) -> None:
    up = parse_message(message, index, [])
    assert [(a.concept, a.strength) for a in up.avoid] == expected, up.notes
    assert up.disliked_attributes == []  # a tag value ("gore", "violence") is a concept, not an exact filter


def test_rules_keep_genre_exclusions_and_references_out_of_avoidances(index: CatalogIndex) -> None:
    up = parse_message("no horror", index, [])
    assert up.avoid == [] and [(p.field, p.value) for p in up.disliked_attributes] == [("genres", "Horror")]
    assert parse_message("not that one", index, ["f00", "f01"]).avoid == []
    assert parse_message("not the second one", index, ["f00", "f01"]).avoid == []
    assert parse_message("a witty heist film", index, []).avoid == []


def test_clause_avoidances_direct() -> None:
    words = ["i", "want", "nothing", "too", "bleak", "or", "Heat"]
    taken = [False] * 6 + [True]

    def content(w: str) -> bool:
        return w not in {"i", "want", "nothing", "too", "or"}

    assert clause_avoidances(words, taken, [2], content) == [Avoidance(concept="bleak", strength="soft")]
    assert clause_avoidances(words, taken, [], content) == []


def test_avoidances_persist_are_replaced_and_lifted(index: CatalogIndex) -> None:
    state = SessionState(session_id="s", created_at=0, updated_at=0)
    apply_update(state, parse_message("a crime film, not too violent", index, []), index)
    assert [(a.concept, a.strength) for a in state.preferences.avoid] == [("violent", "soft")]
    apply_update(state, parse_message("no violent ones at all, and no gore", index, []), index)
    assert [(a.concept, a.strength) for a in state.preferences.avoid] == [("violent", "hard"), ("gore", "hard")]
    apply_update(state, parse_message("actually something with gore", index, []), index)  # asked for now: lifted
    assert [a.concept for a in state.preferences.avoid] == ["violent"]
    apply_update(state, parse_message("start over", index, []), index)
    assert state.preferences.avoid == []
    many = [Avoidance(concept=f"thing{i}") for i in range(12)]
    assert [a.concept for a in fold_avoidances([], many, [])] == [f"thing{i}" for i in range(4, 12)]


# ------------------------------------------------------------------------------------------------ policy
VECTORS = {"violent": [1.0, 0.0], "brutality": [0.9, 0.436], "zombies": [0.3, 0.954], "subtitles": [-1.0, 0.0]}


class TableEmbedder:
    id = "table"
    dim = 2

    def embed(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        prefix = TEMPLATE.format("")
        return np.asarray([VECTORS.get(t.removeprefix(prefix), [0.0, 1.0]) for t in texts], dtype=np.float32)


def cand(item_id: str, score: float) -> Candidate:
    return Candidate(item_id=item_id, score=score, sources={"semantic": SourceHit(rank=1, score=score)})


def test_policy_leaves_out_hard_and_ranks_soft_lower() -> None:
    policy = AvoidancePolicy(ConceptMatcher(TableEmbedder(), threshold=0.8))
    items = {it.id: it for it in FILMS}
    candidates = [cand(it.id, 1.0 - i / 10) for i, it in enumerate(FILMS)]
    kept, applied = policy.apply([Avoidance(concept="violent", strength="hard")], candidates, items)
    assert [c.item_id for c in kept] == ["f02", "f03", "f04", "f06", "f07"]
    (a,) = applied
    assert (a.left_out, a.demoted, a.checked) == (3, 0, 8) and a.item_ids == ["f00", "f01", "f05"]
    assert a.reasons == {"tagged violence": 1, 'tagged brutality (close to "violent")': 1,
                         'their plot mentions "violent"': 1}  # fmt: skip
    assert a.note.startswith('Avoiding "violent": left out 3 items (')

    kept, applied = policy.apply([Avoidance(concept="violent", strength="soft")], candidates, items)
    assert [c.item_id for c in kept] == ["f02", "f03", "f04", "f06", "f07", "f00", "f01", "f05"]
    assert max(c.score for c in kept[5:]) < min(c.score for c in kept[:5])
    assert applied[0].demoted == 3 and applied[0].note.startswith('Less "violent": ranked 3 items lower (')
    kept, _ = policy.apply([Avoidance(concept="violent", strength="soft")], candidates, items, k=6)
    assert [c.item_id for c in kept] == ["f02", "f03", "f04", "f06", "f07", "f00"]  # only to fill up to k
    kept, _ = policy.apply([Avoidance(concept="violent", strength="soft")], candidates, items, k=4)
    assert [c.item_id for c in kept] == ["f02", "f03", "f04", "f06", "f07"]  # enough others: none reaches the ranker

    _, applied = policy.apply([Avoidance(concept="subtitles")], candidates[:2], items)
    assert applied[0].note == 'Avoiding "subtitles": none of the 2 candidates matched.'


def _ranked(ids: list[str]) -> list[RecommendedItem]:
    return [RecommendedItem(item_id=i, rank=n + 1, score=1.0, retrieval_score=1.0, retrieval_rank=n + 1,
                            title=i) for n, i in enumerate(ids)]  # fmt: skip


def test_demote_keeps_soft_matches_behind_the_rest() -> None:
    policy = AvoidancePolicy(ConceptMatcher(None))
    items = {it.id: it for it in FILMS}
    _, applied = policy.apply([Avoidance(concept="heist", strength="soft")], [cand("f00", 1), cand("f02", 0.5)], items)
    out = demote(_ranked(["f00", "f04", "f02", "f07"]), applied)
    assert [(i.item_id, i.rank) for i in out] == [("f04", 1), ("f07", 2), ("f00", 3), ("f02", 4)]


def test_replies_say_how_avoidances_were_applied(index: CatalogIndex) -> None:
    prefs = Preferences(avoid=[Avoidance(concept="violent", strength="soft"), Avoidance(concept="gore")])
    assert "less violent" in clarifying_reply(prefs, index) and "no gore" in clarifying_reply(prefs, index)
    assert "violent" not in template_reply(_ranked(["f04"]), prefs, index)  # the applied note comes from the turn


# ------------------------------------------------------------------------------------------------ a whole chat
COLLECTION = "avoid-films"
CRIME = [
    ("Night Heist", ["violence", "heist"], "A crew robs a bank and a shootout leaves the street in blood."),
    ("The Last Score", ["violent", "crime boss"], "A crime boss settles scores with his rivals."),
    ("Cold Streets", ["brutal", "gangsters"], "Gangsters fight over the docks of a cold city."),
    ("Blood Money", ["violence", "revenge"], "A hit man takes revenge on the crime family that betrayed him."),
    ("The Clever Job", ["witty", "heist"], "A charming thief plans a crime with no one getting hurt."),
    ("Paper Trail", ["smart", "investigation"], "An accountant uncovers a crime hidden in the books."),
    ("The Con Artists", ["funny", "caper"], "Two con artists plan a crime against a rich art collector."),
    ("Quiet Detective", ["cozy mystery"], "A retired teacher solves a small crime in her village."),
    ("Bank Holiday", ["lighthearted", "heist"], "Friends plan a crime on a holiday; it goes comically wrong."),
    ("The Forger", ["clever", "art"], "A painter forges masterpieces in a quiet crime caper."),
]
VIOLENT = {t for t, tags, _ in CRIME if {"violence", "violent"} & set(tags)}  # the ground truth: tagged so


@pytest.fixture(scope="module")
def films_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("avoid-home")
    rows = [{"id": f"m{i}", "title": t, "tags": tags, "plot": plot, "genres": ["Crime"]}
            for i, (t, tags, plot) in enumerate(CRIME)]  # fmt: skip
    path = home / "films.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    settings = load_settings(home=home, collection=COLLECTION)
    mapping = ColumnMapping(id="id", title="title", text=["plot"], metadata={"tags": "list", "genres": "list"})
    report = ingest(path, store_config=settings.store_config(), embed_config=settings.embed_config(progress=False),
                    format="jsonl", mapping=mapping, collection=COLLECTION)  # fmt: skip
    assert report.accepted == len(CRIME), report.problems()
    return settings.model_copy(update={"rerank_strategy": "retrieval", "explain_mode": "template", "chat_k": 4,
                                       "chat_reply": "template"})  # fmt: skip


@pytest.fixture
def films_chat(films_settings: Settings, tmp_path: Path) -> Iterator[tuple[Conversation, dict[str, Any]]]:
    script: dict[str, Any] = {"avoid": []}

    def generate(req: LLMRequest, schema: dict[str, object] | None) -> str:
        if "You track what a user wants" in text_of(req):
            return json.dumps({"liked_titles": [], "disliked_titles": [], "liked_attributes": [],
                               "disliked_attributes": [], "constraints": {"exclude": [], "require": [], "ranges": []},
                               "need": "", "avoid": script["avoid"]})  # fmt: skip
        return "{}"

    settings = films_settings.model_copy(update={"session_db_url": str(tmp_path / "sessions.sqlite3")})
    store = open_session_store(settings)
    conv = Conversation(Recommender(settings, engine=FakeEngine(generate_fn=generate)), store, settings)
    yield conv, script
    store.close()


@pytest.mark.slow
def test_not_too_violent_keeps_violence_tagged_items_out_of_a_real_chat(
    films_chat: tuple[Conversation, dict[str, Any]],
) -> None:
    conv, _ = films_chat
    sid = conv.start().session_id
    plain = conv.send(sid, "a crime story")
    assert plain.recommendation is not None and plain.avoidances == []

    sid = conv.start().session_id
    reply = conv.send(sid, "a crime story, but not too violent")
    assert reply.recommendation is not None
    titles = [i.title for i in reply.recommendation.items]
    assert len(titles) == 4 and not VIOLENT & set(titles), titles
    (applied,) = reply.avoidances
    assert applied.concept == "violent" and applied.strength == "soft"
    matched = {conv.recommender.collection.get_items([i])[i].title for i in applied.item_ids}
    assert matched >= VIOLENT, applied
    assert f"ranked {applied.demoted} items lower" in reply.reply and "tagged violence" in reply.reply
    assert [a.concept for a in conv.get(sid).preferences.avoid] == ["violent"]

    # hard, and kept for the next turn: none of the violent items even among the candidates
    sid = conv.start().session_id
    conv.send(sid, "no violence")
    again = conv.send(sid, "a crime story")
    assert again.recommendation is not None
    candidates = conv.recommender.collection.get_items(again.recommendation.candidate_ids)
    assert not VIOLENT & {it.title for it in candidates.values()}
    assert again.avoidances[0].left_out >= len(VIOLENT) and "left out" in again.reply


@pytest.mark.slow
def test_llm_avoidances_are_checked_against_the_message(films_chat: tuple[Conversation, dict[str, Any]]) -> None:
    conv, script = films_chat
    conv.settings = conv.settings.model_copy(update={"chat_extract": "llm"})
    script["avoid"] = [{"concept": "violent", "strength": "hard"}]  # not said: ignored
    reply = conv.send(conv.start().session_id, "a calm crime story")
    assert reply.preferences.avoid == [] and reply.avoidances == []
    script["avoid"] = [{"concept": "blood", "strength": "soft"}]  # said, and no rule reads "spare me"
    reply = conv.send(conv.start().session_id, "a crime story, and spare me the blood")
    assert [(a.concept, a.strength) for a in reply.preferences.avoid] == [("blood", "soft")]
    assert reply.avoidances and reply.avoidances[0].concept == "blood"


@pytest.mark.slow
def test_streamed_turn_carries_the_applied_avoidances(films_chat: tuple[Conversation, dict[str, Any]]) -> None:
    conv, _ = films_chat
    events = list(conv.stream(conv.start().session_id, "a crime story, but not too violent"))
    items = next(e for e in events if e.event == "items")
    assert items.data["avoidances"][0]["concept"] == "violent" and items.data["avoidances"][0]["demoted"] >= 3
    done = events[-1]
    assert done.event == "done" and done.data["avoidances"][0]["note"] in done.data["reply"]
    streamed = "".join(e.data["text"] for e in events if e.event == "delta")
    assert streamed == done.data["reply"]
