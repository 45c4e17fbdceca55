"""Dialogue logs as training data: per recommendation turn, the items mentioned before it and the items recommended.

A :class:`DialogueLog` is what the conversation sources (:mod:`retrieval.dialogue_sources`) learn from. Readers
that build one from files live in :mod:`eval.dialogue_log` (raw ReDial dialogues, turn files, a generic JSONL
mapping) and in :mod:`agent.sessions.log` (recagent's own chat sessions); all ids here are catalog ids.

The generic JSONL form, one turn per line, is also what ``recagent sessions export`` writes::

    {"dialog_id": "d1", "mentioned": ["id or name", ...], "recommended": [...], "rejected": [...]}
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DialogueLog", "DialogueLogReport", "DialogueTurn", "dialogue_fingerprint"]


@dataclass(frozen=True)
class DialogueTurn:
    """One recommendation turn: ``mentioned`` in conversation order (liked or named before the turn),
    ``recommended`` the items the recommender named (or the user accepted), ``rejected`` the ones turned down."""

    dialog_id: str
    mentioned: tuple[str, ...]
    recommended: tuple[str, ...]
    rejected: tuple[str, ...] = ()


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
        return DialogueLog(kept, self.report.model_copy(update={"turns_kept": len(kept)}))

    def only(self, dialog_ids: Iterable[str]) -> DialogueLog:
        keep = set(dialog_ids)
        kept = [t for t in self.turns if t.dialog_id in keep]
        return DialogueLog(kept, self.report.model_copy(update={"turns_kept": len(kept)}))

    @classmethod
    def concat(cls, logs: Sequence[DialogueLog]) -> DialogueLog:
        turns = [t for log in logs for t in log.turns]
        return cls(turns, DialogueLogReport(source=" + ".join(log.report.source for log in logs),
                                            format="combined", turns_kept=len(turns)))  # fmt: skip


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
