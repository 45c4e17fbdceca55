"""The conversation learned ranker (train/crs_ltr.py) as a fold-level arm of eval/crs_folds.run_folds: it learns a
pattern of a made-up log with real LightGBM, and the ranker of fold k never sees fold k's dialogues (a planted
leak is caught)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from eval.crs_folds import FoldArmResult, FoldContext, FoldLeakError, run_folds
from eval.datasets import EvalCase
from eval.dialogue_log import log_from_cases
from retrieval.candidates import Scored
from retrieval.ltr_features import feature_names
from retrieval.types import Item
from train.crs_ltr import LEARNED_ARM, ConversationRanker, CrsLtrConfig, DialogueStats, check_isolation
from train.ltr import LtrFitConfig

ITEMS = {str(i): Item(id=str(i), title=f"Movie {i}") for i in range(120)}
WEIGHTS = {"semantic": 1.0, "item2item": 1.0}
CONFIG = CrsLtrConfig(pools=(10, 20), fit=LtrFitConfig(rounds=60, patience=10, min_data_in_leaf=5))


def _cases(dialogues: int = 60) -> list[EvalCase]:
    rng = random.Random(0)
    out = []
    for d in range(dialogues):
        seed = str(rng.randrange(100, 120))
        for t in (1, 2):
            gold = str(rng.randrange(0, 100))
            out.append(EvalCase(case_id=f"d{d}_{t}", liked=[seed], gold={gold: 1},
                                meta={"dialog_id": f"d{d}", "turn_id": t}))  # fmt: skip
    return out


def _content(case: EvalCase) -> dict[str, Scored]:
    """A made-up pair of content lists: the gold is always 5th of ``semantic`` (a pattern the fused order does not
    see: RRF puts the items both lists share first), the other places are random."""
    rng = random.Random(case.case_id)
    gold = next(iter(case.gold))
    others = [str(i) for i in rng.sample(range(100), 40) if str(i) != gold]
    semantic = [*others[:4], gold, *others[4:20]]
    item2item = others[:4] + others[20:35]
    return {
        "semantic": [(i, 1.0 / (r + 1)) for r, i in enumerate(semantic)],
        "item2item": [(i, 1.0 / (r + 1)) for r, i in enumerate(item2item)],
    }


def test_ranker_learns_a_made_up_log_pattern_the_fused_order_misses() -> None:
    cases = _cases()
    ranker = ConversationRanker(WEIGHTS, ITEMS, config=CONFIG)
    results, folds = run_folds(cases, _content, folds=3, arms={"fused": WEIGHTS}, progress=False, fold_arms=[ranker])
    fused, learned = results["fused"], results[LEARNED_ARM]
    assert fused["samples"] == learned["samples"] == len(cases)
    assert fused["recall@1"] < 0.1  # RRF puts the items both lists share first
    assert learned["recall@1"] >= 0.8  # the model found "5th of semantic"
    assert learned["recall@10"] >= fused["recall@10"]
    for fold in folds:
        info = fold.extra["ltr"]
        assert info["pool"] in (10, 20) and [t["pool"] for t in info["tried"]] == [10, 20]
        assert info["top_features"][0][0].startswith("src.")  # the lists' ranks carry the pattern
        assert set(fold.rankings[LEARNED_ARM]) == set(fold.rankings["fused"])  # every held-out turn, only them


def test_ranker_of_a_fold_never_sees_the_folds_dialogues() -> None:
    cases = _cases(30)
    seen: dict[int, set[str]] = {}

    class Spy(ConversationRanker):
        def __call__(self, ctx: FoldContext) -> FoldArmResult:
            groups = self.training_groups(ctx, 10)
            seen[ctx.number] = {g.dialog_id for g in groups}
            original = ctx.lists_for

            def spy_lists(log, wanted):  # type: ignore[no-untyped-def]
                seen[ctx.number] |= log.dialog_ids | {str(c.meta["dialog_id"]) for c in wanted}
                return original(log, wanted)

            return super().__call__(dataclasses.replace(ctx, lists_for=spy_lists))

    _, folds = run_folds(cases, _content, folds=3, arms={"fused": WEIGHTS}, progress=False,
                         fold_arms=[Spy(WEIGHTS, ITEMS, config=CONFIG)])  # fmt: skip
    all_dialogues = {str(c.meta["dialog_id"]) for c in cases}
    for fold in folds:
        held_out = {cid.split("_")[0] for cid in fold.rankings["fused"]}
        assert seen[fold.fold] and not seen[fold.fold] & held_out
        assert seen[fold.fold] == all_dialogues - held_out  # every training dialogue, nothing else


def test_a_planted_leak_is_caught() -> None:
    cases = _cases(30)

    class PlantsATestTurn(ConversationRanker):
        def __call__(self, ctx: FoldContext) -> FoldArmResult:
            return super().__call__(dataclasses.replace(ctx, train_cases=ctx.train_cases + ctx.test[:1]))

    with pytest.raises(FoldLeakError, match="held-out dialogues"):
        run_folds(cases, _content, folds=3, arms={"fused": WEIGHTS}, progress=False,
                  fold_arms=[PlantsATestTurn(WEIGHTS, ITEMS, config=CONFIG)])  # fmt: skip

    def fits_on_everything(ctx: FoldContext) -> FoldArmResult:
        ctx.lists_for(log_from_cases(cases), ctx.test)  # the whole log holds the held-out dialogues
        return FoldArmResult({})

    with pytest.raises(FoldLeakError, match="held-out dialogues"):
        run_folds(cases, _content, folds=3, arms={"fused": WEIGHTS}, progress=False, fold_arms=[fits_on_everything])


def test_check_isolation_and_dialogue_stats() -> None:
    check_isolation([], frozenset({"d1"}))
    stats = DialogueStats.of(log_from_cases(_cases(5)))
    golds = [next(iter(c.gold)) for c in _cases(5)]
    top = golds[0]
    row = stats.row(top)
    assert row["dlg.rec_pop"] > 0 and row["dlg.rec_share"] > 0.5
    assert stats.row("never")["dlg.rec_pop"] == 0.0
    assert set(feature_names([row])) == {"dlg.rec_pop", "dlg.mention_pop", "dlg.rec_share"}
