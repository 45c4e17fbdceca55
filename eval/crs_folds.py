"""K-fold evaluation of the conversation sources on a dataset that is its own dialogue log (``--folds K``).

For each fold (dialogues, :func:`eval.crs.dialogue_folds`): the dialogue sources are fitted on the other folds'
turns only, their settings (window, normalisation) chosen on a validation part of those training folds (a seeded
1/(K-1) of its dialogues, by comention's Recall@10, ties by Recall@50), then every turn of the fold is ranked by
each arm (a set of fusion weights over the content sources and the dialogue sources) and scored on the iEvaLM-CRS
protocol (:mod:`eval.crs`). The content sources do not learn from the log, so their lists are computed once per
turn. Retrieval only: no LLM.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from agent.errors import InputError
from eval.crs import IEVALM_KS, dialogue_folds, fold_cases, ievalm_recall, train_log
from eval.datasets import EvalCase
from eval.dialogue_log import log_from_cases
from retrieval.attribute_source import AttributeIndex
from retrieval.candidates import Scored, SourceRequest, rrf_fuse
from retrieval.config import DEFAULT_SOURCE_WEIGHTS
from retrieval.dialogue_log import DialogueLog
from retrieval.dialogue_sources import DialogueSourceConfig, dialogue_sources, fit_dialogue_model
from retrieval.types import UserQuery

__all__ = [
    "CONFIG_GRID",
    "LOG_ARM",
    "LOG_WEIGHTS",
    "FoldArm",
    "FoldArmResult",
    "FoldContext",
    "FoldLeakError",
    "FoldResult",
    "default_arms",
    "run_folds",
]

CONFIG_GRID: tuple[DialogueSourceConfig, ...] = tuple(
    DialogueSourceConfig(pairs=p, window=w, normalisation=n, prior=prior)
    for p, w, n, prior in itertools.product(("turn", "dialogue"), (0, 2), ("none", "row", "cosine"), (0.05, 0.3))
)
DIALOGUE_SOURCES = ("comention", "recommended_popularity", "attribute")
CONTENT_SOURCES = ("semantic", "item2item")
PREVIOUS_DEFAULT = "previous default (before attribute)"
PREVIOUS_WEIGHTS = {"semantic": 1.0, "item2item": 1.0, "comention": 2.0, "recommended_popularity": 0.5}
"""The fused default of the first redial-folds report (docs/eval/redial-folds.md), kept as the paired baseline."""


LOG_SOURCES = ("ease", "transition")
LOG_WEIGHTS = {"ease": 1.0, "transition": 1.0}
"""Weights of an interaction log's item-to-item sources (linked to the catalog by title) in the conversation
default, chosen on the validation parts (bench/redial_log_grid.py, docs/eval/redial-folds.md)."""
FUSED_DEFAULT = "fused default"
LOG_ARM = "fused default + title-linked log (ease 1, transition 1)"


def default_arms(with_log: bool = False) -> dict[str, dict[str, float]]:
    """Today's content-only retrieval, each dialogue source alone, the previous and the current fused default;
    ``with_log``: the title-linked log's sources alone and added to the fused default."""
    fused = {s: DEFAULT_SOURCE_WEIGHTS[s] for s in CONTENT_SOURCES + DIALOGUE_SOURCES}
    log_arms = {"title-linked log alone (ease + transition)": dict(LOG_WEIGHTS), LOG_ARM: {**fused, **LOG_WEIGHTS}}
    return {
        "content only (semantic + item2item)": {"semantic": 1.0, "item2item": 1.0},
        "comention alone": {"comention": 1.0},
        "recommended_popularity alone": {"recommended_popularity": 1.0},
        "attribute alone": {"attribute": 1.0},
        "comention + recommended_popularity": {"comention": 1.0, "recommended_popularity": 1.0},
        PREVIOUS_DEFAULT: dict(PREVIOUS_WEIGHTS),
        FUSED_DEFAULT: fused,
        **(log_arms if with_log else {}),
    }


@dataclass
class FoldResult:
    fold: int
    test_dialogues: int
    test_turns: int
    train_turns: int
    config: DialogueSourceConfig
    validation: list[dict[str, Any]]
    leaked_dialogues: int
    rankings: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """What each fold-level arm reported about its fold (e.g. a learned ranker's fit time and settings)."""


class FoldLeakError(InputError):
    """A fold-level arm asked for lists fitted on a log that holds the held-out fold's dialogues."""


