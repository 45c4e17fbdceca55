"""The learned ranker's training: a planted signal is learned, a planted test-target leak is caught, the manifest
and model folder are complete, and (slow) the whole path on the real 300-movie sample: real Chroma, real
embedder, the evaluator's split, then the pipeline's ``learned`` strategy with the trained model."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from agent.errors import InputError
from agent.rerank.learned import LearnedModel, StaleModelError
from retrieval.fitted import log_fingerprint
from retrieval.interactions import Interactions
from train.leakage import LeakageError, assert_no_group_leakage, find_group_leaks
from train.ltr import LtrFitConfig, fit_ranker, group_ndcg
from train.ltr_data import LtrData, LtrDataConfig, RankGroupRows

FAST = LtrFitConfig(rounds=60, patience=20, min_data_in_leaf=5, threads=1)


def _planted_groups(n: int, seed: int) -> list[RankGroupRows]:
    """20 candidates per user; the target is the candidate with the largest ``meta.signal`` (plus noise features),
    placed at a random fused rank, so the fused order alone knows nothing."""
    rng = random.Random(seed)
    groups = []
    for u in range(n):
        target = rng.randrange(20)
        ids = [f"u{seed}-{u}-i{j}" for j in range(20)]
        rows = []
        for j in range(20):
            signal = 1.0 if j == target else rng.uniform(0.0, 0.8)
            rows.append({"fused.rank": float(j + 1), "fused.score": 1 / (61 + j), "meta.signal": signal,
                         "item.pop": rng.uniform(0, 5), "src.collab.rank": float(rng.randrange(1, 100))})  # fmt: skip
        groups.append(RankGroupRows(user_id=f"u{seed}-{u}", history_ids=[f"h{u}"], candidate_ids=ids,
                                    target_ids=[ids[target]], rows=rows,
                                    labels=[int(j == target) for j in range(20)]))  # fmt: skip
    return groups


def _log() -> Interactions:
    return Interactions.from_records(["a", "a", "b"], ["x", "y", "x"], [4.0, 5.0, 3.0], [1, 2, 3])


def test_learns_a_planted_signal_above_the_fused_order(tmp_path: Path) -> None:
    data = LtrData(fit=_planted_groups(120, 0), stop=_planted_groups(40, 1), serve_log=_log(), forbidden={})
    result = fit_ranker(data, tmp_path / "m", data_cfg=LtrDataConfig(), fit_cfg=FAST, provenance={"x": 1},
                        started=time.perf_counter(), progress=False)  # fmt: skip
    m = result.manifest
    assert m["early_stop"]["ndcg@10_model"] > 0.9 > m["early_stop"]["ndcg@10_fused_order"] + 0.5
    assert m["importances"][0]["feature"] == "meta.signal"
    assert m["log_fingerprint"] == log_fingerprint(_log())
    assert set(m["feature_names"]) == {"fused.rank", "fused.score", "meta.signal", "item.pop", "src.collab.rank"}
    assert {"data", "fit", "lightgbm", "best_iteration", "stats", "provenance", "timing", "created"} <= set(m)
    # the folder is what the strategy loads: fresh users, scored through the saved model
    model = LearnedModel.load(result.out)
    model.check_log(log_fingerprint(_log()))
    fresh = _planted_groups(30, 2)
    from retrieval.ltr_features import feature_matrix

    scores = [model.predict(feature_matrix(g.rows, model.feature_names)) for g in fresh]
    assert group_ndcg(fresh, scores) > 0.9 > group_ndcg(fresh, None) + 0.5
    with pytest.raises(InputError, match="already holds"):
        fit_ranker(data, result.out, data_cfg=LtrDataConfig(), fit_cfg=FAST, provenance={},
                   started=time.perf_counter(), progress=False)  # fmt: skip


def test_group_ndcg_by_hand() -> None:
    g = RankGroupRows("u", [], ["a", "b", "c"], ["b"], [{}, {}, {}], [0, 1, 0])
    assert group_ndcg([g], None) == pytest.approx(1 / 1.5849625, rel=1e-6)  # target at rank 2: 1/log2(3)
    assert group_ndcg([g], [[0.0, 1.0, 0.5]]) == 1.0  # type: ignore[list-item]


def test_group_leak_is_caught_in_every_role() -> None:
    g = RankGroupRows("u", ["h"], ["a", "t"], ["a"], [{}, {}], [1, 0])
    assert find_group_leaks([g], {"u": {"t"}}) == [("u", "t", "candidate")]
    assert find_group_leaks([g], {"u": {"h", "a"}}) == [("u", "h", "history"), ("u", "a", "candidate"),
                                                        ("u", "a", "target")]  # fmt: skip
    assert find_group_leaks([g], {"other": {"t"}}) == []
    with pytest.raises(LeakageError, match="learned ranker"):
        assert_no_group_leakage([g], {"u": {"t"}})


# ------------------------------------------------------------------------------------------------ real parts
@pytest.fixture(scope="module")
def ltr_real(train_settings, train_embedder, ml_sample, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Groups of the 300-movie sample under the evaluator's temporal split (all users), and a model fitted on them."""
    from eval.provenance import DeterministicStore
    from train.data import load_data, open_collection
    from train.ltr_data import build_ltr_data

    from testkit import SAMPLE_COLLECTION

    dataset = load_data(ml_sample, ml_sample / "ratings.csv")
    store = DeterministicStore(train_settings.store_config())
    coll = open_collection(train_settings, dataset, train_embedder, store=store, collection=SAMPLE_COLLECTION)
    cfg = LtrDataConfig(candidates=40)
    data = build_ltr_data(train_settings, dataset, cfg, coll, train_embedder, progress=False)
    out = tmp_path_factory.mktemp("ltr") / "model"
    result = fit_ranker(data, out, data_cfg=cfg, fit_cfg=FAST, provenance={}, started=time.perf_counter(),
                        progress=False)  # fmt: skip
    return dataset, coll, cfg, data, result


