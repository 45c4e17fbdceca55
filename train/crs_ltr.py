"""The learned ranker on conversations: LightGBM lambdarank over a turn's fused candidates, fitted per fold.

A fold-level arm of ``recagent eval folds`` (:class:`eval.crs_folds.FoldContext`). For each fold:

1. **Groups from the training dialogues only**, cross-fitted: the fold's training dialogues are cut into
   ``folds - 1`` inner parts; each part's turns get the dialogue sources' lists fitted on the other inner parts
   (so a turn's comention / popularity / attribute features never count its own answer), plus the content lists
   (and the title-linked log's ``ease`` / ``transition`` lists when given). One group per training turn: the
   ``pool`` best candidates of the fused default, labels = the turn's gold movies, groups without a gold in the
   pool dropped.
2. **Features** (:class:`retrieval.ltr_features.FeatureBuilder`, the interaction-log ranker's builder): every
   source's rank and score, the fused score / rank / number of sources, the linked log's item popularity and
   mean rating (when ``--log`` is given), the number of mentioned movies (``user.history``); plus the
   conversation's own (``dlg.*``): how often the fit log's recommenders named the candidate, how often it was
   mentioned, and the turn's position in its dialogue.
3. **Early stopping and the pool size on a validation part of the training folds**
   (:func:`eval.crs_folds.validation_part`): its groups stop the boosting (NDCG@10), and the pool (``pools``) with
   the best Recall@50 there (then @10) is kept; the held-out fold is never looked at.
4. The held-out turns: the pool of the fused default (its dialogue sources fitted on all the training folds), sorted
   by the model's score (ties keep the fused order), the top 50 scored.

:func:`check_isolation` refuses any group of a held-out dialogue (the fold-isolation guard).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.errors import InputError
from eval.crs import dialogue_folds, ievalm_recall
from eval.crs_folds import FoldArmResult, FoldContext, FoldLeakError, validation_part
from eval.datasets import EvalCase
from retrieval.candidates import Scored, rrf_fuse
from retrieval.conversation_ranker import CatalogItems, DialogueStats, SavedConversationRanker, conversation_rows
from retrieval.interactions import Interactions
from retrieval.ltr_features import FeatureBuilder, Row, feature_matrix, feature_names
from retrieval.types import Item
from train.ltr import LtrFitConfig

__all__ = [
    "CatalogItems",
    "ConversationRanker",
    "CrsLtrConfig",
    "DialogueStats",
    "TurnGroup",
    "check_isolation",
    "fit_booster",
]

LEARNED_ARM = "learned ranker (LightGBM, conversation features)"


class CrsLtrConfig(BaseModel):
    """How the conversation ranker's groups are cut and fitted."""

    model_config = ConfigDict(extra="forbid")

    pools: tuple[int, ...] = Field((100, 200), min_length=1, description="Pool sizes tried on validation.")
    fit: LtrFitConfig = Field(default_factory=lambda: LtrFitConfig.model_validate({}))


@dataclass
class TurnGroup:
    """One turn's pooled candidates, their feature rows and labels (1 = a gold movie of the turn)."""

    case_id: str
    dialog_id: str
    candidate_ids: list[str]
    gold: list[str]
    rows: list[Row]
    labels: list[int]


def _dialog_id(case: EvalCase) -> str:
    return str(case.meta.get("dialog_id") or case.case_id)


def turn_group(case: EvalCase, lists: Mapping[str, Scored], weights: Mapping[str, float], pool: int, rrf_k: int,
               features: FeatureBuilder, stats: DialogueStats) -> TurnGroup:  # fmt: skip
    """The fused pool of one turn (mentioned movies excluded) and its rows."""
    rankings = {name: ranked for name, ranked in lists.items() if weights.get(name, 0.0) > 0}
    candidates = rrf_fuse(rankings, weights=weights, rrf_k=rrf_k, n=pool, exclude=case.liked)
    turn = case.meta.get("turn_id")
    rows = conversation_rows(
        features, case.liked, candidates, stats, float(turn) if isinstance(turn, int | float) else None
    )
    ids = [c.item_id for c in candidates]
    gold = list(dict.fromkeys(case.gold))
    return TurnGroup(case.case_id, _dialog_id(case), ids, gold, rows, [int(i in case.gold) for i in ids])


