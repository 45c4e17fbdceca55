"""The Recommender end to end: real embedder, real embedded Chroma, real interaction log; fake and real engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import InputError
from agent.filter_syntax import parse_filters
from agent.llm.base import LLMEngine
from agent.pipeline import Recommender, RecommendRequest
from agent.settings import Settings, load_settings
from retrieval.embed import make_embedder
from retrieval.ingest import ingest
from retrieval.interactions import read_interactions
from retrieval.types import Constraints

from fakes import FakeEngine, option_titles

pytestmark = pytest.mark.slow

COLLECTION = "pipeline-test"


@pytest.fixture(scope="module")
def home(ml_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recagent home with the 300-movie sample ingested by the real bundled embedder."""
    home = tmp_path_factory.mktemp("home")
    settings = load_settings(home=home)
    report = ingest(
        ml_sample,
        store_config=settings.store_config(),
        embed_config=settings.embed_config(progress=False),
        collection=COLLECTION,
    )
    assert report.accepted == 300
    return home


@pytest.fixture(scope="module")
def settings(home: Path, ml_sample: Path) -> Settings:
    return load_settings(home=home, collection=COLLECTION, interactions=ml_sample / "ratings.csv")


@pytest.fixture(scope="module")
def parts(settings: Settings) -> Iterator[dict[str, object]]:
    yield {
        "embedder": make_embedder(settings.embed_config(progress=False)),
        "interactions": read_interactions(settings.interactions),  # type: ignore[arg-type]
    }


def recommender(settings: Settings, parts: dict[str, object], engine: LLMEngine | None, **kw: object) -> Recommender:
    return Recommender(settings.model_copy(update=kw), engine=engine, **parts)  # type: ignore[arg-type]


def _user_with_history(parts: dict[str, object]) -> str:
    inter = parts["interactions"]
    return next(u for u in ["1", "2", "3", "4", "5", "6", "7"] if len(inter.history(u)) >= 5)  # type: ignore[attr-defined]


def test_user_recommendations_exclude_seen_and_respect_k(settings: Settings, parts: dict[str, object]) -> None:
    user = _user_with_history(parts)
    rec = recommender(settings, parts, FakeEngine(), rerank_strategy="retrieval", explain_mode="template")
    result = rec.recommend(RecommendRequest(user_id=user, k=7))
    seen = {h.item_id for h in parts["interactions"].history(user)}  # type: ignore[attr-defined]
    ids = [i.item_id for i in result.items]
    assert len(ids) == 7 and len(set(ids)) == 7
    assert not seen & set(ids)
    assert set(ids) <= set(result.candidate_ids)
    assert result.history_used == len(seen)
    assert all(i.justification and i.title for i in result.items)
    assert ids == result.candidate_ids[:7]  # retrieval strategy keeps the fused order


def test_log_learned_sources_are_used_cached_and_reported(settings: Settings, parts: dict[str, object]) -> None:
    from rich.console import Console

    from recagent.present import print_recommendation

    user = _user_with_history(parts)
    rec = recommender(settings, parts, None, rerank_strategy="retrieval", explain_mode="template")
    result = rec.recommend(RecommendRequest(user_id=user, k=10))
    assert {"transition", "ease"} <= set(result.sources) and "collab" not in result.sources  # default weights
    assert any("transition" in i.sources or "ease" in i.sources for i in result.items)
    artifacts = settings.store_config().path.parent / "artifacts" / rec.collection_name
    assert list((artifacts / "ease").glob("*.npz")) and list((artifacts / "transition").glob("*.npz"))
    again = recommender(settings, parts, None, rerank_strategy="retrieval", explain_mode="template")
    assert {s.name: getattr(s, "origin", None) for s in again.generator.sources}["ease"] == "cache"
    console = Console(record=True, width=200)
    print_recommendation(result, console)
    assert "sources: semantic, item2item, transition, ease" in console.export_text()
    no_log = Recommender(settings.model_copy(update={"interactions": None, "rerank_strategy": "retrieval",
                                                     "explain_mode": "template"}), embedder=parts["embedder"])  # type: ignore[arg-type]  # fmt: skip
    assert "transition" not in no_log.recommend(RecommendRequest(query="space adventure", k=3)).sources


def test_query_with_constraints_and_dislikes(settings: Settings, parts: dict[str, object]) -> None:
    rec = recommender(settings, parts, FakeEngine(), rerank_strategy="retrieval", explain_mode="template")
    first = rec.recommend(RecommendRequest(query="funny animated movie for kids", k=5))
    banned = first.items[0].item_id
    constraints = parse_filters(["year>=1995", "not-genre=Horror"])
    result = rec.recommend(RecommendRequest(query="funny animated movie for kids", disliked=[banned],
                                            constraints=constraints, k=5))  # fmt: skip
    assert banned not in [i.item_id for i in result.items]
    for item in result.items:
        assert int(item.metadata["year"]) >= 1995
        assert "Horror" not in item.metadata.get("genres", [])


