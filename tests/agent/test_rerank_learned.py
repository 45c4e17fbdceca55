"""The ``learned`` strategy: reorders the fused candidates by the model's scores, keeps the set, needs no LLM; and
the model folder's checks (missing, stale log)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import InputError
from agent.rerank import RankingContext, RerankConfig, rank_many
from agent.rerank.learned import LearnedModel, StaleModelError, learned_order
from prompts import PromptRegistry

from fakes import FakeEngine, make_candidates, make_user


def _ctx(scores: list[float] | None, n: int = 6, k: int = 4) -> RankingContext:
    return RankingContext(user=make_user(), candidates=make_candidates(n), k=k,
                          config=RerankConfig(strategy="learned", explain="template"),
                          learned_scores=scores)  # fmt: skip


def test_reorders_by_model_score_and_keeps_the_candidates() -> None:
    engine = FakeEngine()
    scores = [0.1, 0.9, -0.3, 0.9, 0.5, 2.0]
    result = rank_many(engine, PromptRegistry(), [_ctx(scores, k=6)])[0]
    assert result.item_ids == ["b5", "b1", "b3", "b4", "b0", "b2"]  # tie 0.9: retrieval order (b1 before b3)
    assert sorted(result.item_ids) == sorted(c.id for c in make_candidates(6))
    assert result.fallback_reason is None and result.strategy == "learned"
    assert [it.retrieval_rank for it in result.items] == [6, 2, 4, 5, 1, 3]
    assert result.items[0].score == 1.0 and result.items[-1].score == 0.0
    assert engine.calls == [] and result.llm_calls == 0  # no LLM


def test_top_k_only() -> None:
    result = rank_many(None, PromptRegistry(), [_ctx([0, 1, 2, 3, 4, 5], k=2)])[0]
    assert result.item_ids == ["b5", "b4"]


def test_missing_scores_fall_back_to_the_retrieval_order_with_a_reason() -> None:
    result = rank_many(None, PromptRegistry(), [_ctx(None)])[0]
    assert result.item_ids == ["b0", "b1", "b2", "b3"]
    assert result.fallback_reason is not None and result.fallback_reason.startswith("no_model")


def test_learned_order_by_hand() -> None:
    top, final = learned_order([3.0, 1.0, 2.0], 3, 2) or ([], [])
    assert top == [0, 2] and final == [1.0, 0.0, 0.5]
    assert learned_order([1.0], 3, 2) is None and learned_order(None, 3, 2) is None


def test_missing_model_folder_says_how_to_train_one(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        LearnedModel.load(tmp_path / "nothing")
    assert "recagent train ranker-ltr" in (err.value.hint or "")


def test_stale_log_is_refused(tmp_path: Path) -> None:
    model = LearnedModel(tmp_path, booster=None, manifest={"log_fingerprint": "aaaa", "feature_names": []})
    model.check_log("aaaa")
    with pytest.raises(StaleModelError) as err:
        model.check_log("bbbb")
    assert "another interaction log" in err.value.message and "retrain" in (err.value.hint or "")
    assert err.value.exit_code == 2
    with pytest.raises(StaleModelError, match="needs the interaction log"):
        model.check_log(None)


def test_a_model_and_manifest_that_disagree_are_refused(tmp_path: Path) -> None:
    import lightgbm as lgb
    import numpy as np

    data = lgb.Dataset(np.arange(40, dtype=float).reshape(20, 2), np.arange(20) % 2, feature_name=["f0", "f1"])
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, data, 2)
    booster.save_model(str(tmp_path / "model.txt"))
    (tmp_path / "manifest.json").write_text(json.dumps({"feature_names": ["f1", "f0"]}))
    with pytest.raises(InputError, match="disagree on the features"):
        LearnedModel.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"feature_names": ["f0", "f1"], "log_fingerprint": "x"}))
    assert LearnedModel.load(tmp_path).predict(np.zeros((3, 2))).shape == (3,)