@pytest.mark.slow
def test_real_groups_keep_test_targets_out_and_serve_the_evaluators_log(ltr_real) -> None:  # type: ignore[no-untyped-def]
    from eval.protocol import make_split

    dataset, _coll, cfg, data, result = ltr_real
    test = make_split(dataset, cfg.protocol())
    assert log_fingerprint(test.train) == result.manifest["log_fingerprint"]
    for group in [*data.fit, *data.stop]:
        gold = {c.user_id: set(c.gold) for c in test.cases}.get(group.user_id, set())
        assert not gold & (set(group.candidate_ids) | set(group.history_ids) | set(group.target_ids))
        assert sum(group.labels) == 1 and len(group.rows) == len(group.candidate_ids) <= 40
    s = data.stats
    assert s["groups_with_target"] == len(data.fit) + len(data.stop) and s["test_interactions_kept_out"] > 0
    assert any(n.startswith("src.") for n in result.manifest["feature_names"])
    assert "sim.mean" in result.manifest["feature_names"] and "meta.year" in result.manifest["feature_names"]


@pytest.mark.slow
def test_a_planted_test_target_leak_is_caught(train_settings, train_embedder, ltr_real, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import train.ltr_data as ltr_data

    dataset, coll, cfg, _data, _result = ltr_real
    real = ltr_data.group_rows

    def leaky(case, generator, features, *, n, exclude):  # type: ignore[no-untyped-def]
        group = real(case, generator, features, n=n, exclude=set())
        if exclude:  # the user's test target slips into the candidates
            group.candidate_ids = [*group.candidate_ids[:-1], sorted(exclude)[0]]
        return group

    monkeypatch.setattr(ltr_data, "group_rows", leaky)
    with pytest.raises(LeakageError, match="test-split interactions reach the learned ranker"):
        ltr_data.build_ltr_data(train_settings, dataset, cfg, coll, train_embedder, progress=False)


@pytest.mark.slow
def test_pipeline_learned_strategy_with_the_trained_model(train_settings, train_embedder, ltr_real) -> None:  # type: ignore[no-untyped-def]
    from agent.pipeline import Recommender, RecommendRequest
    from eval.protocol import make_split
    from eval.provenance import DeterministicStore

    dataset, coll, cfg, _data, result = ltr_real
    test = make_split(dataset, cfg.protocol())
    settings = train_settings.model_copy(update={"ltr_model": result.out, "explain_mode": "none", "fusion_n": 30})
    store = DeterministicStore(settings.store_config())
    rec = Recommender(settings, embedder=train_embedder, store=store, collection=coll.name, interactions=test.train)
    case = test.cases[0]
    req = dict(user_id=case.user_id, history=[h.model_dump() for h in case.history], k=30)
    learned = rec.recommend(RecommendRequest.model_validate({**req, "strategy": "learned"}))
    plain = rec.recommend(RecommendRequest.model_validate({**req, "strategy": "retrieval"}))
    assert learned.strategy == "learned" and learned.fallback_reason is None and learned.model is None
    assert sorted(learned.rerank.item_ids) == sorted(plain.rerank.item_ids) == sorted(plain.candidate_ids)
    assert learned.rerank.item_ids != plain.rerank.item_ids  # reordered
    # the model was fitted for the evaluator's test-part log: the full log is another log
    stale = Recommender(settings, embedder=train_embedder, store=store, collection=coll.name,
                        interactions=dataset.interactions)  # fmt: skip
    with pytest.raises(StaleModelError, match="another interaction log"):
        stale.recommend(RecommendRequest.model_validate({**req, "strategy": "learned"}))
    # a changed log (one interaction less) is refused the same way
    import numpy as np

    keep = np.ones(len(test.train), bool)
    keep[0] = False
    changed = Recommender(settings, embedder=train_embedder, store=store, collection=coll.name,
                          interactions=test.train.subset(keep))  # fmt: skip
    with pytest.raises(StaleModelError):
        changed.recommend(RecommendRequest.model_validate({**req, "strategy": "learned"}))
