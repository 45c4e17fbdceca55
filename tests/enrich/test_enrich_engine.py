"""Enrichment, the profile source and generate-then-ground with the REAL in-process vLLM engine (tiny random model,
structured output), the real bundled embedder and a real embedded Chroma store; the commands end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from agent.enrich import enrich_collection
from agent.llm.base import LLMEngine
from agent.pipeline import Recommender, RecommendRequest
from agent.settings import Settings
from prompts import PromptRegistry
from recagent import cmd_enrich, cmd_recommend
from retrieval.embed import Embedder, make_embedder
from retrieval.store import Store
from retrieval.types import HistoryEntry

from enrich_helpers import catalog
from testkit import ROOT, cli_app, tiny_settings

pytestmark = pytest.mark.slow

NAME = "tiny-shop"
HISTORY = [HistoryEntry(item_id="m3", rating=5.0), HistoryEntry(item_id="m5", rating=4.5)]
SMALL = {  # keep prompts + outputs inside the tiny model's 1024-token context
    "enrich_description_max_chars": 60,
    "enrich_max_keywords": 3,
    "enrich_max_tokens": 300,
    "enrich_batch_size": 4,
    "profile_history_limit": 2,
    "profile_max_tokens": 48,
    "ground_max_proposals": 1,
    "ground_max_tokens": 300,
    "rerank_strategy": "retrieval",
    "explain_mode": "template",
}


@pytest.fixture(scope="module")
def settings(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("enrich-home")
    return tiny_settings(tiny_model_dir, home=home, collection=NAME, **SMALL)


@pytest.fixture(scope="module")
def embedder(settings: Settings) -> Embedder:
    return make_embedder(settings.embed_config(progress=False))


@pytest.fixture(scope="module")
def store(settings: Settings, embedder: Embedder) -> Iterator[Store]:
    store = Store(settings.store_config())
    store.upsert(catalog(), embedder, collection=NAME, progress=False)
    yield store


def test_enrichment_with_the_real_engine_is_cached(settings: Settings, store: Store, embedder: Embedder,
                                                   vllm_tiny: LLMEngine) -> None:  # fmt: skip
    store.copy_collection(NAME, "tiny-shop-enriched")
    coll = store.open_for(embedder, "tiny-shop-enriched")
    before = coll.get_embeddings(coll.ids())
    first = enrich_collection(coll, vllm_tiny, PromptRegistry(), settings, embedder=embedder, progress=False)
    assert first.selected == 9 and first.generated == 9 and first.cached == 0
    assert first.enriched + sum(first.failed.values()) == 9
    assert first.enriched >= 1, first.failed  # structured output gives valid JSON even from a random model
    assert first.prompt_tokens > 0 and first.completion_tokens > 0 and first.model == vllm_tiny.model_id
    stored = coll.get_enrichments(coll.ids())
    assert len(stored) == first.enriched
    some = next(iter(stored))
    assert 1 <= len(stored[some].description) <= 60 and 1 <= len(stored[some].keywords) <= 3
    assert not np.allclose(coll.get_embeddings([some])[some], before[some])
    second = enrich_collection(coll, vllm_tiny, PromptRegistry(), settings, embedder=embedder, progress=False)
    assert second.generated == 0 and second.cached == 9 and second.embedded == 0
    assert second.enriched == first.enriched and second.failed == first.failed
    source = store.open_for(embedder, NAME)
    assert source.get_enrichments(source.ids()) == {}  # the original collection is untouched


def test_profile_source_appears_in_provenance(settings: Settings, store: Store, embedder: Embedder,
                                              vllm_tiny: LLMEngine) -> None:  # fmt: skip
    on = settings.model_copy(update={"fusion_weights": {"semantic": 1.0, "item2item": 1.0, "profile": 1.0}})
    rec = Recommender(on, engine=vllm_tiny, embedder=embedder, store=store)
    result = rec.recommend(RecommendRequest(history=HISTORY, k=6))
    assert result.profile, result.profile_note
    assert result.profile_note in ("generated", "cached")
    assert any("profile" in item.sources for item in result.items)
    assert result.stage_tokens.get("profile_prompt", 0) > 0
    off = Recommender(settings, engine=vllm_tiny, embedder=embedder, store=store)
    plain = off.recommend(RecommendRequest(history=HISTORY, k=6))
    assert plain.profile is None and all("profile" not in item.sources for item in plain.items)
    assert plain.stage_tokens == {} and plain.prompt_tokens == 0  # weight 0: no LLM call at all


def test_generated_items_are_always_catalog_items(settings: Settings, store: Store, embedder: Embedder,
                                                  vllm_tiny: LLMEngine) -> None:  # fmt: skip
    weights = {"semantic": 1.0, "item2item": 0.0, "generated": 1.0}
    for min_similarity in (0.6, -1.0):  # -1: every proposal is grounded to its nearest item
        on = settings.model_copy(update={"fusion_weights": weights, "ground_min_similarity": min_similarity})
        rec = Recommender(on, engine=vllm_tiny, embedder=embedder, store=store)
        result = rec.recommend(RecommendRequest(query="a tense space thriller", k=8))
        catalog_ids = set(store.open_for(embedder, NAME).ids())
        g = result.grounding
        assert g is not None, result
        assert g.failed is None or g.failed == "invalid_output"
        assert g.proposed == g.grounded + g.discarded_no_match + g.duplicates
        assert {i.item_id for i in result.items} <= catalog_ids
        assert {h.item_id for h in g.hits} <= catalog_ids
        generated = [i for i in result.items if "generated" in i.sources]
        assert {i.item_id for i in generated} <= {h.item_id for h in g.hits}
        if min_similarity < 0 and g.failed is None:
            assert g.grounded == g.proposed - g.duplicates and generated


def test_cli_enrich_and_recommend_explain_profile(settings: Settings, store: Store, vllm_tiny: LLMEngine) -> None:
    runner = CliRunner()
    enrich_app = cli_app(settings, "x", cmd_enrich.app)
    args = ["x", "enrich", "--collection", NAME, "--into", "tiny-shop-cli", "--limit", "2", "--json"]
    out = runner.invoke(enrich_app, [*args, "--no-progress"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["copied_from"] == NAME and report["selected"] == 2 and report["beyond_limit"] == 7
    again = runner.invoke(enrich_app, ["x", "enrich", "--collection", "tiny-shop-cli", "--limit", "2"])
    assert again.exit_code == 0, again.output
    assert "generated / cached" in again.output and "0 / 2" in again.output
    rec_app = cli_app(settings, "x", cmd_recommend.app)
    shown = runner.invoke(rec_app, ["x", "recommend", "--query", "space", "--like", "m3", "-k", "3",
                                    "--explain-profile", "--collection", "tiny-shop-cli"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "profile" in shown.output
    as_json = runner.invoke(rec_app, ["x", "recommend", "--query", "space", "--like", "m3", "-k", "3", "--json",
                                      "--explain-profile", "--source", "profile=1"])  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    result: dict[str, Any] = json.loads(as_json.stdout)
    assert result["profile_note"] is not None
    if result["profile"]:
        assert any("profile" in item["sources"] for item in result["items"])


def test_cli_bad_input_is_a_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
    env["RECAGENT_HOME"] = str(tmp_path)
    cmd = [sys.executable, "-m", "recagent"]
    out = subprocess.run([*cmd, "enrich", "--collection", "nope"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "does not exist" in out.stderr and "how to fix" in out.stderr and "Traceback" not in out.stderr
    bad = subprocess.run([*cmd, "recommend", "--query", "x", "--source", "profile=lots"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "SOURCE=WEIGHT" in bad.stderr and "Traceback" not in bad.stderr
    limit = subprocess.run([*cmd, "enrich", "--limit", "0"], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=120)  # fmt: skip
    assert limit.returncode == 2 and "Traceback" not in limit.stderr


def test_evaluator_variants_switch_the_llm_sources_on(ml_sample: Path, sample_home: Path, vllm_tiny: LLMEngine,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """`--variant NAME:strategy=retrieval,fusion.profile=1.0` needs the LLM although nothing is ranked by it: the
    runner gives it the engine, and the records carry the profile and its cost."""
    from eval.datasets import load_dataset
    from eval.protocol import Protocol
    from eval.runner import run_eval
    from eval.variants import parse_variant

    from testkit import SAMPLE_COLLECTION

    settings = tiny_settings(Path(vllm_tiny.model_id), home=sample_home, collection=SAMPLE_COLLECTION)
    small = "explain=none,candidates=12,profile_history_limit=2,profile_max_tokens=32"
    variants = [
        parse_variant(f"prof:strategy=retrieval,{small},fusion.profile=1.0"),
        parse_variant(
            f"gen:strategy=retrieval,{small},fusion.generated=1.0,ground_max_proposals=1,ground_max_tokens=250"
        ),
    ]
    result = run_eval(settings, load_dataset(ml_sample), Protocol(users=4, seed=5, ks=(5, 10)), tmp_path / "r",
                      variants=variants, baselines=["retrieval"], engine=vllm_tiny, collection=SAMPLE_COLLECTION,
                      progress=False, batch_size=4)  # fmt: skip
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for r in result.records:
        by_arm.setdefault(r["variant"], []).append(r)
    assert len(by_arm["prof"]) == len(by_arm["gen"]) == len(by_arm["retrieval"]) == 4
    for r in by_arm["prof"]:
        # a random model's paragraph may be refused as garbage: then no profile, a note why, and its cost counted
        assert r["profile"] or r["profile_note"] == "no profile: garbage_output"
        assert r["stage_tokens"]["profile_prompt"] > 0 and r["stage_tokens"]["profile_completion"] > 0
        assert r["prompt_tokens"] >= r["stage_tokens"]["profile_prompt"]
        assert r["retrieved"] is not None
    for r in by_arm["gen"]:
        g = r["grounding"]
        assert g is not None and g["proposed"] == g["grounded"] + g["discarded_no_match"] + g["duplicates"]
    for r in by_arm["retrieval"]:
        assert r["profile"] is None and r["stage_tokens"] == {} and r["prompt_tokens"] == 0
    results = json.loads((result.out / "results.json").read_text())
    assert results["arms"]["prof"]["cost"]["prompt_tokens_mean"] > 0
