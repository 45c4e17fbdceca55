"""recagent's own chat sessions as a dialogue log, so a deployment learns from its conversations.

A session gives one turn: ``mentioned`` = the items the user said they like (``preferences.liked_ids``, in
order), ``recommended`` = the shown items the user accepted, ``rejected`` = the shown items turned down, ``text`` =
the user's messages (the last 6, :func:`retrieval.dialogue_log.context_query`, the evaluator's function), so the
conversation ranker learns the request-text features a live chat turn is served with. Sessions with nothing
accepted or rejected teach nothing and are counted as skipped. ``recagent sessions export`` writes
these turns in the generic JSONL form (:mod:`retrieval.dialogue_log`); ``recagent train dialogue-sources
--sessions`` fits on them directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from agent.sessions.models import SessionState, SessionStore
from retrieval.dialogue_log import DialogueLog, DialogueLogReport, DialogueTurn, context_query

__all__ = ["iter_sessions", "session_log", "session_turn", "write_log_jsonl"]


def session_turn(state: SessionState) -> DialogueTurn | None:
    """The session's turn, or None when the user accepted and rejected nothing."""
    accepted = tuple(dict.fromkeys(state.accepted))
    rejected = tuple(i for i in dict.fromkeys(state.rejected) if i not in accepted)
    if not accepted and not rejected:
        return None
    liked = tuple(i for i in dict.fromkeys(state.preferences.liked_ids) if i not in accepted)
    text = context_query([t.content for t in state.turns if t.role == "user"])
    return DialogueTurn(state.session_id, liked, accepted, rejected, text)


def iter_sessions(store: SessionStore, limit: int = 1_000_000) -> Iterator[SessionState]:
    for session_id in store.list_ids(limit=limit):
        yield store.get(session_id)


def session_log(states: Iterable[SessionState], source: str = "sessions") -> DialogueLog:
    """A dialogue log of the sessions, with how many were read and kept."""
    report = DialogueLogReport(source=source, format="sessions")
    turns: list[DialogueTurn] = []
    for state in states:
        report.dialogues += 1
        report.turns_read += 1
        turn = session_turn(state)
        if turn is None:
            report.skipped += 1
            continue
        report.names_total += len(turn.mentioned) + len(turn.recommended) + len(turn.rejected)
        report.matched_id += len(turn.mentioned) + len(turn.recommended) + len(turn.rejected)
        turns.append(turn)
    report.turns_kept = len(turns)
    report.count_text(turns)
    return DialogueLog(turns, report)


def write_log_jsonl(log: DialogueLog, path: Path) -> int:
    """Write ``log`` in the generic JSONL form (``context``: the turn's text, when it has one); returns the number
    of lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for t in log.turns:
            row = {"dialog_id": t.dialog_id, "mentioned": list(t.mentioned), "recommended": list(t.recommended),
                   "rejected": list(t.rejected)}  # fmt: skip
            if t.text:
                row["context"] = [t.text]
            fh.write(json.dumps(row) + "\n")
    return len(log.turns)
