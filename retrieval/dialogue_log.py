"""Dialogue logs as training data: per recommendation turn, the items mentioned before it and the items recommended.

A :class:`DialogueLog` is what the conversation sources (:mod:`retrieval.dialogue_sources`) learn from. Readers
that build one from files live in :mod:`eval.dialogue_log` (raw ReDial dialogues, turn files, a generic JSONL
mapping) and in :mod:`agent.sessions.log` (recagent's own chat sessions); all ids here are catalog ids.

The generic JSONL form, one turn per line, is also what ``recagent sessions export`` writes::

    {"dialog_id": "d1", "mentioned": ["id or name", ...], "recommended": [...], "rejected": [...],
     "context": ["utterance before the turn", ...]}

``context`` is optional (a list of utterances, or one string): the conversation's text before the turn. When a log
has it, a turn's request to the sources carries it as the request text (``UserQuery.need``), so the conversation
ranker (``recagent train dialogue-sources --ranker``) learns the ``semantic`` source's features the way a live chat
turn, which has text, is served. A log without it still trains (the semantic source then gets no text).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CONTEXT_TURNS", "DialogueLog", "DialogueLogReport", "DialogueTurn", "context_query", "dialogue_fingerprint"]

CONTEXT_TURNS = 6
"""Utterances of a turn's context that make its request text (:func:`context_query`)."""


def context_query(context: Sequence[Any] | str | None, context_turns: int = CONTEXT_TURNS) -> str | None:
    """A conversation turn's request text: its last ``context_turns`` non-empty utterances, one per line, the last
    3,900 characters; None when there is none. ``context`` is the list of utterances before the turn (one string
    counts as one utterance). The evaluator's cases (:func:`eval.datasets.load_turns`) and the dialogue logs the
    conversation ranker trains on (:mod:`eval.dialogue_log`, :mod:`agent.sessions.log`) build it with this one
    function."""
    if context is None:
        return None
    utterances = [context] if isinstance(context, str) else list(context)
    kept = [str(u) for u in utterances if str(u).strip()][-context_turns:]
    return "\n".join(kept)[-3900:] or None


@dataclass(frozen=True)
class DialogueTurn:
    """One recommendation turn: ``mentioned`` in conversation order (liked or named before the turn),
    ``recommended`` the items the recommender named (or the user accepted), ``rejected`` the ones turned down;
    ``text``: the conversation's text before the turn (the request text of its query), None when the log has none.
    The text is not part of :func:`dialogue_fingerprint` (the dialogue sources learn from the ids only)."""

    dialog_id: str
    mentioned: tuple[str, ...]
    recommended: tuple[str, ...]
    rejected: tuple[str, ...] = ()
    text: str | None = None


class DialogueLogReport(BaseModel):
    """What a reader took in, what it kept and what it could not match to the catalog."""

    model_config = ConfigDict(extra="forbid")

    source: str = ""
    format: str = ""
    dialogues: int = 0
    turns_read: int = 0
    turns_kept: int = Field(0, description="Turns with at least one recommended (or rejected) catalog item.")
    names_total: int = Field(0, description="Mentioned + recommended + rejected entries read.")
    matched_id: int = 0
    matched_title: int = Field(0, description="Matched by title (exact or normalised, the evaluator's matching).")
    unmatched: int = 0
    unmatched_examples: list[str] = Field(default_factory=list)
    skipped: int = Field(0, description="Malformed dialogues or lines (counted, not read).")
    turns_with_text: int = Field(0, description="Kept turns with the conversation's text before them.")
    turns_without_text: int = Field(0, description="Kept turns without text (their requests carry no text).")

    def count_text(self, turns: Iterable[DialogueTurn]) -> None:
        """Set the with / without text counts from the kept ``turns``."""
        kept = list(turns)
        self.turns_with_text = sum(1 for t in kept if t.text)
        self.turns_without_text = len(kept) - self.turns_with_text

    def text_line(self) -> str:
        """``N turns with text, M without`` (the CLI's line)."""
        return f"{self.turns_with_text} turns with text, {self.turns_without_text} without"


@dataclass
class DialogueLog:
    """Recommendation turns (catalog ids) and the report of how they were read."""

    turns: list[DialogueTurn]
    report: DialogueLogReport = field(default_factory=DialogueLogReport)

    def __len__(self) -> int:
        return len(self.turns)

    @property
    def dialog_ids(self) -> set[str]:
        return {t.dialog_id for t in self.turns}

    def without(self, dialog_ids: Iterable[str]) -> DialogueLog:
        """The same log without the turns of ``dialog_ids`` (a fold's training log)."""
        drop = set(dialog_ids)
        kept = [t for t in self.turns if t.dialog_id not in drop]
        return DialogueLog(kept, _recount(self.report, kept))

    def only(self, dialog_ids: Iterable[str]) -> DialogueLog:
        keep = set(dialog_ids)
        kept = [t for t in self.turns if t.dialog_id in keep]
        return DialogueLog(kept, _recount(self.report, kept))

    @classmethod
    def concat(cls, logs: Sequence[DialogueLog]) -> DialogueLog:
        turns = [t for log in logs for t in log.turns]
        report = DialogueLogReport(source=" + ".join(log.report.source for log in logs), format="combined",
                                   turns_kept=len(turns))  # fmt: skip
        report.count_text(turns)
        return cls(turns, report)


def _recount(report: DialogueLogReport, kept: Sequence[DialogueTurn]) -> DialogueLogReport:
    out = report.model_copy(update={"turns_kept": len(kept)})
    out.count_text(kept)
    return out


def dialogue_fingerprint(log: DialogueLog) -> str:
    """sha256 (first 16 hex characters) over a log's turns, dialogues in id order, turns in log order: the same
    turns give the same fingerprint whatever order the dialogues come in; any change gives another one."""
    by_dialogue: dict[str, list[DialogueTurn]] = {}
    for turn in log.turns:
        by_dialogue.setdefault(turn.dialog_id, []).append(turn)
    digest = hashlib.sha256()
    for dialog_id in sorted(by_dialogue):
        digest.update(f"{dialog_id}\x1d".encode("utf-8", "surrogatepass"))
        for turn in by_dialogue[dialog_id]:
            for part in (turn.mentioned, turn.recommended, turn.rejected):
                digest.update(("\x1f".join(part) + "\x1e").encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]
