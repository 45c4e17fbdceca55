"""The preference extraction's few-shot layout (base models): worked examples from the catalog's own values, the
prefix-friendly order, the layout picked like explain's, one engine call with the schema; on real tiny models the
base model gets the few-shot text and the instruct model its chat template."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.chat.catalog import CatalogIndex
from agent.chat.extract import EXTRACT_TEMPLATE, ExtractInput, PreferenceExtractor
from agent.chat.extract_examples import empty_answer, extraction_examples
from agent.llm.base import Generation, LLMRequest, OptionScores, RequestLike, SchemaArg
from agent.settings import load_settings
from prompts import PromptRegistry, preferences_schema
from retrieval.types import Item

from chat_fixtures import book_items
from testkit import tiny_settings

# a made-up catalog in another domain: gadgets with a brand, categories and a price
GADGETS = [
    Item(
        id=f"g{i}",
        title=f"{name} Mark {i}",
        texts={"blurb": f"A {cat} by {brand}."},
        metadata={"brand": brand, "categories": [cat, "portable"] if i % 2 else [cat], "price": 20 + 15 * i},
    )
    for i, (name, brand, cat) in enumerate(
        [
            ("Zephyr Kettle", "Aldor", "kitchen"),
            ("Quill Lamp", "Brightwell", "lighting"),
            ("Nimbus Speaker", "Aldor", "audio"),
            ("Tundra Blender", "Corvo", "kitchen"),
            ("Pebble Radio", "Brightwell", "audio"),
            ("Lumen Strip", "Corvo", "lighting"),
        ]
    )
]


def _catalog_words(items: Sequence[Item]) -> tuple[set[str], set[tuple[str, str]], set[str]]:
    index = CatalogIndex(items)
    titles = {it.title.split(" (")[0] for it in items}
    pairs = {
        (f, v) for name, info in index.fields.items() if info.kind == "values" for v in info.counts for f in [name]
    }
    return titles, pairs, set(index.numeric_fields())


@pytest.mark.parametrize("items", [book_items(), GADGETS], ids=["books", "gadgets"])
def test_examples_use_only_the_catalogs_own_titles_fields_and_values(items: list[Item]) -> None:
    index = CatalogIndex(items)
    examples = extraction_examples(index)
    titles, pairs, numeric = _catalog_words(items)
    schema = preferences_schema(index.field_names())
    assert 3 <= len(examples) <= 5 and examples[-1]["answer"] == empty_answer()
    kinds = set()
    for ex in examples:
        answer = ex["answer"]
        jsonschema.validate(answer, schema)  # every worked answer is one the structured output allows
        for key in ("liked_titles", "disliked_titles"):
            for title in answer[key]:
                assert title in titles and title in ex["message"], (key, title)
                assert len(index.lookup_title(title)) == 1  # names exactly one item
                kinds.add(key)
        attrs = answer["liked_attributes"] + answer["disliked_attributes"]
        attrs += answer["constraints"]["exclude"] + answer["constraints"]["require"]
        for pair in attrs:
            assert (pair["field"], pair["value"]) in pairs and pair["value"] in ex["message"]
            kinds.add("attribute")
        for span in answer["constraints"]["ranges"]:
            assert span["field"] in numeric and str(span["min"]) in ex["message"]
            values = index.fields[span["field"]].numbers
            assert min(values) <= span["min"] <= max(values)
            kinds.add("range")
        for entry in answer["avoid"]:
            assert any(entry["concept"] == v.casefold() for _, v in pairs) and entry["concept"] in ex["message"]
            kinds.add("avoid")
    assert kinds == {"liked_titles", "disliked_titles", "attribute", "range", "avoid"}
    assert extraction_examples(index) == examples  # deterministic: the same prefix for every turn


def test_a_catalog_without_values_or_numbers_gets_the_examples_it_can_have() -> None:
    items = [Item(id=f"x{i}", title=f"Plain Thing Number {i}", texts={}, metadata={}) for i in range(3)]
    examples = extraction_examples(CatalogIndex(items))
    assert [bool(e["answer"]["liked_titles"]) for e in examples] == [True, False, False]
    assert examples[1]["answer"]["disliked_titles"] and examples[-1]["answer"] == empty_answer()
    assert extraction_examples(CatalogIndex(items), 0) == []


def test_both_layouts_render_from_the_same_variables_in_a_prefix_friendly_order() -> None:
    registry = PromptRegistry()
    template = registry.get(EXTRACT_TEMPLATE)
    assert template.layouts == ("chat", "fewshot") and template.version == "1.3"
    index = CatalogIndex(book_items())
    extractor = PreferenceExtractor(index, registry)
    turns: list[dict[str, str]] = []
    texts = []
    for message in ("I want a mystery", "not that one, something older", "the second one sounds good"):
        prompt = extractor.prompts([ExtractInput(message, list(turns))], "fewshot")[0]
        chat = extractor.prompts([ExtractInput(message, list(turns))], "chat")[0]
        assert prompt.layout == "fewshot" and prompt.engine_input() == prompt.text
        assert prompt.stop == ["\n\n"] and prompt.max_tokens == template.fewshot.max_tokens  # type: ignore[union-attr]
        assert prompt.text.endswith(f"Message: {message}\nJSON:")
        assert chat.layout == "chat" and chat.engine_input()[0]["role"] == "system"  # type: ignore[index]
        texts.append(prompt.text)
        turns += [{"role": "user", "content": message}, {"role": "assistant", "content": "How about these?"}]
    header = texts[0].rsplit("\n\nMessage:", 1)[0]
    for ex in extractor.examples:  # compact, as structured output writes JSON, so the answer continues the pattern
        assert f"\nJSON:{json.dumps(ex['answer'], separators=(',', ':'))}\n" in texts[0]
    assert "You track what a user wants" in header and header.count("\nJSON:{") == len(extractor.examples)
    for earlier, later in itertools.pairwise(texts[1:]):  # each turn's prompt extends the previous one
        assert later.startswith(earlier.rsplit("\n\nMessage:", 1)[0])
    assert all(t.startswith(header) for t in texts)


class _Engine:
    """A fake engine: answers every request with ``answer``; records requests, schema and stop."""

    backend = "fake"
    model_id = "fake"

    def __init__(self, answer: dict[str, Any], chat_template: bool | None) -> None:
        self.answer = answer
        self.chat_template = chat_template
        self.calls: list[dict[str, Any]] = []

    def generate(self, requests: Sequence[RequestLike], *, json_schema: SchemaArg = None, max_tokens: int = 256,
                 temperature: float = 0.0, seed: int = 0,
                 stop: Sequence[str] | None = None) -> list[Generation]:  # fmt: skip
        self.calls.append({"requests": list(requests), "schema": json_schema, "stop": stop, "max_tokens": max_tokens})
        text = json.dumps(self.answer)
        return [Generation(text=text, parsed=self.answer, prompt_tokens=1, completion_tokens=1, finish_reason="stop")
                for _ in requests]  # fmt: skip

    def score_options(self, requests: Sequence[RequestLike], labels: Sequence[str]) -> list[OptionScores]:
        raise AssertionError("not used")

    def has_chat_template(self) -> bool | None:
        return self.chat_template


@pytest.mark.parametrize(
    ("fmt", "chat_template", "expected"),
    [("auto", False, "fewshot"), ("auto", True, "chat"), ("auto", None, "chat"), ("fewshot", True, "fewshot"),
     ("chat", False, "chat")],
)  # fmt: skip
def test_the_extraction_layout_is_resolved_as_explains_and_sent_in_one_call(
    fmt: str, chat_template: bool | None, expected: str
) -> None:
    index = CatalogIndex(book_items())
    title = book_items()[3].title
    answer = empty_answer()
    answer["liked_titles"] = [title, "The Invented Book"]
    answer["disliked_titles"] = [book_items()[5].title]  # not in the message: dropped by the check
    engine = _Engine(answer, chat_template)
    settings = load_settings(prompt_format=fmt, chat_extract_max_tokens=300)
    extractor = PreferenceExtractor(index, PromptRegistry())
    record: list[str] = []
    inputs = [ExtractInput(f"I loved {title}"), ExtractInput("hello there")]
    out = extractor.extract(engine, inputs, settings, record=record)  # type: ignore[arg-type]
    assert len(engine.calls) == 1 and len(engine.calls[0]["requests"]) == 2
    call = engine.calls[0]
    assert call["schema"] == preferences_schema(index.field_names())
    if expected == "fewshot":
        assert all(isinstance(r, str) and r.endswith("JSON:") for r in call["requests"])
        assert call["stop"] == ["\n\n"] and call["max_tokens"] == 256  # the template's cap under the setting's
    else:
        assert all(isinstance(r, list) and r[0]["role"] == "system" for r in call["requests"])
        assert call["stop"] is None and call["max_tokens"] == 300
    first = out[0]
    assert not isinstance(first, str)
    assert first.liked_ids == index.lookup_title(title) and first.disliked_ids == []
    assert record == [json.dumps(answer)] * 2


# ------------------------------------------------------------------------------------------------ real tiny models
@pytest.mark.slow
def test_base_model_gets_the_fewshot_extraction_and_instruct_model_the_chat_template(
    tiny_model_dir: Path, tiny_chat_model_dir: Path
) -> None:
    from agent.llm.hf_local import HFEngine
    from agent.llm.prompting import encode_request

    index = CatalogIndex(book_items())
    inputs = [ExtractInput("I loved The Silent Harbor", [{"role": "user", "content": "hi"}])]
    seen: dict[str, list[str]] = {"base": [], "instruct": []}
    for name, folder in (("base", tiny_model_dir), ("instruct", tiny_chat_model_dir)):
        settings = tiny_settings(folder, chat_extract_max_tokens=16)
        engine = HFEngine(settings, str(folder))
        assert engine.has_chat_template() is (name == "instruct")
        original = engine.generate

        def record(requests: Any, *a: Any, _name: str = name, _orig: Any = original, _e: Any = engine,
                   **kw: Any) -> Any:  # fmt: skip
            seen[_name] += [_e.tokenizer.decode(encode_request(_e.tokenizer, LLMRequest.of(r))) for r in requests]
            return _orig(requests, *a, **kw)

        engine.generate = record  # type: ignore[method-assign]
        extractor = PreferenceExtractor(index, PromptRegistry())
        assert extractor.layout(settings, engine) == ("fewshot" if name == "base" else "chat")
        out = extractor.extract(engine, inputs, settings)
        assert len(out) == 1  # random weights: an update or a failure reason, never an exception
    assert seen["base"] and all(t.rstrip().endswith("Message: I loved The Silent Harbor\nJSON:") for t in seen["base"])
    assert not any("<|user|>" in t or "<|system|>" in t for t in seen["base"])  # plain few-shot text, no chat roles
    assert seen["instruct"] and all("<|system|>" in t and "<|user|>" in t for t in seen["instruct"])
    assert not any("\nJSON:{" in t for t in seen["instruct"])


def test_a_fewshot_layout_that_auto_may_not_pick_is_used_only_when_asked(tmp_path: Path) -> None:
    from agent.explain_fewshot import resolve_layout

    source = PromptRegistry().get(EXTRACT_TEMPLATE).path.read_text(encoding="utf-8")
    assert "fewshot:\n  block: fewshot\n" in source
    edited = source.replace("fewshot:\n  block: fewshot\n", "fewshot:\n  block: fewshot\n  auto: false\n")
    edited = edited.replace("name: extract_preferences\n", "name: extract_noauto\n")
    (tmp_path / "extract_noauto.j2").write_text(edited, encoding="utf-8")
    registry = PromptRegistry([tmp_path])
    base = _Engine(empty_answer(), chat_template=False)
    assert registry.get("extract_noauto").fewshot.auto is False  # type: ignore[union-attr]
    assert resolve_layout("auto", base, registry, "extract_noauto") == "chat"  # type: ignore[arg-type]
    assert resolve_layout("fewshot", base, registry, "extract_noauto") == "fewshot"  # type: ignore[arg-type]
    assert resolve_layout("auto", base, PromptRegistry(), "explain") == "fewshot"  # type: ignore[arg-type]
