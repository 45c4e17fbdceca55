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
from eval.crs_folds import FoldArmResult, FoldContext, refuse_held_out
from eval.datasets import EvalCase
from eval.dialogue_log import read_dialogue_log
from retrieval.candidates import CandidateGenerator, Scored
from retrieval.conversation_ranker import RANKER_KIND, DialogueStats, SavedConversationRanker, rank_turn
from retrieval.dialogue_log import DialogueLog, DialogueLogReport, DialogueTurn
from retrieval.dialogue_sources import (
    ARTIFACT_KIND,
    DialogueModel,
    DialogueSourceConfig,
    dialogue_sources,
    fit_cached,
    fit_dialogue_model,
)
from retrieval.fitted import artifact_dir
from retrieval.interactions import Interactions
from retrieval.store import Store
from retrieval.types import UserQuery
from train.crs_ltr import ConversationRanker, CrsLtrConfig

if TYPE_CHECKING:
    from agent.pipeline import Recommender

__all__ = [
    "LIVE_ARM",
    "DialogueFit",
    "LiveRankerArm",
    "fit_dialogue_ranker",
    "fit_dialogue_sources",
    "live_arm",
    "log_cases",
    "serving_generator",
    "turn_positions",
]


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
    """The log's turns that recommended something, as cases: ``liked`` = mentioned, gold = recommended, ``query``
    = the turn's text (None when the log has none), ``turn_id`` = the turn's position among its dialogue's logged
    turns (0 first; the live chat's ``RecommendRequest.turn`` counts the same way: the session's earlier
    recommendation turns)."""
    seen: dict[str, int] = {}
    cases = []
    for turn in log.turns:
        position = seen.get(turn.dialog_id, 0)
        seen[turn.dialog_id] = position + 1
        if turn.recommended:
            cases.append(EvalCase(case_id=f"{turn.dialog_id}#{position}", query=turn.text, liked=list(turn.mentioned),
                                  gold={i: 1 for i in turn.recommended},
                                  meta={"dialog_id": turn.dialog_id, "turn_id": position}))  # fmt: skip
    return cases


def turn_query(case: EvalCase, n: int) -> UserQuery:
    """A logged turn's request to the sources: its text as the request text (``need``, what a live chat turn's
    request carries; None when the log has no text) and its mentioned movies as the liked seeds."""
    return UserQuery(need=case.query, liked=list(case.liked), n=n)


def fit_dialogue_ranker(recommender: Recommender, log: DialogueLog, model: DialogueModel, config: CrsLtrConfig, *,
                        folds: int = 5, seed: int = 0,
                        held_out: frozenset[str] = frozenset()) -> SavedConversationRanker:  # fmt: skip
    """The conversation ranker (:class:`train.crs_ltr.ConversationRanker`) fitted on the WHOLE ``log``: groups
    cross-fitted on ``folds - 1`` parts of it, early stopping and the pool on a validation part. Its candidate lists
    come from the live pipeline's own sources (the dialogue ones refitted per part with ``model``'s settings), fused
    with the live fusion weights, so a served turn's features are computed exactly as a training turn's; a turn's
    text (where the log has it) is its request text, as a live chat turn's.

    ``held_out``: dialogue ids the fit must never see (a held-out fold, ``recagent eval folds --live-ranker``); a
    ``log`` holding any of them, or any list asked for on a log holding them, is refused (:class:`FoldLeakError`)."""
    _refuse_held_out(log, held_out)
    cases = log_cases(log)
    fusion = recommender.settings.fusion_config()
    live = recommender.generator
    learned = dialogue_sources(model, recommender.attribute_index)
    dialogue_names = {s.name for s in learned}
    content = [s for s in live.sources if s.name not in dialogue_names]

    def lists_for(part: DialogueLog, wanted: Sequence[EvalCase]) -> dict[str, dict[str, Scored]]:
        _refuse_held_out(part, held_out)
        fitted = fit_dialogue_model(part, model.config)
        sources = [*content, *dialogue_sources(fitted, recommender.attribute_index)]
        generator = CandidateGenerator(live.collection, sources, fusion, restrict_to_catalog=live.restrict_to_catalog)
        return {c.case_id: generator.run_sources(turn_query(c, 1)) for c in wanted}

    ctx = FoldContext(0, held_out, log, cases, [], {}, model.config, folds, seed, 50, fusion.rrf_k, lists_for)
    items = recommender.catalog_items
    # the served generator's weights: its content sources and the dialogue sources of ``model`` (a source the
    # settings do not name counts 1.0 there, as in run_sources), whether or not ``recommender`` loaded a dialogue log
    weights = {s.name: fusion.weights.get(s.name, 1.0) for s in [*content, *learned]}
    ranker = ConversationRanker(weights, items, config=config)
    fitted = ranker.fit(ctx)
    fitted.fingerprint = model.fingerprint
    fitted.stats = DialogueStats.of(log)
    fitted.info["turns"] = len(log)
    fitted.info["turns_with_text"] = sum(1 for t in log.turns if t.text)
    return fitted


