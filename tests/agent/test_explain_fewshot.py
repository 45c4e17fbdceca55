"""Justifications in the few-shot layout (base models): evidence first, one engine call per batch, the tighter
check, and the layout picked from the model's kind (chat template or not) on real tiny models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.evidence import choose_evidence, fewshot_examples, liked_history
from agent.explain import ExplainRequest, check_grounding, explain_many, value_in_field
from agent.explain_fewshot import continuation_verb, resolve_layout
from agent.llm.base import LLMRequest
from agent.schemas import HistoryItem, RerankConfig, UserContext
from core.errors import PromptError
from prompts import PromptRegistry
from retrieval.types import Candidate, Item

from fakes import FakeEngine, make_candidates, make_user
from testkit import tiny_settings

CANDS = make_candidates(12)
_ITEM_LINE = re.compile(r"^Item: (.*?)(?: \| |$)", re.MULTILINE)


class BaseModelFake(FakeEngine):
    """A fake engine whose model has no chat template (a base model)."""

    def has_chat_template(self) -> bool:
        return False


def open_title(req: LLMRequest) -> str:
    """The title of the open case (the last Item line) of a few-shot prompt."""
    assert req.prompt is not None
    return _ITEM_LINE.findall(req.prompt)[-1]


def continues(req: LLMRequest, schema: Any) -> str:
    """A model that continues the pattern truthfully: '<title> adds <its first genre>.' then the next case."""
    title = open_title(req)
    genre = next(c for c in CANDS if c.title == title).item.metadata["genres"][0]
    return f" adds {genre}.\nLiked: something else"


def requests_for(users: list[UserContext], items_per_user: int = 3, **cfg: Any) -> list[ExplainRequest]:
    config = RerankConfig(**cfg)
    out = []
    for u, user in enumerate(users):
        for it in CANDS[u * items_per_user : (u + 1) * items_per_user]:
            out.append(ExplainRequest(user=user, item=it, others=CANDS, config=config))
    return out


# ------------------------------------------------------------------------------------------------ the template
def test_explain_renders_both_layouts_from_the_same_variables() -> None:
    registry = PromptRegistry()
    template = registry.get("explain")
    assert template.layouts == ("chat", "fewshot")
    variables = {
        "item": {"title": "Book 1", "attributes": {"genres": ["Drama", "Horror"]}},
        "history": [{"title": "Earlier Book"}],
        "liked": "Earlier Book; Another Read",
        "examples": [{"liked": "B", "item": {"title": "X", "attributes": {"genres": ["Drama"]}}, "answer": "Like B."}],
        "evidence": "Like Earlier Book (Drama),",
    }
    chat = registry.render("explain", variables)
    few = registry.render("explain", variables, layout="fewshot")
    assert chat.layout == "chat" and chat.messages[0].role == "system" and chat.stop == []
    assert few.layout == "fewshot" and few.stop == ["\n"] and few.max_tokens == template.fewshot.max_tokens
    assert few.engine_input() == few.text and isinstance(chat.engine_input(), list)
    assert few.text.endswith("Item: Book 1 | genres: Drama, Horror\nWhy: Like Earlier Book (Drama),")
    assert "Liked: B\nItem: X | genres: Drama\nWhy: Like B." in few.text
    assert few.version_id == chat.version_id  # one file, one version


def test_a_template_without_a_fewshot_layout_says_so(tmp_path: Path) -> None:
    registry = PromptRegistry([Path(__file__).parent / "templates"])
    with pytest.raises(PromptError, match="has no 'fewshot' layout"):
        registry.render("explain_compact", {"item": {"title": "t"}, "history": []}, layout="fewshot")
    bad = tmp_path / "explain_bad.j2"
    bad.write_text(
        "---\nname: explain_bad\nversion: '1'\ntask: explain\ndescription: d\noutput: text\nvariables: {}\n"
        "fewshot: {block: fewshot}\n---\n{% block user %}hi{% endblock %}\n"
    )
    with pytest.raises(PromptError, match="'fewshot' names block 'fewshot'"):
        PromptRegistry([tmp_path])


@pytest.mark.parametrize(
    ("fmt", "chat_template", "expected"),
    [
        ("auto", False, "fewshot"),
        ("auto", True, "chat"),
        ("auto", None, "chat"),  # an engine that cannot tell keeps today's layout
        ("fewshot", True, "fewshot"),
        ("chat", False, "chat"),
    ],
)
def test_the_layout_follows_the_model_kind(fmt: str, chat_template: bool | None, expected: str) -> None:
    engine = FakeEngine()
    engine.has_chat_template = lambda: chat_template  # type: ignore[method-assign]
    assert resolve_layout(fmt, engine, PromptRegistry(), "explain") == expected


# ------------------------------------------------------------------------------------------------ the batch
def test_a_justification_batch_is_one_engine_call_with_a_shared_user_prefix() -> None:
    engine = BaseModelFake(continues)
    users = [make_user(user_id="u1"), make_user(user_id="u2", need="something dark and scary")]
    reqs = requests_for(users)
    outs, timings = explain_many(engine, PromptRegistry(), reqs)
    assert engine.methods() == ["generate"] and len(engine.calls[0].requests) == 6
    assert engine.calls[0].max_tokens == PromptRegistry().get("explain").fewshot.max_tokens
    assert all(o.source == "llm" and o.grounded and o.layout == "fewshot" for o in outs), [o.note for o in outs]
    assert set(timings) == {"explain"}
    prompts = [r.prompt or "" for r in engine.calls[0].requests]
    # the user's part (header, worked examples, liked items, request) is one prefix for all their items
    for group in (prompts[:3], prompts[3:]):
        heads = {p[: p.rindex("\nLiked: ")] for p in group}
        assert len(heads) == 1
    assert "Asked for: something dark and scary" in prompts[3]
    # the answer starts with the evidence: a liked item of the user and the values the item shares with it
    first = outs[0]
    assert first.text is not None and first.text.startswith("Like Earlier Book (Comedy, Romance), Book 0 adds")
    assert {(c.field, c.value) for c in first.cited} == {("genres", "Comedy"), ("genres", "Romance")}
    assert outs[3].text is not None and outs[3].text.startswith("For your request and like")


def test_one_cheap_repair_then_the_template() -> None:
    answers = {"Book 0": [" adds Fantasy.\n", " Romance.\n"],  # wrong, then right
               "Book 1": [" adds Horror, H}e don't care.\n", ", for you.\n"]}  # fmt: skip

    def script(req: LLMRequest, schema: Any) -> str:
        return answers[open_title(req)].pop(0)

    engine = BaseModelFake(script)
    reqs = requests_for([make_user()], items_per_user=2)
    outs, timings = explain_many(engine, PromptRegistry(), reqs)
    assert [len(c.requests) for c in engine.calls] == [2, 2]
    # the repair continues a longer lead (the verb the item's real values allow), so it is greedy like the first
    assert engine.calls[1].temperature == RerankConfig().temperature
    repair_prompts = [r.prompt or "" for r in engine.calls[1].requests]
    assert repair_prompts[0].endswith("\nWhy: Like Earlier Book (Comedy, Romance), Book 0 adds")
    assert outs[0].source == "llm" and "regenerated" in outs[0].flags and outs[0].llm_calls == 2
    assert outs[0].text == "Like Earlier Book (Comedy, Romance), Book 0 adds Romance."
    assert outs[1].source == "template" and "nothing about the item beyond its title" in (outs[1].note or "")
    assert "broken characters" in (outs[1].note or "")  # the first answer's reason is kept in the note
    assert set(timings) == {"explain", "explain_retry"}


def test_the_repair_verb_follows_the_items_real_values() -> None:
    item = CANDS[0]  # genres Comedy, Romance (make_candidates), author Author 0
    user = make_user()
    liked = liked_history(user)
    evidence = choose_evidence(item, user, liked)
    assert continuation_verb(item, evidence) == "adds"  # the author is a value the evidence did not name
    only = item.model_copy(deep=True)
    only.item.metadata = {"genres": ["Comedy", "Romance"], "year": 1980}
    assert continuation_verb(only, choose_evidence(only, user, liked)) == "is another"
    bare = item.model_copy(deep=True)
    bare.item.metadata = {"year": 1980}
    assert continuation_verb(bare, choose_evidence(bare, user, liked)) == "is"


def test_a_title_ending_in_punctuation_does_not_end_the_sentence() -> None:
    """A liked title ending in "?" (O Brother, Where Art Thou?) cut the sentence before the item, which was refused."""
    user = make_user(history=[HistoryItem(title="Where Art Thou?", attributes={"genres": ["Comedy"]}, rating=5)])
    engine = BaseModelFake(lambda req, schema: " adds Romance.\n")
    outs, _ = explain_many(engine, PromptRegistry(), requests_for([user], items_per_user=1))
    assert outs[0].source == "llm", outs[0].note
    assert outs[0].text == "Like Where Art Thou? (Comedy), Book 0 adds Romance."


def test_an_answer_cut_by_the_token_cap_keeps_only_its_complete_part() -> None:
    def script(req: LLMRequest, schema: Any) -> str:
        return " adds Comedy and then it goes on and on" if "Book 0" in open_title(req) else " adds Drama\n"

    engine = BaseModelFake(script)
    outs, _ = explain_many(engine, PromptRegistry(), requests_for([make_user()], items_per_user=2))
    # the fake reports finish_reason stop; the words were fine: accepted. A 'length' finish is cut back:
    assert outs[0].source == "llm"
    from agent.llm.base import Generation

    def cut(text: str) -> Any:
        return lambda req, schema: Generation(text=text, prompt_tokens=9, completion_tokens=28, finish_reason="length")

    one = requests_for([make_user()], items_per_user=1)
    outs, _ = explain_many(BaseModelFake(cut(" adds Comedy and then")), PromptRegistry(), one)
    assert outs[0].source == "template" and "cut off by the token cap" in (outs[0].note or "")
    # its complete part: up to the last comma, or the first sentence when one ended before the cap
    outs, _ = explain_many(BaseModelFake(cut(" adds Romance and Author 0, then the")), PromptRegistry(), one)
    assert outs[0].source == "llm"
    assert outs[0].text == "Like Earlier Book (Comedy, Romance), Book 0 adds Romance and Author 0."
    outs, _ = explain_many(BaseModelFake(cut(" adds Romance. Then it goes on")), PromptRegistry(), one)
    assert outs[0].source == "llm" and outs[0].text == "Like Earlier Book (Comedy, Romance), Book 0 adds Romance."
    # the part kept is checked like any answer: a cut list of values the item lacks is still refused
    outs, _ = explain_many(BaseModelFake(cut(" adds Fantasy and War, then the")), PromptRegistry(), one)
    assert outs[0].source == "template" and "nothing about the item beyond its title" in (outs[0].note or "")


def test_items_with_markup_in_their_titles_are_not_worked_examples() -> None:
    odd = make_candidates(12)
    odd[5] = odd[5].model_copy(deep=True)
    odd[5].item.title = "B*A*P*S (1997)"
    seen: list[str] = []

    def script(req: LLMRequest, schema: Any) -> str:
        seen.append(req.prompt or "")
        return " adds Romance.\n"

    user = make_user()
    reqs = [ExplainRequest(user=user, item=odd[0], others=odd, config=RerankConfig())]
    explain_many(BaseModelFake(script), PromptRegistry(), reqs)
    assert seen and "B*A*P*S" not in seen[0]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (" adds Comedy and Book 5.", "names another item from the prompt ('Book 5')"),  # a worked example's
        (", for you.", "says nothing about the item beyond its title"),
        (" adds Comedy, something with dragons and knights.", "copies the request"),
    ],
)
def test_the_written_rest_must_be_about_this_item(answer: str, reason: str) -> None:
    assert "Book 5" in {e["liked"] for e in fewshot_examples(CANDS, {"b0"}, 2, with_request=True)}
    engine = BaseModelFake(lambda req, schema: answer)
    liked = [
        HistoryItem(title=t, attributes={"genres": ["Comedy"]}, rating=5) for t in ("Earlier Book", "Another Read")
    ]
    user = make_user(need="something with dragons and knights for you", history=liked)
    outs, _ = explain_many(engine, PromptRegistry(), requests_for([user], items_per_user=1))
    assert outs[0].source == "template" and reason in (outs[0].note or ""), outs[0].note


def test_worked_examples_come_from_the_batch_items_and_never_show_the_justified_ones() -> None:
    targets = {c.id for c in CANDS[:3]}
    examples = fewshot_examples(CANDS, targets, 2, with_request=True)
    assert len(examples) == 2
    shown = {e["item"]["title"] for e in examples} | {e["liked"] for e in examples}
    assert not shown & {c.title for c in CANDS[:3]}
    assert examples[0]["need"] and examples[0]["answer"].startswith("For your request (")
    assert examples[1]["answer"].startswith("Like ")


# ------------------------------------------------------------------------------------------------ the check
ISSUE_ITEM = CANDS[1]


@pytest.mark.parametrize(
    ("text", "need", "reason"),
    [
        ("Heres an adventure for the whole family.", "a light-hearted animated adventure for the whole family",
         "names nothing of the item"),
        ("H}e don't care about the person, I don't have to care about the person.", "", "broken characters"),
        ("Book 1 is great \ufffd.", "", "broken characters"),
        ("Book 1 is a <b>Drama</b>.", "", "broken characters"),
        ("Like Earlier Book (Comedy, Book 1 adds", "", "unbalanced"),
        ("Book 1 adds Fantasy and Drama.", "", "does not have ('Fantasy')"),
    ],
)  # fmt: skip
def test_the_tighter_check_refuses_the_issue_examples(text: str, need: str, reason: str) -> None:
    ok, note = check_grounding(text, [], ISSUE_ITEM, make_user(need=need), CANDS, require_citation=False)
    assert not ok and reason in note, note


def test_an_echo_of_the_request_is_refused_even_when_the_item_has_the_word() -> None:
    item = make_candidates(1)[0].model_copy(deep=True)
    item.item.metadata["genres"] = ["Adventure", "Animation"]
    user = make_user(need="a light-hearted animated adventure for the whole family", history=[])
    ok, note = check_grounding("Heres an adventure for the whole family.", [], item, user, require_citation=False)
    assert not ok and "echoes the request" in note
    ok, note = check_grounding("Book 0 is an Adventure for the whole family.", [], item, user, require_citation=False)
    assert ok, note


def test_good_sentences_pass() -> None:
    user = make_user()
    for text in ["Like Earlier Book (Comedy), Book 1 adds Drama and Horror.", "A Horror story by Author 1."]:
        ok, note = check_grounding(text, [], ISSUE_ITEM, user, CANDS, require_citation=False)
        assert ok, (text, note)


# ------------------------------------------------------------------------------------------------ property
_GENRES = st.lists(st.sampled_from(["Comedy", "Drama", "Horror", "Sci-Fi", "War", "Film-Noir", "Romance"]),
                   min_size=0, max_size=4, unique=True)  # fmt: skip


def _item(genres: list[str], moods: list[str]) -> Any:
    from agent.schemas import CandidateItem

    item = Item(id="x", title="The Item (2001)", metadata={"genres": genres, "mood": moods, "year": 2001})
    return CandidateItem(item=item, candidate=Candidate(item_id="x", score=1.0, sources={}))


@settings(max_examples=150, deadline=None)
@given(
    item_genres=_GENRES,
    item_moods=st.lists(st.sampled_from(["dark", "cozy", "tense"]), max_size=2, unique=True),
    history=st.lists(st.tuples(_GENRES, st.sampled_from([None, 1.0, 3.0, 5.0])), min_size=0, max_size=6),
    need=st.sampled_from(["", "something dramatic", "a comedy or horror", "dark war films"]),
)
def test_the_evidence_never_names_a_value_the_item_lacks(
    item_genres: list[str], item_moods: list[str], history: list[tuple[list[str], float | None]], need: str
) -> None:
    item = _item(item_genres, item_moods)
    seen = [HistoryItem(title=f"Seen {i}", attributes={"genres": g}, rating=r) for i, (g, r) in enumerate(history)]
    user = UserContext(history=seen, need=need)
    liked = liked_history(user)
    evidence = choose_evidence(item, user, liked)
    for c in evidence.citations():
        assert value_in_field(c.value, item.item.metadata[c.field]), c
    assert evidence.liked is None or evidence.liked in {h.title for h in liked}
    prefix = evidence.prefix()
    for value in ["Comedy", "Drama", "Horror", "Sci-Fi", "War", "Film-Noir", "Romance", "dark", "cozy", "tense"]:
        named = re.search(rf"\({re.escape(value)}[,)]|, {re.escape(value)}[,)]", prefix) is not None
        assert not named or value in item_genres + item_moods, (prefix, value)


# ------------------------------------------------------------------------------------------------ real tiny models
@pytest.mark.slow
def test_base_model_gets_the_fewshot_layout_and_instruct_model_the_chat_template(
    tiny_model_dir: Path, tiny_chat_model_dir: Path
) -> None:
    from agent.llm.hf_local import HFEngine
    from agent.llm.prompting import encode_request

    reqs = requests_for([make_user()], items_per_user=2)
    base = HFEngine(tiny_settings(tiny_model_dir), str(tiny_model_dir))
    instruct = HFEngine(tiny_settings(tiny_chat_model_dir), str(tiny_chat_model_dir))
    assert base.has_chat_template() is False and instruct.has_chat_template() is True
    seen: dict[str, list[str]] = {"base": [], "instruct": []}
    for name, engine in (("base", base), ("instruct", instruct)):
        original = engine.generate

        def record(
            requests: Any, *a: Any, _name: str = name, _orig: Any = original, _e: Any = engine, **kw: Any
        ) -> Any:
            ids = [encode_request(_e.tokenizer, LLMRequest.of(r)) for r in requests]
            seen[_name] += [_e.tokenizer.decode(i) for i in ids]
            return _orig(requests, *a, **kw)

        engine.generate = record  # type: ignore[method-assign]
        outs, _ = explain_many(engine, PromptRegistry(), reqs)
        assert len(outs) == 2 and all(o.text for o in outs)  # random weights: template fallback, never an error
        assert {o.layout for o in outs} == {"fewshot" if name == "base" else "chat"}
    assert seen["base"] and all(t.rstrip().endswith(("Romance),", "Comedy),")) or "\nWhy: " in t for t in seen["base"])
    assert not any("User:" in t or "<|user|>" in t for t in seen["base"])  # plain few-shot text, no chat roles
    assert seen["instruct"] and all("<|system|>" in t and "<|user|>" in t for t in seen["instruct"])
