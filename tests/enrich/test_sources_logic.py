"""Profile source and generate-then-ground with a scripted engine, through the real Recommender on a real embedded
Chroma store; profile cleaning; evaluator variants that switch the LLM sources on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.ground import Grounder, Proposal, parse_proposals
from agent.llm.cache import GenerationCache
from agent.pipeline import Recommender, RecommendRequest
from agent.profiles import build_profiles, clean_profile, llm_sources_on
from agent.schemas import HistoryItem, UserContext
from agent.settings import Settings, load_settings
from eval.variants import parse_variant, variant_settings
from prompts import PromptRegistry
from retrieval.store import Store
from retrieval.types import Constraints, HistoryEntry

from enrich_helpers import HashEmbedder, make_store, prompt_kind, scripted
from fakes import FakeEngine

NAME = "shop"
HISTORY = [HistoryEntry(item_id="m3", rating=5.0), HistoryEntry(item_id="m4", rating=4.5)]
REAL = [  # proposals that exist in the catalog (exact, normalised, by similarity) and ones that do not
    {"title": "The Matrix", "year": "1999", "description": "hackers"},  # normalised "Matrix, The (1999)"
    {"title": "Gravity", "year": "", "description": "astronauts adrift"},
    {"title": "Zorblax Quantum Nebula Heist", "year": "2031", "description": "glorp flarn quibble"},
    {"title": "Heat", "year": "1995", "description": "a heist"},
    {"title": "Heat (1995)", "year": "1995", "description": "again"},  # duplicate of the previous one
    {"title": "Heat", "year": "1970", "description": "a different Heat that is not in the catalog"},
]


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def home(tmp_path: Path, embedder: HashEmbedder) -> Path:
    make_store(tmp_path, NAME, embedder)
    return tmp_path


def recommender(home: Path, embedder: HashEmbedder, engine: FakeEngine | None, **kw: Any) -> Recommender:
    settings = load_settings(home=home, collection=NAME, rerank_strategy="retrieval", explain_mode="template", **kw)
    store = Store(settings.store_config())
    return Recommender(settings, engine=engine, embedder=embedder, store=store)  # type: ignore[arg-type]


def test_clean_profile() -> None:
    text, reason = clean_profile("Profile: Likes slow-burn sci-fi with strong leads.\n\n# The user\nignored", 600)
    assert text == "Likes slow-burn sci-fi with strong leads." and reason is None
    assert clean_profile("   \n ", 600) == (None, "empty_output")
    assert clean_profile("the the the the the the", 600) == (None, "garbage_output")
    assert clean_profile("{} [] 12 34 ###", 600) == (None, "garbage_output")
    assert clean_profile("ok then", 600) == (None, "garbage_output")
    long = "Likes quiet dramas. " * 10 + "And more words without an end"
    clipped, _ = clean_profile(long, 100)
    assert clipped is not None and len(clipped) <= 100 and clipped.endswith(".")
    words, _ = clean_profile("word " * 60, 100)
    assert words is None  # one word repeated
    plain, _ = clean_profile(" ".join(f"{'abcdefghij'[i % 10]}{'klmnopqrst'[i // 10]}word" for i in range(40)), 60)
    assert plain is not None and plain.endswith("…") and len(plain) <= 61


def test_build_profiles_batches_caches_and_skips(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    engine = FakeEngine(scripted())
    users = [
        UserContext(user_id="a", history=[HistoryItem(title="Alien (1979)", attributes={"genres": ["Horror"]})]),
        UserContext(user_id="b", need="something calm"),
        UserContext(user_id="c"),  # nothing known: no LLM call
    ]
    cache = GenerationCache(tmp_path / "p.sqlite")
    first = build_profiles(engine, PromptRegistry(), users, settings, cache=cache)
    assert [p.status for p in first] == ["generated", "generated", "skipped"]
    assert first[2].reason == "no_information" and first[0].text and first[0].prompt_tokens > 0
    assert len(engine.calls) == 1 and len(engine.calls[0].requests) == 2  # one batch
    assert "Alien (1979)" in engine.calls[0].requests[0].messages[-1].content  # type: ignore[index]
    second = build_profiles(engine, PromptRegistry(), users, settings, cache=cache)
    assert [p.status for p in second] == ["cached", "cached", "skipped"] and len(engine.calls) == 1
    assert second[0].text == first[0].text
    none = build_profiles(None, PromptRegistry(), users[:1], settings, engine_error="server down")
    assert none[0].status == "failed" and none[0].reason == "engine_error: server down"
    garbage = build_profiles(FakeEngine(scripted(profile="{{{ ]]]")), PromptRegistry(), users[:1], settings)
    assert garbage[0].text is None and garbage[0].reason == "garbage_output"


def test_profile_weight_zero_means_no_llm_call(home: Path, embedder: HashEmbedder) -> None:
    engine = FakeEngine(scripted())
    rec = recommender(home, embedder, engine)
    result = rec.recommend(RecommendRequest(history=HISTORY, query="space", k=4))
    assert engine.calls == []
    assert result.profile is None and result.grounding is None and result.stage_tokens == {}
    assert all("profile" not in i.sources and "generated" not in i.sources for i in result.items)


def test_profile_source_appears_in_provenance(home: Path, embedder: HashEmbedder) -> None:
    engine = FakeEngine(scripted())
    rec = recommender(home, embedder, engine, fusion_weights={"semantic": 1.0, "item2item": 1.0, "profile": 1.0})
    result = rec.recommend(RecommendRequest(history=HISTORY, k=5))
    assert [prompt_kind(r) for c in engine.calls for r in c.requests] == ["profile"]
    assert result.profile == "Likes tense science fiction about spaceship crews and dislikes romantic comedies."
    assert result.profile_note == "generated"
    assert any("profile" in i.sources for i in result.items)
    assert result.stage_tokens["profile_prompt"] > 0 and result.prompt_tokens >= result.stage_tokens["profile_prompt"]
    assert any(v.startswith("user_profile@") for v in result.prompt_versions)
    assert "profile_batch" in result.timings_ms
    assert not {"m3", "m4"} & {i.item_id for i in result.items}  # seen items stay out


def test_explain_profile_without_the_source(home: Path, embedder: HashEmbedder) -> None:
    engine = FakeEngine(scripted())
    rec = recommender(home, embedder, engine)
    result = rec.recommend(RecommendRequest(history=HISTORY, k=4, explain_profile=True))
    assert result.profile is not None and "not a candidate source" in (result.profile_note or "")
    assert all("profile" not in i.sources for i in result.items)
    per_request = rec.recommend(RecommendRequest(history=HISTORY, k=4, source_weights={"profile": 2.0}))
    assert any("profile" in i.sources for i in per_request.items)


def test_profiles_for_many_requests_take_one_engine_call(home: Path, embedder: HashEmbedder) -> None:
    engine = FakeEngine(scripted())
    rec = recommender(home, embedder, engine, fusion_weights={"semantic": 1.0, "profile": 1.0})
    reqs = [RecommendRequest(history=HISTORY, k=3), RecommendRequest(query="a comedy", k=3),
            RecommendRequest(history=[HistoryEntry(item_id="m7")], k=3)]  # fmt: skip
    results = rec.recommend_many(reqs)
    assert len(engine.calls) == 1 and len(engine.calls[0].requests) == 3
    assert all(r.profile for r in results)


def test_unavailable_engine_gives_no_profile_but_an_answer(home: Path, embedder: HashEmbedder) -> None:
    rec = recommender(home, embedder, None, fusion_weights={"semantic": 1.0, "profile": 1.0},
                      llm_server_url="http://127.0.0.1:9/v1", llm_timeout_s=1)  # fmt: skip
    result = rec.recommend(RecommendRequest(history=HISTORY, k=3))
    assert result.profile is None and (result.profile_note or "").startswith("no profile: engine_error")
    assert len(result.items) == 3


def test_parse_proposals() -> None:
    got = parse_proposals({"items": [{"title": " Heat ", "year": "1995", "description": "x"},
                                     {"title": "<exact title>", "year": "", "description": ""},
                                     {"title": "", "year": "", "description": ""},
                                     {"title": "Odd", "year": "19x5", "description": ""}]}, 5)  # fmt: skip
    assert got == [Proposal(title="Heat", year=1995, description="x"), Proposal(title="Odd")]
    assert parse_proposals("nope", 5) is None and parse_proposals({"x": 1}, 5) is None


def test_grounding_keeps_catalog_items_only(home: Path, embedder: HashEmbedder) -> None:
    store = Store(load_settings(home=home, collection=NAME).store_config())
    grounder = Grounder(store.open_for(embedder, NAME), embedder, min_similarity=0.9)
    report = grounder.ground([Proposal.model_validate(p) for p in REAL])
    assert report.proposed == 6 and report.grounded == 3 and report.by_title == 3
    assert report.duplicates == 1 and report.discarded_no_match == 2
    assert [h.item_id for h in report.hits] == ["m5", "m8", "m1"]
    assert "Zorblax Quantum Nebula Heist" in report.discarded and "Heat" in report.discarded
    loose = Grounder(store.open_for(embedder, NAME), embedder, min_similarity=-1.0)
    assert loose.ground([Proposal(title="Zorblax", description="x")]).by_similarity == 1  # nearest item, any score


def test_generated_titles_that_match_nothing_are_never_recommended(home: Path, embedder: HashEmbedder) -> None:
    engine = FakeEngine(scripted(proposals=REAL))
    only = {"semantic": 0.0, "item2item": 0.0, "generated": 1.0}  # sources missing from the dict weigh 1
    rec = recommender(home, embedder, engine, fusion_weights=only, ground_min_similarity=0.9,
                      ground_max_proposals=6)  # fmt: skip
    result = rec.recommend(RecommendRequest(query="science fiction", k=10))
    catalog = set(rec.collection.ids())
    ids = [i.item_id for i in result.items]
    assert set(ids) <= catalog and set(result.candidate_ids) <= catalog
    g = result.grounding
    assert g is not None and g.proposed == 6 and g.grounded == 3 and g.discarded_no_match == 2 and g.duplicates == 1
    assert ids == ["m5", "m8", "m1"]  # only the generated source is on: exactly the grounded items, in order
    assert all(i.sources["generated"].rank == r for r, i in enumerate(result.items, start=1))
    assert result.stage_tokens["propose_prompt"] > 0
    schema = engine.calls[0].schemas[0]
    assert schema is not None and schema["properties"]["items"]["maxItems"] == 6
    # exclusions and constraints apply to generated candidates too
    later = rec.recommend(RecommendRequest(query="science fiction", k=10, disliked=["m5"],
                                           constraints=Constraints(year_min=2000)))  # fmt: skip
    assert [i.item_id for i in later.items] == ["m8"]


def test_generated_and_semantic_fuse(home: Path, embedder: HashEmbedder) -> None:
    engine = FakeEngine(scripted(proposals=REAL))
    rec = recommender(home, embedder, engine, fusion_weights={"semantic": 1.0, "generated": 1.0},
                      ground_max_proposals=6)  # fmt: skip
    result = rec.recommend(RecommendRequest(query="sci-fi horror", k=8))
    assert any("generated" in i.sources for i in result.items)
    assert any("semantic" in i.sources for i in result.items)


def test_variants_switch_the_llm_sources_on(tmp_path: Path) -> None:
    base = load_settings(home=tmp_path)
    variant = parse_variant("prof:strategy=retrieval,fusion.profile=1.0,fusion.generated=0.5")
    assert variant.fusion == {"profile": 1.0, "generated": 0.5}
    vs = variant_settings(base, variant)
    assert vs.fusion_weights["profile"] == 1.0 and vs.fusion_weights["semantic"] == 1.0
    assert vs.fusion_weights["generated"] == 0.5 and llm_sources_on(vs.fusion_weights)
    assert not llm_sources_on(base.fusion_weights)
    assert variant.describe()["fusion"] == {"profile": 1.0, "generated": 0.5}
    with pytest.raises(ConfigError, match="unknown candidate source"):
        parse_variant("x:fusion.profiel=1")
    with pytest.raises(ConfigError, match=">= 0"):
        parse_variant("x:fusion.profile=-1")


def test_request_weights_are_validated() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        RecommendRequest(query="x", source_weights={"profile": -1.0})
    with pytest.raises(ValueError, match="unknown candidate source"):
        RecommendRequest(query="x", source_weights={"profil": 1.0})


def test_default_settings_keep_llm_sources_off(tmp_path: Path) -> None:
    settings: Settings = load_settings(home=tmp_path)
    assert settings.fusion_weights["profile"] == 0.0 and settings.fusion_weights["generated"] == 0.0
    assert settings.fusion_config().weights["semantic"] == 1.0