def _refuse_held_out(log: DialogueLog, held_out: frozenset[str]) -> None:
    refuse_held_out(log, held_out, "the live conversation ranker was asked to fit on",
                    "fit it on the fold's training log only (FoldContext.training)")  # fmt: skip


def serving_generator(recommender: Recommender, model: DialogueModel) -> CandidateGenerator:
    """The generator a live chat turn is served with when the collection's dialogue sources serve ``model``: the
    recommender's own sources (any dialogue sources it loaded replaced) plus ``model``'s, the live fusion."""
    live = recommender.generator
    learned = dialogue_sources(model, recommender.attribute_index)
    names = {s.name for s in learned}
    sources = [*(s for s in live.sources if s.name not in names), *learned]
    return CandidateGenerator(live.collection, sources, recommender.settings.fusion_config(),
                              restrict_to_catalog=live.restrict_to_catalog)  # fmt: skip


def turn_positions(cases: Sequence[EvalCase]) -> dict[str, int]:
    """Each case's position among its dialogue's cases (0 first, in the given order): the turn feature as
    :func:`log_cases` counts it for training and the live chat counts it (``RecommendRequest.turn``)."""
    seen: dict[str, int] = {}
    out = {}
    for case in cases:
        dialog = str(case.meta.get("dialog_id") or case.case_id)
        out[case.case_id] = seen.get(dialog, 0)
        seen[dialog] = out[case.case_id] + 1
    return out


LIVE_ARM = "live ranker (train dialogue-sources --ranker, served by the chat's code)"


class LiveRankerArm:
    """A fold-level arm (:data:`eval.crs_folds.FoldArm`) scoring the LIVE training path held-out: per fold, the
    dialogue sources are fitted on the fold's training log with the fold's chosen settings and
    :func:`fit_dialogue_ranker` (what ``recagent train dialogue-sources --ranker`` runs) fits the ranker on that log
    only (``held_out`` = the fold: refused if it leaks); then every held-out turn is served by the chat's code
    (:func:`retrieval.conversation_ranker.rank_turn` over :func:`serving_generator`), its request the turn's text,
    its mentioned movies and its position. A feature computed differently in training and serving shows up here as a
    worse number."""

    def __init__(self, recommender: Recommender, config: CrsLtrConfig | None = None, *, name: str = LIVE_ARM) -> None:
        self.recommender, self.name = recommender, name
        self.config = config or CrsLtrConfig()
        self.fits: list[frozenset[str]] = []
        """The dialogue ids each fold's fit was given (the leakage test reads them)."""

    def __call__(self, ctx: FoldContext) -> FoldArmResult:
        started = time.perf_counter()
        _refuse_held_out(ctx.training, ctx.fold)
        model = fit_dialogue_model(ctx.training, ctx.config)
        self.fits.append(frozenset(ctx.training.dialog_ids))
        fitted = fit_dialogue_ranker(self.recommender, ctx.training, model, self.config, folds=ctx.folds,
                                     seed=ctx.seed, held_out=ctx.fold)  # fmt: skip
        fit_s = time.perf_counter() - started
        generator = serving_generator(self.recommender, model)
        features = self.recommender.conversation_features
        positions = turn_positions(ctx.test)
        rankings = {}
        for case in ctx.test:
            query = UserQuery(need=case.query, liked=list(case.liked), exclude=list(case.exclude), n=ctx.n)
            ordered, _ = rank_turn(fitted, generator, features, query, positions[case.case_id], ctx.n)
            rankings[case.case_id] = [c.item_id for c in ordered]
        info = {**fitted.info, "pool": fitted.pool, "best_iteration": fitted.iteration,
                "sources": sorted(fitted.weights), "fit_seconds_total": round(fit_s, 1),
                "total_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        return FoldArmResult({self.name: rankings}, {"live": info})


def live_arm(settings: Settings, collection: str, log: Interactions | None) -> LiveRankerArm:
    """The live-ranker arm of ``recagent eval folds --live-ranker`` (:class:`eval.crs_report.LiveArmFactory`): a
    live pipeline over ``collection`` with ``settings`` and ``log`` as its interaction log, its collection's own
    fitted dialogue log ignored (each fold fits its own)."""
    from agent.pipeline import Recommender

    return LiveRankerArm(Recommender(settings, collection=collection, interactions=log, dialogue_sources=False))


def _known(log: DialogueLog, known: set[str]) -> DialogueLog:
    """Session items no longer in the collection are dropped and counted as unmatched."""
    report = log.report
    turns = []
    for turn in log.turns:
        parts = [tuple(i for i in part if i in known) for part in (turn.mentioned, turn.recommended, turn.rejected)]
        lost = sum(len(a) for a in (turn.mentioned, turn.recommended, turn.rejected)) - sum(len(p) for p in parts)
        report.unmatched += lost
        report.matched_id -= lost
        mentioned, recommended, rejected = parts
        turns.append(DialogueTurn(turn.dialog_id, mentioned, recommended, rejected, turn.text))
    report.count_text(turns)
    return DialogueLog(turns, report)
