"""Enrichment with a scripted engine on a real embedded Chroma store and a real SQLite cache: thin detection,
report counts, failures, the original text kept, re-embedding, collection metadata, --off, ingest, copies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.enrich import enrich_collection, enrich_command, is_thin, parse_enrichment
from agent.errors import EngineError, InputError
from agent.llm.base import LLMRequest
from agent.llm.cache import GenerationCache
from agent.settings import Settings, load_settings
from prompts import PromptRegistry
from retrieval.store import ENRICH_DESCRIPTION_KEY, Store, item_document
from retrieval.types import Item

from enrich_helpers import MOVIES, HashEmbedder, enrich_answer, make_store, prompt_kind, scripted
from fakes import FakeEngine, text_of

NAME = "shop"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path, collection=NAME, enrich_batch_size=3)


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def store(settings: Settings, embedder: HashEmbedder) -> Store:
    return make_store(settings.home, NAME, embedder)


@pytest.fixture(scope="module")
def registry() -> PromptRegistry:
    return PromptRegistry()


def run(settings: Settings, store: Store, embedder: HashEmbedder, engine: FakeEngine, **kw: object):  # type: ignore[no-untyped-def]
    coll = store.open_for(embedder, NAME)
    return enrich_collection(coll, engine, PromptRegistry(), settings, embedder=embedder, progress=False, **kw)  # type: ignore[arg-type]


def test_thin_means_no_free_text_whatever_the_fields() -> None:
    assert is_thin(Item(id="1", title="Heat (1995)", metadata={"genres": ["Action"], "year": 1995}), 40)
    assert is_thin(Item(id="2", title="Book", texts={"blurb": "  tbd  "}, metadata={"authors": ["A"]}), 40)
    assert not is_thin(Item(id="3", title="Shoe", texts={"description": "x" * 40}), 40)
    assert not is_thin(Item(id="4", title="Anything"), 0)  # 0 = nothing is thin (only --all enriches)


def test_parse_enrichment_cleans_and_refuses_bad_output() -> None:
    ok = parse_enrichment({"description": "  A  quiet\nstory. ", "keywords": ["Space", "space", " ", "crew."]},
                          max_chars=400, max_keywords=8)  # fmt: skip
    assert ok is not None and ok.description == "A quiet story." and ok.keywords == ["Space", "crew"]
    assert parse_enrichment('{"description": "x", "keywords": ["a", "b", "c"]}', max_chars=400, max_keywords=2)
    assert parse_enrichment("not json", max_chars=400, max_keywords=8) is None
    assert parse_enrichment({"description": "<one or two sentences>", "keywords": ["a"]}, max_chars=400,
                            max_keywords=8) is None  # fmt: skip
    assert parse_enrichment({"description": "fine", "keywords": [" "]}, max_chars=400, max_keywords=8) is None
    assert parse_enrichment({"description": "x" * 50, "keywords": ["a"]}, max_chars=40, max_keywords=8) is None


def test_parse_enrichment_refuses_output_that_adds_nothing_to_the_item() -> None:
    """What a small base model does when it has nothing to say: restate the title, name the prompt's fields as
    keywords, loop on one sentence. Generic rules (the item's own field names), no catalog-specific word lists."""
    item = Item(id="9", title="Heavy (1995)", metadata={"genres": ["Drama"], "year": 1995})
    check = {"max_chars": 400, "max_keywords": 8, "item": item}
    assert parse_enrichment({"description": "Heavy (1995)", "keywords": ["drama"]}, **check) is None  # type: ignore[arg-type]
    assert parse_enrichment({"description": "heavy", "keywords": ["drama"]}, **check) is None  # type: ignore[arg-type]
    # keywords that only name a field the prompt showed (or its singular), and one-letter keywords, are dropped
    only_fields = {"description": "A slow family drama.", "keywords": ["genre", "Year", "title", "keywords", "H"]}
    assert parse_enrichment(only_fields, **check) is None  # type: ignore[arg-type]
    looped = {"description": "A quiet family drama. It is about grief. A quiet family drama. It is about grief. It",
              "keywords": ["genre", "grief"]}  # fmt: skip
    ok = parse_enrichment(looped, **check)  # type: ignore[arg-type]
    assert ok is not None and ok.description == "A quiet family drama. It is about grief. It"
    assert ok.keywords == ["grief"]
    # without the item (no context) the same outputs are only checked for shape
    assert parse_enrichment({"description": "Heavy (1995)", "keywords": ["genre"]}, max_chars=400, max_keywords=8)


def test_parse_enrichment_needs_new_words_and_cuts_phrase_loops() -> None:
    """Outputs the default model really gave on MovieLens (session 6): the title reordered or wrapped in filler,
    a phrase looping inside one sentence, keywords copied from the title or from the prompt's own instructions."""
    omega = Item(id="1", title="Omega Code, The (1999)", metadata={"genres": ["Action"]})
    check = {"max_chars": 400, "max_keywords": 8, "instructions": "Then give 3 to 8 short keywords someone might"}
    reordered = {"description": "The (1999) Omega Code, The (1999)", "keywords": ["Action", "The", "(1999)", "Omega"]}
    assert parse_enrichment(reordered, item=omega, **check) is None  # type: ignore[arg-type]
    wanderlust = Item(id="2", title="Wanderlust (2012)", metadata={"genres": ["Comedy"]})
    filler = {"description": "This is a Wanderlust (2012) item. It is a comedy.", "keywords": ["comedy", "road"]}
    assert parse_enrichment(filler, item=wanderlust, **check) is None  # type: ignore[arg-type]
    # the same words are enough with a lower threshold (a setting: enrich_min_new_words)
    assert parse_enrichment(filler, item=wanderlust, min_new_words=2, **check) is not None  # type: ignore[arg-type]
    albino = Item(id="3", title="Albino Alligator (1996)", metadata={"genres": ["Crime"]})
    loop = {
        "description": "A hostage thriller set in a bar. It is very tense, very dark, very violent, very violent, "
        "very violent, very violent, very violent",
        "keywords": ["very tense, very tense, very", "3 to 8 short keywords", "albino alligator", "hostage"],
    }
    ok = parse_enrichment(loop, item=albino, **check)  # type: ignore[arg-type]
    assert ok is not None
    assert ok.description == "A hostage thriller set in a bar. It is very tense, very dark, very violent"
    assert ok.keywords == ["very tense", "hostage"]  # title words and the prompt's own phrase dropped


def test_enrich_thin_items_keeps_originals_and_reembeds(settings: Settings, store: Store,
                                                        embedder: HashEmbedder) -> None:  # fmt: skip
    coll = store.open_for(embedder, NAME)
    before_items = coll.get_items(coll.ids())
    before_vectors = coll.get_embeddings(coll.ids())
    engine = FakeEngine(scripted())
    report = run(settings, store, embedder, engine)
    assert report.items_seen == 11 and report.thin == 9 and report.skipped == 2  # 8 movies + the "N/A" product
    assert report.selected == 9 and report.generated == 9 and report.cached == 0
    assert report.enriched == 9 and report.failed == {} and report.embedded == 9
    assert report.prompt_tokens > 0 and report.completion_tokens > 0
    assert report.engine_calls == 3  # batches of 3
    assert [prompt_kind(r) for c in engine.calls for r in c.requests] == ["enrich"] * 9
    assert all(c.schemas[0] is not None for c in engine.calls)  # structured output asked
    # the original fields are exactly what was ingested; the enrichment is its own field
    assert coll.get_items(coll.ids()) == before_items
    enrichments = coll.get_enrichments(coll.ids())
    assert set(enrichments) == {"m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "p3"}
    assert enrichments["m1"].description == "About Heat (1995): spaceship voyage."
    assert enrichments["m1"].prompt_version.startswith("enrich_item@") and enrichments["m1"].model == "fake-model"
    # documents re-embedded with the enrichment; items with text untouched
    after = coll.get_embeddings(coll.ids())
    assert not np.allclose(after["m1"], before_vectors["m1"])
    assert np.allclose(after["p1"], before_vectors["p1"])
    got = coll.raw.get(ids=["m1"], include=["documents"])
    assert got["documents"][0] == item_document(before_items["m1"]) + (
        "\nDescription: About Heat (1995): spaceship voyage.\nKeywords: spaceship"  # the title as keyword: dropped
    )
    info = coll.enrichment_info()
    assert info is not None and info.on and info.items == 9 and info.prompt_version == report.prompt_version
    assert info.model == "fake-model" and info.at
    assert report.enriched_total == 9


def test_second_run_generates_nothing(settings: Settings, store: Store, embedder: HashEmbedder) -> None:
    first = run(settings, store, embedder, FakeEngine(scripted()))
    engine = FakeEngine(scripted())
    embedded_before = embedder.texts_embedded
    second = run(settings, store, embedder, engine)
    assert first.generated == 9
    assert second.generated == 0 and second.cached == second.selected == 9 and second.enriched == 9
    assert second.embedded == 0 and engine.calls == []
    assert embedder.texts_embedded == embedded_before
    assert second.prompt_tokens == 0
    forced = run(settings, store, embedder, FakeEngine(scripted()), force=True)
    assert forced.generated == 9 and forced.cached == 0 and forced.embedded == 0  # same text: nothing to re-embed


def test_stricter_checks_withdraw_an_earlier_enrichment_without_llm_calls(settings: Settings, store: Store,
                                                                           embedder: HashEmbedder) -> None:  # fmt: skip
    """Outputs are re-checked on every run (the cache keeps the raw output): an enrichment stored by an earlier
    run whose output the current checks refuse is removed and the original document re-embedded, never left."""
    coll = store.open_for(embedder, NAME)
    original = coll.get_embeddings(coll.ids())
    first = run(settings, store, embedder, FakeEngine(scripted()))
    assert first.enriched == 9 and first.withdrawn == 0
    stricter = settings.model_copy(update={"enrich_min_new_words": 4})  # "About X: spaceship voyage." adds 3
    engine = FakeEngine(scripted())
    second = run(stricter, store, embedder, engine)
    assert engine.calls == [] and second.cached == 9 and second.generated == 0
    assert second.enriched == 0 and second.failed == {"uninformative": 9} and second.withdrawn == 9
    assert second.embedded == 9 and second.enriched_total == 0
    assert coll.get_enrichments(coll.ids()) == {}
    back = coll.get_embeddings(coll.ids())
    assert all(np.allclose(back[i], original[i]) for i in original)
    third = run(stricter, store, embedder, FakeEngine(scripted()))
    assert third.withdrawn == 0 and third.embedded == 0  # nothing left to withdraw


def test_bad_output_is_counted_as_failed_and_never_stored(settings: Settings, store: Store,
                                                          embedder: HashEmbedder) -> None:  # fmt: skip
    def sometimes_bad(req: LLMRequest) -> str:
        text = text_of(req)
        if "Alien (1979)" in text:
            return '{"description": "cut off'  # not JSON: the engine raises for the batch, isolated by bisection
        if "Fargo" in text:
            return json.dumps({"description": "<one or two sentences>", "keywords": ["x"]})  # the placeholder
        if "Amelie" in text:  # valid JSON that only restates the title: counted apart, never stored
            return json.dumps({"description": "Amelie (2001)", "keywords": ["genres", "year"]})
        return enrich_answer(req)

    engine = FakeEngine(scripted(enrich=sometimes_bad))
    report = run(settings, store, embedder, engine)
    assert report.failed == {"invalid_output": 2, "uninformative": 1} and report.enriched == 6
    assert report.generated == 9 and set(report.failed_examples) == {"m3", "m6", "m7"}
    coll = store.open_for(embedder, NAME)
    stored = coll.get_enrichments(coll.ids())
    assert not {"m3", "m6", "m7"} & set(stored) and len(stored) == 6
    # deterministic failures are cached: a rerun costs no LLM call and reports the same
    again = FakeEngine(scripted(enrich=sometimes_bad))
    second = run(settings, store, embedder, again)
    assert again.calls == [] and second.cached == 9
    assert second.failed == {"invalid_output": 2, "uninformative": 1}


def test_engine_errors_are_not_cached_and_a_run_resumes(settings: Settings, store: Store,
                                                        embedder: HashEmbedder) -> None:  # fmt: skip
    """The engine dies after the first batch: that batch is stored and cached, the rest is tried next time."""
    calls = {"n": 0}

    def dying(req: LLMRequest) -> str:
        calls["n"] += 1
        if calls["n"] > 3:
            raise EngineError("engine died")
        return enrich_answer(req)

    first = run(settings, store, embedder, FakeEngine(scripted(enrich=dying)))
    assert first.enriched == 3 and sum(first.failed.values()) == 6
    assert all(k.startswith("engine_error") for k in first.failed)
    coll = store.open_for(embedder, NAME)
    assert len(coll.get_enrichments(coll.ids())) == 3
    engine = FakeEngine(scripted())
    second = run(settings, store, embedder, engine)
    assert second.cached == 3 and second.generated == 6 and second.enriched == 9 and second.failed == {}


def test_all_and_limit(settings: Settings, store: Store, embedder: HashEmbedder) -> None:
    limited = run(settings, store, embedder, FakeEngine(scripted()), limit=4)
    assert limited.selected == 4 and limited.beyond_limit == 5 and limited.generated == 4
    everything = run(settings, store, embedder, FakeEngine(scripted()), all_items=True)
    assert everything.selected == 11 and everything.skipped == 0 and everything.cached == 4
    assert everything.generated == 7 and everything.enriched_total == 11
    with pytest.raises(InputError):
        run(settings, store, embedder, FakeEngine(scripted()), limit=0)


def test_off_restores_the_original_embeddings_and_on_again_is_free(settings: Settings, store: Store,
                                                                   embedder: HashEmbedder) -> None:  # fmt: skip
    coll = store.open_for(embedder, NAME)
    original = coll.get_embeddings(coll.ids())
    run(settings, store, embedder, FakeEngine(scripted()))
    off = enrich_command(settings, off=True, progress=False, embedder=embedder, store=store)
    assert not off.on and off.restored == 9 and off.embedded == 9
    coll = store.open_for(embedder, NAME)
    restored = coll.get_embeddings(coll.ids())
    assert all(np.allclose(restored[i], original[i]) for i in original)
    assert coll.get_enrichments(coll.ids()) == {}
    metas = coll.get_metadata(coll.ids())
    assert not any(k.startswith("rc_enrich") for m in metas.values() for k in m)
    info = coll.enrichment_info()
    assert info is not None and not info.on and info.prompt_version.startswith("enrich_item@")
    engine = FakeEngine(scripted())
    on = enrich_command(settings, progress=False, engine=engine, embedder=embedder, store=store)
    assert on.generated == 0 and on.cached == 9 and on.embedded == 9 and engine.calls == []
    assert store.open_for(embedder, NAME).enrichment_info().on  # type: ignore[union-attr]
    with pytest.raises(InputError, match="--off"):
        enrich_command(settings, off=True, force=True, embedder=embedder, store=store)


def test_reingest_keeps_enrichment_of_unchanged_items_and_says_when_it_drops_it(
    settings: Settings, store: Store, embedder: HashEmbedder, tmp_path: Path
) -> None:
    from retrieval.ingest import ingest

    run(settings, store, embedder, FakeEngine(scripted()))
    rows: list[dict[str, object]] = [{"id": i, "title": t, "genres": "|".join(g), "year": y} for i, t, g, y in MOVIES]
    rows[0]["title"] = "Heat (1995) Director's Cut"  # m1 changes
    path = tmp_path / "movies.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    from retrieval.mapping import ColumnMapping

    mapping = ColumnMapping(metadata={"genres": "list", "year": "int"})
    report = ingest(path, store_config=settings.store_config(), embed_config=settings.embed_config(progress=False),
                    mapping=mapping, collection=NAME, embedder=embedder, store=store)  # fmt: skip
    assert report.store is not None
    assert report.store.enrichment_kept == 7 and report.store.enrichment_dropped == 1
    assert report.store.unchanged == 7 and report.store.embedded == 1
    notes = {k: v.count for k, v in report.notes.items()}
    assert notes["LLM enrichment kept on unchanged items"] == 7
    dropped = next(v for k, v in report.notes.items() if "removed" in k)
    assert dropped.count == 1 and dropped.examples == ["m1"]
    coll = store.open_for(embedder, NAME)
    stored = coll.get_enrichments(coll.ids())
    assert "m1" not in stored and "m2" in stored
    again = run(settings, store, embedder, FakeEngine(scripted()))
    assert again.generated == 1 and again.cached == 8  # only the changed item costs an LLM call


def test_copy_into_leaves_the_source_intact_and_resumes(settings: Settings, store: Store,
                                                        embedder: HashEmbedder) -> None:  # fmt: skip
    src = store.open_for(embedder, NAME)
    before = src.get_embeddings(src.ids())
    engine = FakeEngine(scripted())
    report = enrich_command(settings, into="shop-enriched", progress=False, engine=engine, embedder=embedder,
                            store=store)  # fmt: skip
    assert report.copied_from == NAME and report.collection == "shop-enriched" and report.enriched == 9
    src = store.open_for(embedder, NAME)
    assert src.get_enrichments(src.ids()) == {} and src.enrichment_info() is None
    assert all(np.allclose(src.get_embeddings([i])[i], before[i]) for i in before)
    dst = store.open_for(embedder, "shop-enriched")
    assert dst.count() == 11 and len(dst.get_enrichments(dst.ids())) == 9
    again = enrich_command(settings, into="shop-enriched", progress=False, engine=FakeEngine(scripted()),
                           embedder=embedder, store=store)  # fmt: skip
    assert again.generated == 0 and again.cached == 9
    make_store(settings.home, "other", embedder)
    with pytest.raises(InputError, match="not a copy"):
        enrich_command(settings, into="other", progress=False, engine=engine, embedder=embedder, store=store)


def test_unknown_collection_is_a_clear_error(settings: Settings, store: Store, embedder: HashEmbedder) -> None:
    with pytest.raises(InputError, match="does not exist") as info:
        enrich_command(settings, collection="nope", engine=FakeEngine(), embedder=embedder, store=store)
    assert "recagent ingest" in info.value.hint


def test_enrichment_never_leaks_into_item_fields(settings: Settings, store: Store, embedder: HashEmbedder) -> None:
    run(settings, store, embedder, FakeEngine(scripted()))
    coll = store.open_for(embedder, NAME)
    meta = coll.get_metadata(["m1"])["m1"]
    assert ENRICH_DESCRIPTION_KEY in meta
    item = coll.get_items(["m1"])["m1"]
    assert set(item.metadata) == {"genres", "year"} and item.texts == {}


def test_generation_cache_is_persistent(tmp_path: Path) -> None:
    cache = GenerationCache(tmp_path / "c" / "x.sqlite")
    cache.put_many([("a", {"text": "é", "n": 1})])
    cache.close()
    again = GenerationCache(tmp_path / "c" / "x.sqlite")
    assert again.get_many(["a", "b"]) == {"a": {"text": "é", "n": 1}} and len(again) == 1