@dataclass
class FoldContext:
    """What a fold-level arm (one that learns per fold, e.g. a learned ranker) gets: the fold's training side, and
    the held-out cases to rank. ``lists_for(log, cases)`` gives each case's content lists plus the dialogue
    sources' lists fitted on ``log`` with the fold's chosen settings; it refuses (:class:`FoldLeakError`) a log that
    holds any held-out dialogue, so nothing an arm fits can see the fold it is scored on."""

    number: int
    fold: frozenset[str]
    training: DialogueLog
    train_cases: list[EvalCase]
    test: list[EvalCase]
    test_lists: dict[str, dict[str, Scored]]
    config: DialogueSourceConfig
    folds: int
    seed: int
    n: int
    rrf_k: int
    lists_for: Callable[[DialogueLog, Sequence[EvalCase]], dict[str, dict[str, Scored]]]


@dataclass
class FoldArmResult:
    """A fold-level arm's output: arm name -> held-out case id -> ranking, and notes for the report."""

    rankings: dict[str, dict[str, list[str]]]
    info: dict[str, Any] = field(default_factory=dict)


FoldArm = Callable[[FoldContext], FoldArmResult]


def _query(case: EvalCase, n: int) -> UserQuery:
    return UserQuery(need=case.query, liked=list(case.liked), exclude=list(case.exclude), n=n)


def _request(case: EvalCase, k: int, allowed: frozenset[str] | None) -> SourceRequest:
    query = _query(case, k)
    return SourceRequest(query=query, k=k, allowed=allowed, exclude=frozenset(query.excluded_ids()))


def dialogue_lists(log: DialogueLog, config: DialogueSourceConfig, cases: Sequence[EvalCase], k: int,
                   allowed: frozenset[str] | None,
                   attributes: AttributeIndex | None = None) -> dict[str, dict[str, Scored]]:  # fmt: skip
    """Per case, the dialogue sources' lists, fitted on ``log`` with ``config`` (and the attribute source's list
    when ``attributes`` is given)."""
    sources = dialogue_sources(fit_dialogue_model(log, config), attributes)
    out: dict[str, dict[str, Scored]] = {}
    for case in cases:
        request = _request(case, k, allowed)
        out[case.case_id] = {s.name: s.retrieve(request) for s in sources}
    return out


def fuse(lists: Mapping[str, Scored], weights: Mapping[str, float], case: EvalCase, n: int, rrf_k: int) -> list[str]:
    rankings = {name: ranked for name, ranked in lists.items() if weights.get(name, 0.0) > 0}
    fused = rrf_fuse(rankings, weights=weights, rrf_k=rrf_k, n=n, exclude=case.liked)
    return [c.item_id for c in fused]


def _golds(cases: Sequence[EvalCase]) -> dict[str, list[str]]:
    return {c.case_id: list(c.gold) for c in cases}


