"""`recagent train dialogue-sources`: fit the conversation sources of a collection on dialogue logs.

The logs (files in any format of :mod:`eval.dialogue_log`, and/or recagent's own chat sessions through
:mod:`agent.sessions.log`) are matched to the collection's items, combined, and fitted into
``retrieval.fitted.artifact_dir(store, collection, "comention")`` (reused when the same log was fitted with the
same settings). The live pipeline picks the state up from there on its next start.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import InputError
from agent.sessions import open_session_store
from agent.sessions.log import iter_sessions, session_log
from agent.settings import Settings
from eval.crs_folds import FoldContext
from eval.datasets import EvalCase
from eval.dialogue_log import read_dialogue_log
from retrieval.candidates import CandidateGenerator, Scored
from retrieval.conversation_ranker import RANKER_KIND, DialogueStats, SavedConversationRanker
from retrieval.dialogue_log import DialogueLog, DialogueLogReport
from retrieval.dialogue_sources import (
    ARTIFACT_KIND,
    DialogueModel,
    DialogueSourceConfig,
    dialogue_sources,
    fit_cached,
    fit_dialogue_model,
)
from retrieval.fitted import artifact_dir
from retrieval.store import Store
from retrieval.types import UserQuery
from train.crs_ltr import ConversationRanker, CrsLtrConfig

if TYPE_CHECKING:
    from agent.pipeline import Recommender

__all__ = ["DialogueFit", "fit_dialogue_ranker", "fit_dialogue_sources", "log_cases"]


@dataclass
class DialogueFit:
    model: DialogueModel
    reused: bool
    folder: Path
    reports: list[DialogueLogReport]
    seconds: float
    peak_mib: float
    ranker: SavedConversationRanker | None = None
    ranker_folder: Path | None = None


def fit_dialogue_sources(
    settings: Settings,
    logs: Sequence[Path],
    *,
    sessions: bool,
    config: DialogueSourceConfig,
    collection: str | None = None,
    ranker: CrsLtrConfig | None = None,
) -> DialogueFit:
    """Read the logs (and the session store when ``sessions``), fit, and keep the state beside the store.
    ``ranker``: also fit the conversation ranker on the whole log (:func:`fit_dialogue_ranker`) and keep it in
    ``artifact_dir(store, collection, RANKER_KIND)``."""
    if not logs and not sessions:
        raise InputError("no dialogue log given", hint="give one or more .jsonl logs and/or --sessions")
    started = time.perf_counter()
    tracemalloc.start()
    try:
        store = Store(settings.store_config())
        name = collection or settings.collection
        coll = store.collection(name)  # a clear error naming the existing collections when it is missing
        items = list(coll.get_items(coll.ids()).values())
        parts = [read_dialogue_log(path, items) for path in logs]
        if sessions:
            session_store = open_session_store(settings)
            try:
                known = {i.id for i in items}
                parts.append(_known(session_log(iter_sessions(session_store)), known))
            finally:
                session_store.close()
        log = DialogueLog.concat(parts)
        if not any(t.recommended for t in log.turns):
            raise InputError(
                "the dialogue logs hold no accepted or recommended catalog item",
                hint="accept recommendations in chat sessions first, or give a dialogue log file",
            )
        folder = artifact_dir(store.config, name, ARTIFACT_KIND)
        model, reused = fit_cached(log, config, folder)
        fitted, ranker_folder = None, None
        if ranker is not None:
            from agent.pipeline import Recommender

            recommender = Recommender(settings, store=store, collection=name)
            fitted = fit_dialogue_ranker(recommender, log, model, ranker)
            ranker_folder = artifact_dir(store.config, name, RANKER_KIND)
            fitted.save(ranker_folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return DialogueFit(model, reused, folder, [p.report for p in parts], time.perf_counter() - started, peak / 2**20,
                       fitted, ranker_folder)  # fmt: skip


def log_cases(log: DialogueLog) -> list[EvalCase]:
    """The log's turns that recommended something, as cases: ``liked`` = mentioned, gold = recommended,
    ``turn_id`` = the turn's position among its dialogue's logged turns (0 first; the live chat's
    ``RecommendRequest.turn`` counts the same way: the session's earlier recommendation turns)."""
    seen: dict[str, int] = {}
    cases = []
    for turn in log.turns:
        position = seen.get(turn.dialog_id, 0)
        seen[turn.dialog_id] = position + 1
        if turn.recommended:
            cases.append(EvalCase(case_id=f"{turn.dialog_id}#{position}", liked=list(turn.mentioned),
                                  gold={i: 1 for i in turn.recommended},
                                  meta={"dialog_id": turn.dialog_id, "turn_id": position}))  # fmt: skip
    return cases


def turn_query(liked: Sequence[str], n: int) -> UserQuery:
    """A logged turn's request to the sources (its mentioned movies; a log has no request text)."""
    return UserQuery(liked=list(liked), n=n)


def fit_dialogue_ranker(recommender: Recommender, log: DialogueLog, model: DialogueModel, config: CrsLtrConfig, *,
                        folds: int = 5, seed: int = 0) -> SavedConversationRanker:  # fmt: skip
    """The conversation ranker (:class:`train.crs_ltr.ConversationRanker`) fitted on the WHOLE ``log``: groups
    cross-fitted on ``folds - 1`` parts of it, early stopping and the pool on a validation part. Its candidate lists
    come from the live pipeline's own sources (the dialogue ones refitted per part with ``model``'s settings), fused
    with the live fusion weights, so a served turn's features are computed exactly as a training turn's."""
    cases = log_cases(log)
    fusion = recommender.settings.fusion_config()
    live = recommender.generator
    dialogue_names = {s.name for s in dialogue_sources(model, recommender.attribute_index)}
    content = [s for s in live.sources if s.name not in dialogue_names]

    def lists_for(part: DialogueLog, wanted: Sequence[EvalCase]) -> dict[str, dict[str, Scored]]:
        fitted = fit_dialogue_model(part, model.config)
        sources = [*content, *dialogue_sources(fitted, recommender.attribute_index)]
        generator = CandidateGenerator(live.collection, sources, fusion, restrict_to_catalog=live.restrict_to_catalog)
        return {c.case_id: generator.run_sources(turn_query(c.liked, 1)) for c in wanted}

    ctx = FoldContext(0, frozenset(), log, cases, [], {}, model.config, folds, seed, 50, fusion.rrf_k, lists_for)
    items = recommender.catalog_items
    # the live generator's weights (a source the settings do not name counts 1.0 there, as in run_sources)
    weights = {s.name: fusion.weights.get(s.name, 1.0) for s in live.sources}
    ranker = ConversationRanker(weights, items, config=config)
    fitted = ranker.fit(ctx)
    fitted.fingerprint = model.fingerprint
    fitted.stats = DialogueStats.of(log)
    return fitted


def _known(log: DialogueLog, known: set[str]) -> DialogueLog:
    """Session items no longer in the collection are dropped and counted as unmatched."""
    report = log.report
    turns = []
    for turn in log.turns:
        parts = [tuple(i for i in part if i in known) for part in (turn.mentioned, turn.recommended, turn.rejected)]
        lost = sum(len(a) for a in (turn.mentioned, turn.recommended, turn.rejected)) - sum(len(p) for p in parts)
        report.unmatched += lost
        report.matched_id -= lost
        turns.append(type(turn)(turn.dialog_id, *parts))
    return DialogueLog(turns, report)
