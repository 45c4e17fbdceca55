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

from agent.errors import InputError
from agent.sessions import open_session_store
from agent.sessions.log import iter_sessions, session_log
from agent.settings import Settings
from eval.dialogue_log import read_dialogue_log
from retrieval.dialogue_log import DialogueLog, DialogueLogReport
from retrieval.dialogue_sources import ARTIFACT_KIND, DialogueModel, DialogueSourceConfig, fit_cached
from retrieval.fitted import artifact_dir
from retrieval.store import Store

__all__ = ["DialogueFit", "fit_dialogue_sources"]


@dataclass
class DialogueFit:
    model: DialogueModel
    reused: bool
    folder: Path
    reports: list[DialogueLogReport]
    seconds: float
    peak_mib: float


def fit_dialogue_sources(
    settings: Settings,
    logs: Sequence[Path],
    *,
    sessions: bool,
    config: DialogueSourceConfig,
    collection: str | None = None,
) -> DialogueFit:
    """Read the logs (and the session store when ``sessions``), fit, and keep the state beside the store."""
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
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return DialogueFit(model, reused, folder, [p.report for p in parts], time.perf_counter() - started, peak / 2**20)


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