def validation_part(
    log: DialogueLog, cases: Sequence[EvalCase], folds: int, seed: int
) -> tuple[DialogueLog, list[EvalCase]]:
    """A seeded validation part of ``log``'s dialogues (the size of one of ``folds`` folds): the log without them
    (to fit on) and the cases of those dialogues (to score). Settings are chosen there, never on a held-out fold."""
    dialogues = sorted(log.dialog_ids)
    random.Random(seed).shuffle(dialogues)
    valid = set(dialogues[: max(1, len(dialogues) // max(1, folds - 1))])
    valid_cases = [c for c in cases if str(c.meta.get("dialog_id") or c.case_id) in valid]
    return log.without(valid), valid_cases


def choose_config(log: DialogueLog, cases: Sequence[EvalCase], folds: int, seed: int, k: int,
                  allowed: frozenset[str] | None) -> tuple[DialogueSourceConfig, list[dict[str, Any]]]:  # fmt: skip
    """The grid setting with the best comention Recall@10 (then @50) on a validation part of ``log``'s
    dialogues, fitted on the rest."""
    fit_log, valid_cases = validation_part(log, cases, folds, seed)
    rows = []
    for config in CONFIG_GRID:
        lists = dialogue_lists(fit_log, config, valid_cases, k, allowed)
        ranked = {cid: [i for i, _ in parts["comention"]] for cid, parts in lists.items()}
        scores = ievalm_recall(_golds(valid_cases), ranked)
        rows.append({**config.model_dump(), **scores})
    best = max(range(len(rows)), key=lambda i: (rows[i]["recall@10"], rows[i]["recall@50"], -i))
    return CONFIG_GRID[best], rows


def refuse_held_out(log: DialogueLog, held_out: frozenset[str], what: str, hint: str) -> None:
    """FoldLeakError when ``log`` holds a dialogue of ``held_out`` (``what``: the sentence's start, e.g. "a fold-level
    arm asked for sources fitted on")."""
    leaked = sorted(log.dialog_ids & held_out)
    if leaked:
        raise FoldLeakError(f"{what} {len(leaked)} held-out dialogues (e.g. {', '.join(leaked[:3])})", hint=hint)


ListsFor = Callable[[DialogueLog, Sequence[EvalCase]], dict[str, dict[str, Scored]]]


def _lists_for(content_lists: Mapping[str, dict[str, Scored]], fold: frozenset[str], config: DialogueSourceConfig,
               k: int, allowed: frozenset[str] | None, attributes: AttributeIndex | None) -> ListsFor:  # fmt: skip
    def lists_for(log: DialogueLog, wanted: Sequence[EvalCase]) -> dict[str, dict[str, Scored]]:
        refuse_held_out(log, fold, "a fold-level arm asked for sources fitted on",
                        "fit only on the fold's training log (FoldContext.training) or a part of it")  # fmt: skip
        learned = dialogue_lists(log, config, wanted, k, allowed, attributes)
        return {c.case_id: {**content_lists[c.case_id], **learned[c.case_id]} for c in wanted}

    return lists_for


def run_folds(
    cases: Sequence[EvalCase],
    content: Callable[[EvalCase], dict[str, Scored]],
    *,
    folds: int = 5,
    seed: int = 0,
    arms: Mapping[str, Mapping[str, float]] | None = None,
    allowed: frozenset[str] | None = None,
    k_per_source: int = 100,
    rrf_k: int = 60,
    progress: bool = True,
    attributes: AttributeIndex | None = None,
    fold_arms: Sequence[FoldArm] = (),
) -> tuple[dict[str, dict[str, float]], list[FoldResult]]:
    """iEvaLM-CRS recall of each arm over all folds (pooled samples), and the per-fold details.

    ``content(case)`` returns the content sources' lists for a case (not learned from the log); ``attributes``
    (the catalog's field values) adds the attribute source, its prior counted on each fold's training log;
    ``fold_arms`` learn per fold from a :class:`FoldContext` (the fold's training side only) and add their arms."""
    arms = dict(arms or default_arms())
    n = max(IEVALM_KS)
    log = log_from_cases(cases)
    content_lists = {c.case_id: content(c) for c in tqdm(cases, desc="content sources", disable=not progress)}
    results: list[FoldResult] = []
    pooled: dict[str, dict[str, list[str]]] = {name: {} for name in arms}
    for number, fold in enumerate(tqdm(dialogue_folds(cases, folds, seed), desc="folds", disable=not progress)):
        training = train_log(log, fold)
        train_cases = [c for c in cases if str(c.meta.get("dialog_id") or c.case_id) not in fold]
        config, validation = choose_config(training, train_cases, folds, seed + number, k_per_source, allowed)
        test = fold_cases(cases, fold)
        learned = dialogue_lists(training, config, test, k_per_source, allowed, attributes)
        result = FoldResult(number, len(fold), len(test), len(training), config, validation,
                            leaked_dialogues=len(training.dialog_ids & fold))  # fmt: skip
        for name, weights in arms.items():
            ranked = {c.case_id: fuse({**content_lists[c.case_id], **learned[c.case_id]}, weights, c, n, rrf_k)
                      for c in test}  # fmt: skip
            result.rankings[name] = ranked
            pooled[name].update(ranked)
        frozen = frozenset(fold)
        context = FoldContext(
            number, frozen, training, train_cases, test,
            {c.case_id: {**content_lists[c.case_id], **learned[c.case_id]} for c in test}, config, folds,
            seed + number, n, rrf_k, _lists_for(content_lists, frozen, config, k_per_source, allowed, attributes),
        )  # fmt: skip
        for arm in fold_arms:
            done = arm(context)
            for name, ranked in done.rankings.items():
                result.rankings[name] = ranked
                pooled.setdefault(name, {}).update(ranked)
            result.extra.update(done.info)
        results.append(result)
    golds = _golds(cases)
    return {name: ievalm_recall(golds, ranked) for name, ranked in pooled.items()}, results
