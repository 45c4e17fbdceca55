"""Every built-in template renders for every kind of catalog, and the task-specific shapes hold."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prompt_examples import BUILTINS, CATALOGS, MOVIES, PRODUCTS, variables_for

from prompts import BUILTIN_DIR, PromptRegistry, RenderedPrompt


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)  # the common prefix of all strings is that of the extremes
    i = 0
    while i < min(len(first), len(last)) and first[i] == last[i]:
        i += 1
    return first[:i]


def _titles_used(name: str, variables: dict[str, Any]) -> list[str]:
    if name in {"rank_listwise", "rank_options"}:
        return [c["title"] for c in variables["candidates"]]
    if name == "rank_pointwise":
        return [variables["candidate"]["title"]]
    if name in {"explain", "enrich_item"}:
        return [variables["item"]["title"]]
    if name == "chat_reply":
        return [i["title"] for i in variables["items"]]
    if name in {"user_profile", "propose_items"}:
        return [h["title"] for h in variables["history"]] if "history" in variables else list(variables["liked"])
    return []


@pytest.mark.parametrize("catalog", sorted(CATALOGS))
@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_renders_for_every_catalog(registry: PromptRegistry, name: str, catalog: str) -> None:
    variables = variables_for(name, CATALOGS[catalog])
    rendered = registry.render(name, variables)
    template = registry.get(name)
    assert isinstance(rendered, RenderedPrompt)
    assert rendered.version_id == template.version_id and rendered.task == template.task
    roles = [m.role for m in rendered.messages]
    assert roles[:2] == ["system", "user"]
    assert all(m.content.strip() == m.content or m.role == "assistant" for m in rendered.messages)
    assert rendered.text == "\n\n".join(m.content for m in rendered.messages)
    for title in _titles_used(name, variables):
        assert title in rendered.text
    # nothing leaked from Jinja or Python reprs, no runaway blank lines
    for marker in ("{%", "{{", "Undefined", "None", "['", "{'", "\n\n\n"):
        assert marker not in rendered.text
    assert rendered.model_dump()["messages"][0]["role"] == "system"


def test_builtins_do_not_mention_a_particular_catalog() -> None:
    words = re.compile(
        r"\b(movies?|films?|books?|novels?|authors?|directors?|actors?|genres?|products?|movielens|amazon|imdb|"
        r"goodreads)\b",
        re.IGNORECASE,
    )
    for path in sorted(BUILTIN_DIR.glob("*.j2")):
        found = words.findall(path.read_text(encoding="utf-8"))
        assert not found, f"{path.name} mentions {found}"


def test_json_templates_declare_a_buildable_schema(registry: PromptRegistry) -> None:
    formats = {t.name: t.output.format for t in (registry.get(n) for n in BUILTINS)}
    assert formats == {
        "rank_listwise": "json",
        "rank_options": "option_label",
        "rank_pointwise": "yes_no",
        "explain": "json",
        "extract_preferences": "json",
        "chat_reply": "text",
        "enrich_item": "json",
        "user_profile": "text",
        "propose_items": "json",
    }
    listwise = registry.get("rank_listwise").output_schema(["a", "b"], 1)
    assert listwise is not None and listwise["properties"]["ranking"]["maxItems"] == 1
    assert registry.get("explain").output_schema(["genres"]) is not None
    assert registry.get("extract_preferences").output_schema() is not None
    assert registry.get("enrich_item").output_schema() is not None
    assert registry.get("propose_items").output_schema(3)["properties"]["items"]["maxItems"] == 3
    assert registry.get("chat_reply").output_schema() is None


def test_rank_options_ends_with_the_label_prefix(registry: PromptRegistry) -> None:
    rendered = registry.render("rank_options", variables_for("rank_options", PRODUCTS))
    assert rendered.text.endswith("Answer: (")
    assert rendered.messages[-1].role == "assistant"
    assert rendered.assistant_prefix == "Answer: ("
    labels = re.findall(r"^Option \(([A-Z])\)$", rendered.text, flags=re.MULTILINE)
    assert labels == ["A", "B", "C"]
    # every option block follows its label, in order
    positions = [rendered.text.index(f"title: {c['title']}") for c in PRODUCTS["candidates"]]
    assert positions == sorted(positions)


def test_rank_options_respects_given_labels(registry: PromptRegistry) -> None:
    candidates = [dict(c, label=label) for c, label in zip(MOVIES["candidates"], "XYZ", strict=True)]
    rendered = registry.render("rank_options", {"history": [], "candidates": candidates})
    assert re.findall(r"^Option \(([A-Z])\)$", rendered.text, flags=re.MULTILINE) == ["X", "Y", "Z"]


@pytest.mark.parametrize("catalog", sorted(CATALOGS))
def test_rank_pointwise_shares_the_user_prefix(registry: PromptRegistry, catalog: str) -> None:
    data = CATALOGS[catalog]
    renders = [
        registry.render("rank_pointwise", {"history": data["history"], "need": data["need"], "candidate": c})
        for c in data["candidates"][:3]
    ]
    texts = [r.text for r in renders]
    assert len(set(texts)) == 3
    common = _common_prefix(texts)
    candidate_block = texts[0].index("<<<CANDIDATE>>>")
    assert len(common) >= candidate_block  # system + whole user context are byte-identical
    assert common.endswith("# The candidate\n<<<CANDIDATE>>>\ntitle: ")  # (the example titles differ at char 1)
    for history_item in data["history"]:
        assert history_item["title"] in common
    if data["need"]:
        assert data["need"] in common
    # chat form: same system message, user messages share the prefix up to the candidate
    assert len({r.messages[0].content for r in renders}) == 1
    users = [r.messages[1].content for r in renders]
    assert len(_common_prefix(users)) >= users[0].index("<<<CANDIDATE>>>")
    assert all(r.text.endswith("Answer (Yes or No):") for r in renders)


def test_rank_listwise_lists_ids_and_count(registry: PromptRegistry) -> None:
    variables = variables_for("rank_listwise", PRODUCTS) | {"k": 10}
    text = registry.render("rank_listwise", variables).text
    assert re.findall(r"^id: (\S+)$", text, flags=re.MULTILINE) == [c["id"] for c in PRODUCTS["candidates"]]
    assert "exactly 3 entries" in text  # k is capped at the number of candidates
    assert '{"ranking": [{"id": ' in text
    assert registry.render("rank_listwise", variables | {"k": 2}).text.count("exactly 2 entries") == 1


def test_empty_history_and_conversation_are_said_explicitly(registry: PromptRegistry) -> None:
    text = registry.render("rank_options", {"history": [], "candidates": MOVIES["candidates"]}).text
    assert "No interaction history is known" in text
    text = registry.render("extract_preferences", {"conversation": [], "message": "hi"}).text
    assert "first message of the conversation" in text
    assert '"field" is one of' not in text  # no fields given -> no field list


def test_explain_lists_citable_fields(registry: PromptRegistry) -> None:
    text = registry.render("explain", variables_for("explain", MOVIES)).text
    assert '"field" is one of: genres, year.' in text


def test_multiline_text_keeps_paragraphs(registry: PromptRegistry) -> None:
    item = PRODUCTS["candidates"][1]
    text = registry.render("enrich_item", {"item": item}).text
    assert "text: Minimalist wireless illuminated keyboard.\nSmart backlighting.\n\nUSB-C charging." in text
