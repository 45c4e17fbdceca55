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
from retrieval.dialogue_sources import DialogueModel

__all__ = ["IEVALM_KS", "dialogue_folds", "dialogue_log_usable", "ievalm_recall", "per_gold_hits", "train_log"]

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


def dialogue_log_usable(model: DialogueModel | None, cases: Sequence[EvalCase]) -> bool:
    """Whether ``recagent eval run`` scores these cases with the collection's fitted dialogue sources: yes when
    there is a fitted log and the cases are dialogue turns (``meta.dialog_id``); an InputError when the log holds
    any of the scored dialogues (the turns would be scored by counts made from their own answers) or when the
    fitted state does not record its dialogue ids (fitted by an older recagent)."""
    scored = {str(c.meta["dialog_id"]) for c in cases if c.meta.get("dialog_id")}
    if model is None or not scored:
        return False
    how = (
        "fit the collection's dialogue sources on other dialogues (`recagent train dialogue-sources LOG "
        "--collection C`), or score a dataset that is its own log with `recagent eval folds` (fitted per fold)"
    )
    if model.dialog_ids is None:
        raise InputError(
            "the collection's fitted dialogue log does not record its dialogue ids, so it cannot be checked against "
            "the evaluated dialogues",
            hint="fit it again with `recagent train dialogue-sources` (the state now keeps them); " + how,
        )
    overlap = sorted(scored & model.dialog_ids)
    if overlap:
        raise InputError(
            f"the collection's fitted dialogue log holds {len(overlap)} of the {len(scored)} evaluated dialogues "
            f"(e.g. {', '.join(overlap[:3])}): their turns would be scored by counts made from their own answers",
            hint=how,
        )
    return True
