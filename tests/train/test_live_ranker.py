"""The LIVE conversation ranker's training path with the turns' text, and its held-out fold arm (issue 24), on real
parts (embedded Chroma with a hashing embedder, real LightGBM): a made-up log whose answers only the turn's text
names (the gold is unrelated to the mentioned movie, the text holds the gold's title) trains the ``semantic`` source's
features when the log has text and not without; `eval folds --live-ranker`'s arm never fits on a held-out dialogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.pipeline import Recommender
from agent.settings import load_settings
from eval.crs import dialogue_folds
from eval.crs_folds import FoldLeakError, run_folds
from eval.datasets import EvalCase
from retrieval.candidates import Scored
from retrieval.dialogue_log import DialogueLog, DialogueTurn
from retrieval.dialogue_sources import DialogueSourceConfig, fit_dialogue_model
from retrieval.types import UserQuery
from train.crs_ltr import CrsLtrConfig
from train.dialogue import LIVE_ARM, LiveRankerArm, fit_dialogue_ranker, log_cases

from testkit import HashEmbedder, hashed_sample_home

DIALOGUES = 90
CONFIG = CrsLtrConfig(pools=(50,))


@pytest.fixture(scope="module")
def live(ml_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Recommender, DialogueLog]:
    tmp = tmp_path_factory.mktemp("liveranker")
    embedder = HashEmbedder(dim=512)
    home = hashed_sample_home(tmp / "home", ml_sample, embedder, "live")
    # the content lists lead the fused order here (the ranker trains on the live fusion weights, whatever they are)
    weights = {"comention": 0.25, "recommended_popularity": 0.1, "attribute": 0.25}
    settings = load_settings(home=home, collection="live", fusion_weights=weights)
    rec = Recommender(settings, embedder=embedder, dialogue_sources=False)
    ids = sorted(rec.collection.ids())
    items = rec.catalog_items
    turns = []
    for n in range(DIALOGUES):
        seed, gold = ids[n], ids[100 + (n * 7) % 200]
        text = f"hello\n{items[gold].title}"
        turns.append(DialogueTurn(f"d{n}", (seed,), (gold,), (), text))
    return rec, DialogueLog(turns)


def _plain(log: DialogueLog) -> DialogueLog:
    return DialogueLog([DialogueTurn(t.dialog_id, t.mentioned, t.recommended) for t in log.turns])


def test_a_log_with_text_trains_the_semantic_features(live: tuple[Recommender, DialogueLog]) -> None:
    rec, log = live
    model = fit_dialogue_model(log, DialogueSourceConfig())
    fitted = fit_dialogue_ranker(rec, log, model, CONFIG, folds=3)
    assert "src.semantic.rank" in fitted.names and "src.semantic.score" in fitted.names
    gain = dict(zip(fitted.names, fitted.booster.feature_importance("gain", iteration=fitted.iteration), strict=True))
    assert gain["src.semantic.rank"] + gain["src.semantic.score"] > 0  # used: present and not constant
    assert fitted.info["turns_with_text"] == DIALOGUES == fitted.info["turns"]
    # the same log without text: the semantic source gets no request text, so it gives no feature at all
    plain = _plain(log)
    without = fit_dialogue_ranker(rec, plain, fit_dialogue_model(plain, DialogueSourceConfig()), CONFIG, folds=3)
    assert not any(n.startswith("src.semantic.") for n in without.names)
    assert without.info["turns_with_text"] == 0


def test_the_fit_refuses_a_held_out_dialogue(live: tuple[Recommender, DialogueLog]) -> None:
    rec, log = live
    model = fit_dialogue_model(log, DialogueSourceConfig())
    with pytest.raises(FoldLeakError, match="held-out dialogues") as info:
        fit_dialogue_ranker(rec, log, model, CONFIG, folds=3, held_out=frozenset({"d5"}))
    assert "training log only" in (info.value.hint or "")


def test_the_live_arm_scores_held_out_folds_only(live: tuple[Recommender, DialogueLog]) -> None:
    rec, log = live
    cases = log_cases(log)
    content_weights = {"semantic": 1.0, "item2item": 1.0}

    def content(case: EvalCase) -> dict[str, Scored]:
        query = UserQuery(need=case.query, liked=list(case.liked), n=100)
        return rec.generator.run_sources(query, weights=content_weights)

    arm = LiveRankerArm(rec, CONFIG)
    results, folds = run_folds(cases, content, folds=3, seed=0, arms={"content only": content_weights},
                               progress=False, fold_arms=[arm])  # fmt: skip
    expected = dialogue_folds(cases, 3, 0)
    everything = {c.meta["dialog_id"] for c in cases}
    assert len(arm.fits) == 3
    for fit, fold, result in zip(arm.fits, expected, folds, strict=True):
        assert not fit & fold, "a held-out dialogue was in the live fit"
        assert fit == everything - fold  # the whole training side, nothing else
        assert set(result.rankings[LIVE_ARM]) == {c.case_id for c in cases if c.meta["dialog_id"] in fold}
        assert result.extra["live"]["turns_with_text"] == len(fit)
        assert "semantic" in result.extra["live"]["sources"]
    assert results[LIVE_ARM]["samples"] == DIALOGUES
    # every held-out ranking is a real ranking: no mentioned movie, 50 long, the text's movie found
    ranked = {cid: r for f in folds for cid, r in f.rankings[LIVE_ARM].items()}
    assert all(len(r) == 50 and cases_by(cases)[cid].liked[0] not in r for cid, r in ranked.items())
    assert results[LIVE_ARM]["recall@50"] >= 0.8, results


def cases_by(cases: list[EvalCase]) -> dict[str, EvalCase]:
    return {c.case_id: c for c in cases}
