"""The learned ranker with the LLM feature through the real parts: the 300-movie sample (real Chroma, real embedder,
the evaluator's split), the options strategy on the tiny random vLLM engine behind the on-disk LLM cache: train
(only the kept training groups are scored; a rerun is answered from the cache), then serve through the pipeline
with ``ltr_llm_strategy=options``; a planted test-target leak is caught before any LLM call."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.rerank.learned import LLM_FEATURE
from eval.llm_cache import CachingEngine, LLMCache
from prompts import PromptRegistry
from train.leakage import LeakageError
from train.ltr import LtrFitConfig, fit_ranker
from train.ltr_data import LtrDataConfig, build_ltr_data
from train.ltr_llm import LtrLlm, add_llm_scores

from fakes import FakeEngine
from testkit import SAMPLE_COLLECTION

FAST = LtrFitConfig(rounds=40, patience=15, min_data_in_leaf=5, threads=1)
N = 8  # fused candidates per user: one 8-option prompt


def _parts(train_settings, train_embedder, ml_sample):  # type: ignore[no-untyped-def]
    from eval.provenance import DeterministicStore
    from train.data import load_data, open_collection

    dataset = load_data(ml_sample, ml_sample / "ratings.csv")
    store = DeterministicStore(train_settings.store_config())
    coll = open_collection(train_settings, dataset, train_embedder, store=store, collection=SAMPLE_COLLECTION)
    return dataset, store, coll


@pytest.mark.slow
def test_train_and_serve_with_the_llm_feature_on_tiny_vllm(  # type: ignore[no-untyped-def]
    train_settings, train_embedder, ml_sample, vllm_tiny, tmp_path: Path
) -> None:
    from eval.variants import parse_variant, variant_settings

    # the tiny model's context is 1024 tokens: the compact option prompt, no item texts, a short history
    short = parse_variant("tiny:options_template=rank_options_compact,include_text=false,history_limit=3")
    compact = PromptRegistry([Path(__file__).parents[1] / "agent" / "templates"])  # the tests' compact templates
    _train_and_serve(variant_settings(train_settings, short), train_embedder, ml_sample, vllm_tiny, tmp_path, compact)


@pytest.mark.slow
def test_train_and_serve_with_the_llm_feature_scripted_llm(  # type: ignore[no-untyped-def]
    train_settings, train_embedder, ml_sample, tmp_path: Path
) -> None:
    """The same path with the scripted engine (real Chroma, embedder and split; no model weights)."""
    _train_and_serve(train_settings, train_embedder, ml_sample, FakeEngine(), tmp_path)


def _train_and_serve(train_settings, train_embedder, ml_sample, vllm_tiny, tmp_path: Path, registry=None) -> None:  # type: ignore[no-untyped-def]
    from agent.pipeline import Recommender, RecommendRequest
    from eval.protocol import make_split

    dataset, store, coll = _parts(train_settings, train_embedder, ml_sample)
    cfg = LtrDataConfig(candidates=N)
    cache = LLMCache(tmp_path / "llm_cache.sqlite")
    registry = registry or PromptRegistry()
    llm = LtrLlm(engine=CachingEngine(vllm_tiny, cache), registry=registry, strategy="options")  # type: ignore[arg-type]
    data = build_ltr_data(train_settings, dataset, cfg, coll, train_embedder, progress=False, llm=llm)
    kept = [*data.fit, *data.stop]
    record = data.llm_feature
    assert record is not None and record["strategy"] == "options" and record["model"] == vllm_tiny.model_id  # type: ignore[attr-defined]
    # only the groups the ranker learns from were scored (one N-option prompt each), not every validation user
    assert record["groups_scored"] + record["groups_missing"] == len(kept) < data.stats["validation_users"]
    assert record["llm_calls"] == len(kept) and record["groups_scored"] > 0
    assert all(LLM_FEATURE in row for g in kept for row in g.rows)
    assert sum(math.isfinite(row[LLM_FEATURE]) for g in kept for row in g.rows) == N * record["groups_scored"]
    # resumable: the same groups again are answered from the on-disk cache (no new engine request)
    misses = cache.misses
    again = add_llm_scores(train_settings, kept, {c.user_id or c.case_id: c for c in _inner_cases(dataset, cfg)},
                           coll, llm, progress=False)  # fmt: skip
    assert cache.misses == misses and cache.hits >= len(kept) and again["groups_scored"] == record["groups_scored"]

    out = tmp_path / "ltr-llm"
    result = fit_ranker(data, out, data_cfg=cfg, fit_cfg=FAST, provenance={}, started=time.perf_counter(),
                        progress=False)  # fmt: skip
    m = result.manifest
    assert LLM_FEATURE in m["feature_names"] and LLM_FEATURE in [d["feature"] for d in m["importances"]]
    assert m["llm_feature"]["strategy"] == "options"

    # serve: the learned strategy runs the options strategy first and feeds its scores to the model
    test = make_split(dataset, cfg.protocol())
    settings = train_settings.model_copy(update={"ltr_model": out, "explain_mode": "none", "fusion_n": N,
                                                 "ltr_llm_strategy": "options"})  # fmt: skip
    rec = Recommender(settings, engine=vllm_tiny, embedder=train_embedder, store=store, collection=coll.name,  # type: ignore[arg-type]
                      interactions=test.train, registry=registry)  # fmt: skip
    case = test.cases[0]
    req = RecommendRequest.model_validate(dict(user_id=case.user_id, history=[h.model_dump() for h in case.history],
                                               k=N, strategy="learned"))  # fmt: skip
    res = rec.recommend(req)
    assert res.strategy == "learned" and res.fallback_reason is None and res.rerank.llm_feature_missing is None
    assert res.rerank.llm_calls == 1 and res.prompt_tokens > 0 and res.model == vllm_tiny.model_id  # type: ignore[attr-defined]
    assert "llm_feature" in res.timings_ms and any(v.startswith("rank_options") for v in res.prompt_versions)
    assert sorted(res.rerank.item_ids) == sorted(res.candidate_ids) and len(res.candidate_ids) == N
    assert all(item.llm_score is not None and math.isfinite(item.llm_score) for item in res.items)
    # a broken engine: the feature is missing (NaN), counted, and the model still ranks
    broken = Recommender(settings, engine=FakeEngine(error=RuntimeError("engine went away")), embedder=train_embedder,
                         store=store, collection=coll.name, interactions=test.train, registry=registry)  # fmt: skip
    down = broken.recommend(req)
    assert down.fallback_reason is None and down.rerank.llm_feature_missing is not None
    assert down.rerank.llm_feature_missing.startswith("engine_error") and len(down.items) == N
    # the same model served without the feature is refused with a hint
    plain = Recommender(settings.model_copy(update={"ltr_llm_strategy": None}), embedder=train_embedder, store=store,
                        collection=coll.name, interactions=test.train)  # fmt: skip
    with pytest.raises(ConfigError, match="trained with the LLM feature"):
        plain.recommend(req)


def _inner_cases(dataset, cfg):  # type: ignore[no-untyped-def]
    from train.ltr_data import _logs

    return _logs(dataset, cfg)[1].cases


@pytest.mark.slow
def test_a_planted_leak_is_caught_before_any_llm_call(train_settings, train_embedder, ml_sample, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import train.ltr_data as ltr_data

    dataset, _store, coll = _parts(train_settings, train_embedder, ml_sample)
    real = ltr_data.group_rows

    def leaky(case, generator, features, *, n, exclude):  # type: ignore[no-untyped-def]
        group = real(case, generator, features, n=n, exclude=set())
        if exclude:  # the user's test target slips into the candidates the LLM would be shown
            group.candidate_ids = [*group.candidate_ids[:-1], sorted(exclude)[0]]
        return group

    monkeypatch.setattr(ltr_data, "group_rows", leaky)
    engine = FakeEngine()
    llm = LtrLlm(engine=engine, registry=PromptRegistry(), strategy="options")
    with pytest.raises(LeakageError, match="test-split interactions reach the learned ranker"):
        build_ltr_data(train_settings, dataset, LtrDataConfig(candidates=20), coll, train_embedder, progress=False,
                       llm=llm)  # fmt: skip
    assert engine.calls == []  # the guard ran before the LLM saw any prompt