def test_llm_strategy_with_scripted_engine_only_reorders_candidates(
    settings: Settings, parts: dict[str, object]
) -> None:
    def prefer_late_titles(req: object, labels: list[str]) -> dict[str, float]:
        """Likes items by title (content, not position): the alphabetically last title wins."""
        titles = option_titles(req)  # type: ignore[arg-type]
        order = sorted(titles, key=lambda lab: titles[lab])
        return {lab: (float(order.index(lab)) if lab in titles else -50.0) for lab in labels}

    engine = FakeEngine(score_fn=prefer_late_titles)
    rec = recommender(settings, parts, engine, rerank_strategy="options", rerank_llm_weight=1.0,
                      explain_mode="template")  # fmt: skip
    result = rec.recommend(RecommendRequest(user_id=_user_with_history(parts), k=5))
    assert result.fallback_reason is None
    assert [c.method for c in engine.calls].count("score_options") >= 1
    assert {i.item_id for i in result.items} <= set(result.candidate_ids)
    assert [i.item_id for i in result.items] != result.candidate_ids[:5]  # the LLM order took effect


def test_unreachable_engine_falls_back_with_reason(settings: Settings, parts: dict[str, object]) -> None:
    rec = recommender(settings, parts, None, llm_server_url="http://127.0.0.1:9/v1", llm_timeout_s=2)
    result = rec.recommend(RecommendRequest(query="space adventure", k=4))
    assert result.fallback_reason and result.fallback_reason.startswith("engine_error")
    assert "unreachable" in result.fallback_reason
    assert len(result.items) == 4 and all(i.justification for i in result.items)


def test_missing_collection_is_a_clear_error(tmp_path: Path, parts: dict[str, object]) -> None:
    rec = Recommender(load_settings(home=tmp_path, collection="nothing-here"), engine=FakeEngine(), **parts)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="does not exist"):
        rec.recommend(RecommendRequest(query="anything"))


def test_filters_parse() -> None:
    c = parse_filters(["genre=Comedy", "not-genre=Horror", "year>1990", "year<2000", "runtime<=120"])
    assert c == Constraints(include_genres=["Comedy"], exclude_genres=["Horror"], year_min=1991, year_max=1999,
                            ranges={"runtime": {"max": 120.0}})  # fmt: skip
    with pytest.raises(InputError, match="cannot read filter"):
        parse_filters(["year is recent"])
    with pytest.raises(InputError, match="contradictory"):
        parse_filters(["year>=2000", "year<=1990"])


@pytest.mark.gemma
def test_gemma_end_to_end(settings: Settings, parts: dict[str, object], vllm_gemma: LLMEngine) -> None:
    rec = recommender(settings, parts, vllm_gemma, rerank_strategy="options", rerank_n_orders=2)
    result = rec.recommend(RecommendRequest(user_id=_user_with_history(parts), k=5))
    ids = [i.item_id for i in result.items]
    assert len(ids) == 5 and len(set(ids)) == 5 and set(ids) <= set(result.candidate_ids)
    assert result.fallback_reason is None and result.prompt_tokens > 0
    assert result.agreement is not None
    for item in result.items:
        assert item.justification
        assert item.grounded is True or "template_justification" in item.flags


def test_cli_recommend_json(settings: Settings, tiny_model_dir: Path) -> None:
    """`--json` prints exactly one JSON document on stdout, also when an in-process vLLM engine (whose logs and
    worker processes' logs go to stderr) ranks the candidates; default KV-cache sizing starts the engine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECAGENT_", "VLLM_"))}
    env.update(RECAGENT_HOME=str(settings.home), RECAGENT_COLLECTION=COLLECTION,
               RECAGENT_INTERACTIONS=str(settings.interactions), RECAGENT_EXPLAIN_MODE="template",
               RECAGENT_LLM_MODEL=str(tiny_model_dir), RECAGENT_LLM_DTYPE="float32",
               RECAGENT_LLM_MAX_MODEL_LEN="1024", RECAGENT_FUSION_N="5")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "recagent", "recommend", "--query", "a romantic comedy", "--strategy", "options",
         "-k", "3", "--filter", "year>=1990", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data["items"]) == 3 and all(int(i["metadata"]["year"]) >= 1990 for i in data["items"])
    assert data["strategy"] == "options" and data["fallback_reason"] is None, data
    bad = subprocess.run([sys.executable, "-m", "recagent", "recommend", "--query", "x", "--strategy", "magic"],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "strategy" in bad.stderr