def check_isolation(groups: Sequence[TurnGroup], fold: frozenset[str]) -> None:
    """Refuse groups from held-out dialogues (the ranker of a fold must never train on the fold)."""
    leaked = sorted({g.dialog_id for g in groups} & fold)
    if leaked:
        raise FoldLeakError(
            f"the conversation ranker was given {len(leaked)} held-out dialogues as training groups (e.g. "
            f"{', '.join(leaked[:3])})",
            hint="build its groups from FoldContext.train_cases only",
        )


def _matrix(groups: Sequence[TurnGroup], names: list[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    rows = [r for g in groups for r in g.rows]
    labels = np.array([lab for g in groups for lab in g.labels], np.float64)
    return feature_matrix(rows, names), labels, [len(g.rows) for g in groups]


def fit_booster(fit: Sequence[TurnGroup], stop: Sequence[TurnGroup], cfg: LtrFitConfig) -> tuple[Any, list[str], int]:
    """LightGBM lambdarank with :class:`train.ltr.LtrFitConfig`'s settings, early-stopped on ``stop``'s NDCG@10:
    the booster, its feature names and its best iteration."""
    import lightgbm as lgb

    if not fit or not stop:
        raise InputError(f"the conversation ranker needs groups with a gold candidate to fit ({len(fit)}) and to "
                         f"stop early ({len(stop)})", hint="give more dialogues or a larger pool")  # fmt: skip
    names = feature_names([r for g in fit for r in g.rows])
    x_fit, y_fit, g_fit = _matrix(fit, names)
    x_stop, y_stop, g_stop = _matrix(stop, names)
    fit_set = lgb.Dataset(x_fit, y_fit, group=g_fit, feature_name=names, free_raw_data=False)
    stop_set = lgb.Dataset(x_stop, y_stop, group=g_stop, reference=fit_set)
    booster = lgb.train(cfg.params(), fit_set, num_boost_round=cfg.rounds, valid_sets=[stop_set],
                        valid_names=["early_stop"],
                        callbacks=[lgb.early_stopping(cfg.patience, verbose=False)])  # fmt: skip
    return booster, names, int(booster.best_iteration) or booster.current_iteration()


def _order(booster: Any, names: list[str], best: int, group: TurnGroup, n: int) -> list[str]:
    if not group.rows:
        return []
    scores = np.asarray(booster.predict(feature_matrix(group.rows, names), num_iteration=best, num_threads=1))
    order = sorted(range(len(group.rows)), key=lambda i: (-float(scores[i]), i))
    return [group.candidate_ids[i] for i in order[:n]]


class ConversationRanker:
    """A fold-level arm (:data:`eval.crs_folds.FoldArm`): fit on the fold's training dialogues, rank its held-out
    turns. ``weights``: the fused order whose pool it reranks; ``log``: the title-linked interaction log (item
    popularity features), if any; ``items``: the catalog."""

    def __init__(self, weights: Mapping[str, float], items: Mapping[str, Item], log: Interactions | None = None, *,
                 config: CrsLtrConfig | None = None, name: str = LEARNED_ARM) -> None:  # fmt: skip
        self.weights, self.name = dict(weights), name
        self.config = config or CrsLtrConfig()
        self.features = FeatureBuilder(log, CatalogItems(items))

    def training_groups(self, ctx: FoldContext, pool: int) -> list[TurnGroup]:
        """Every training turn's group, its dialogue-source lists cross-fitted on the other inner parts."""
        parts = dialogue_folds(ctx.train_cases, max(2, ctx.folds - 1), ctx.seed)
        groups: list[TurnGroup] = []
        for part in parts:
            fit_log = ctx.training.without(part)
            cases = [c for c in ctx.train_cases if _dialog_id(c) in part]
            lists = ctx.lists_for(fit_log, cases)
            stats = DialogueStats.of(fit_log)
            groups += [turn_group(c, lists[c.case_id], self.weights, pool, ctx.rrf_k, self.features, stats)
                       for c in cases]  # fmt: skip
        check_isolation(groups, ctx.fold)
        return groups

    def fit(self, ctx: FoldContext) -> SavedConversationRanker:
        """Fit on ``ctx``'s training side: cross-fitted groups, early stopping and the pool on its validation part
        (the fingerprint is left empty: the caller knows the log)."""
        started = time.perf_counter()
        _, valid_cases = validation_part(ctx.training, ctx.train_cases, ctx.folds, ctx.seed)
        valid = {_dialog_id(c) for c in valid_cases}
        biggest = max(self.config.pools)
        t0 = time.perf_counter()
        full = self.training_groups(ctx, biggest)
        groups_s = time.perf_counter() - t0
        tried: list[dict[str, Any]] = []
        best: tuple[tuple[float, float], int, Any, list[str], int] | None = None
        fit_s = 0.0
        for pool in sorted(self.config.pools):
            groups = [_cut(g, pool) for g in full]
            usable = [g for g in groups if any(g.labels)]
            fit = [g for g in usable if g.dialog_id not in valid]
            stop = [g for g in usable if g.dialog_id in valid]
            t1 = time.perf_counter()
            booster, names, iteration = fit_booster(fit, stop, self.config.fit)
            fit_s += time.perf_counter() - t1
            scored = [g for g in groups if g.dialog_id in valid]  # every validation turn, with a gold or not
            ranked = {g.case_id: _order(booster, names, iteration, g, ctx.n) for g in scored}
            recall = ievalm_recall({g.case_id: g.gold for g in scored}, ranked)
            fused = ievalm_recall({g.case_id: g.gold for g in scored}, {g.case_id: g.candidate_ids for g in scored})
            tried.append({"pool": pool, "fit_groups": len(fit), "stop_groups": len(stop), "best_iteration": iteration,
                          "validation": {k: round(v, 4) for k, v in recall.items()},
                          "validation_fused_pool": {k: round(v, 4) for k, v in fused.items()}})  # fmt: skip
            key = (recall["recall@50"], recall["recall@10"])
            if best is None or key > best[0]:
                best = (key, pool, booster, names, iteration)
        assert best is not None
        _, pool, booster, names, iteration = best
        gain = booster.feature_importance("gain", iteration=iteration)
        top = sorted(zip(names, gain, strict=True), key=lambda t: -float(t[1]))[:8]
        info = {
            "pool": pool,
            "tried": tried,
            "train_groups": len(full),
            "groups_seconds": round(groups_s, 1),
            "fit_seconds": round(fit_s, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
            "top_features": [[n, round(float(g), 1)] for n, g in top],
        }
        return SavedConversationRanker(booster, names, pool, iteration, "", dict(self.weights), info)

    def __call__(self, ctx: FoldContext) -> FoldArmResult:
        fitted = self.fit(ctx)
        pool, booster, names, iteration = fitted.pool, fitted.booster, fitted.names, fitted.iteration
        stats = DialogueStats.of(ctx.training)
        test_groups = [turn_group(c, ctx.test_lists[c.case_id], self.weights, pool, ctx.rrf_k, self.features, stats)
                       for c in ctx.test]  # fmt: skip
        rankings = {g.case_id: _order(booster, names, iteration, g, ctx.n) for g in test_groups}
        return FoldArmResult({self.name: rankings}, {"ltr": fitted.info})


def _cut(group: TurnGroup, pool: int) -> TurnGroup:
    """The group's first ``pool`` candidates (a smaller pool of the same fused order; the fused features are the
    same, since the order does not depend on the pool size)."""
    if len(group.rows) <= pool:
        return group
    return TurnGroup(group.case_id, group.dialog_id, group.candidate_ids[:pool], group.gold, group.rows[:pool],
                     group.labels[:pool])  # fmt: skip
