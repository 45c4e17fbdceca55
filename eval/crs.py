"""The iEvaLM-CRS standard protocol and dialogue-level folds.

iEvaLM-CRS (txy77/iEvaLM-CRS, ``script/Rec_eval.py``) scores turn-level conversational recommendation per gold
item: every gold movie of a turn is one sample, and Recall@k is the share of samples whose movie is in the turn's
top k. Movies mentioned earlier in the dialogue are never ranked (they are the turn's seeds), so they cannot be
recommended back. :func:`per_gold_hits` and :func:`ievalm_recall` compute it; today's per-turn metrics
(:mod:`eval.metrics`) average per turn instead.

:func:`dialogue_folds` cuts a dataset that is its own training log into K folds by dialogue, so that a turn is
never scored by sources counted on its own dialogue (:func:`train_log` drops the fold's dialogues).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

from agent.errors import InputError
from eval.datasets import EvalCase
from retrieval.dialogue_log import DialogueLog

__all__ = ["IEVALM_KS", "dialogue_folds", "ievalm_recall", "per_gold_hits", "train_log"]

IEVALM_KS: tuple[int, ...] = (1, 10, 50)


def per_gold_hits(gold: Iterable[str], ranking: Sequence[str], ks: Sequence[int] = IEVALM_KS) -> dict[int, list[int]]:
    """For each k, one 0/1 per gold item (in ``gold``'s order): is it in the top k of ``ranking``?"""
    position = {item_id: rank for rank, item_id in reversed(list(enumerate(ranking)))}
    golds = list(dict.fromkeys(gold))
    return {k: [int(position.get(g, k) < k) for g in golds] for k in ks}


def ievalm_recall(
    golds: Mapping[str, Iterable[str]], rankings: Mapping[str, Sequence[str]], ks: Sequence[int] = IEVALM_KS
) -> dict[str, float]:
    """``recall@k`` over all (turn, gold item) samples, plus ``samples``: the iEvaLM-CRS per-gold recall."""
    hits = {k: 0 for k in ks}
    samples = 0
    for case_id, gold in golds.items():
        found = per_gold_hits(gold, rankings.get(case_id, []), ks)
        samples += len(found[ks[0]]) if ks else 0
        for k in ks:
            hits[k] += sum(found[k])
    out = {f"recall@{k}": hits[k] / samples if samples else 0.0 for k in ks}
    out["samples"] = float(samples)
    return out


def _dialog_id(case: EvalCase) -> str:
    return str(case.meta.get("dialog_id") or case.case_id)


def dialogue_folds(cases: Sequence[EvalCase], k: int, seed: int = 0) -> list[set[str]]:
    """``k`` disjoint sets of dialogue ids covering every case's dialogue, shuffled with ``seed``, sizes within
    one of each other."""
    dialogues = sorted({_dialog_id(c) for c in cases})
    if k < 2 or k > len(dialogues):
        raise InputError(
            f"--folds {k}: need 2 <= folds <= number of dialogues ({len(dialogues)})",
            hint="use e.g. --folds 5 on a dataset with at least that many dialogues",
        )
    random.Random(seed).shuffle(dialogues)
    return [set(dialogues[i::k]) for i in range(k)]


def fold_cases(cases: Sequence[EvalCase], fold: set[str]) -> list[EvalCase]:
    return [c for c in cases if _dialog_id(c) in fold]


def train_log(log: DialogueLog, fold: set[str]) -> DialogueLog:
    """The training log of a fold: every turn whose dialogue is not in the fold."""
    return log.without(fold)
