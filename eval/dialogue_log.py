"""Read dialogue logs (the training data of the conversation sources) from files, matched to a catalog.

Three formats, told apart by the first line:

- raw ReDial ``dialogues.jsonl`` (``{messages, movieMentions, ...}``), cut into turns by :mod:`eval.dialogues`;
- turn files ``{dialog_id, context, entity, rec}`` (the ``turns.jsonl`` shape): mentioned = the ``entity`` entries
  that are movies ("Name (Year)"), recommended = ``rec``;
- the generic mapping ``{dialog_id, mentioned: [...], recommended: [...], rejected: [...], context: [...]}`` (what
  ``recagent sessions export`` writes); ``context`` (the utterances before the turn, or one string) is optional.

Each turn keeps the conversation's text before it (``DialogueTurn.text``) where the log has it: raw ReDial and turn
files always (their ``context``), the generic form when a line has ``context``. The text is built with the
evaluator's own function (:func:`retrieval.dialogue_log.context_query`: the last 6 utterances), so a training
turn's request text is the ``EvalCase.query`` the evaluator builds for the same turn. The report counts turns with
and without text.

Every entry is a catalog id or a title; titles are matched with the evaluator's matching
(:class:`eval.datasets.TitleIndex`: exact, then normalised title + year). Unmatched entries are counted in the
report (with examples), never silently dropped; a log with no matched recommendation is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.errors import InputError
from eval.datasets import _YEAR, EvalCase, TitleIndex, _jsonl
from eval.dialogues import CutReport, is_dialogue_file, iter_dialogue_turns
from retrieval.dialogue_log import DialogueLog, DialogueLogReport, DialogueTurn, context_query
from retrieval.types import Item

__all__ = ["log_from_cases", "read_dialogue_log"]


def _format(path: Path) -> str:
    if is_dialogue_file(path):
        return "redial-dialogues"
    for _, row in _jsonl(path):
        if "recommended" in row or "mentioned" in row:
            return "generic"
        if "rec" in row and "context" in row:
            return "turns"
        break
    raise InputError(
        f"cannot tell the format of the dialogue log {path}",
        hint="each line: a raw ReDial dialogue {messages, ...}, a turn {dialog_id, context, entity, rec}, or "
        "{dialog_id, mentioned: [...], recommended: [...], rejected: [...], context: [...] (optional)}",
    )


def _rows(path: Path, fmt: str, report: DialogueLogReport) -> Iterator[tuple[int, dict[str, Any]]]:
    if fmt != "redial-dialogues":
        dialogues: set[str] = set()
        for number, row in _jsonl(path):
            dialogues.add(str(row.get("dialog_id", number)))
            report.dialogues = len(dialogues)
            yield number, row
        return
    cut = CutReport()
    yield from iter_dialogue_turns(path, cut)
    report.dialogues, report.skipped = cut.dialogues, cut.skipped


def _text(row: dict[str, Any]) -> str | None:
    """The turn's request text from its ``context`` (absent, or not a list / string: no text)."""
    context = row.get("context")
    if isinstance(context, str | list):
        return context_query(context)
    return None


def _lists(row: dict[str, Any], fmt: str) -> tuple[list[str], list[str], list[str]] | None:
    if fmt == "generic":
        parts = [row.get(key) or [] for key in ("mentioned", "recommended", "rejected")]
        if not all(isinstance(p, list) for p in parts):
            return None
        return [str(x) for x in parts[0]], [str(x) for x in parts[1]], [str(x) for x in parts[2]]
    entity, rec = row.get("entity") or [], row.get("rec")
    if not isinstance(entity, list) or not isinstance(rec, list):
        return None
    return [str(e) for e in entity if _YEAR.search(str(e))], [str(r) for r in rec], []


class _Matcher:
    def __init__(self, items: Iterable[Item], report: DialogueLogReport) -> None:
        self.index = TitleIndex(items)
        self.report = report

    def ids(self, names: Sequence[str]) -> tuple[str, ...]:
        out: list[str] = []
        for name in names:
            self.report.names_total += 1
            item_id, _ = self.index.match(name)
            if item_id is None:
                self.report.unmatched += 1
                if len(self.report.unmatched_examples) < 10:
                    self.report.unmatched_examples.append(name)
                continue
            if name.strip() in self.index.ids:
                self.report.matched_id += 1
            else:
                self.report.matched_title += 1
            out.append(item_id)
        return tuple(dict.fromkeys(out))


def read_dialogue_log(path: Path, items: Iterable[Item]) -> DialogueLog:
    """The turns of the dialogue log at ``path`` with catalog ids (see the module doc for the formats)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"dialogue log {path} does not exist", hint="give a .jsonl file (see docs/chat.md)")
    fmt = _format(path)
    report = DialogueLogReport(source=str(path), format=fmt)
    match = _Matcher(items, report)
    turns: list[DialogueTurn] = []
    for number, row in _rows(path, fmt, report):
        report.turns_read += 1
        lists = _lists(row, fmt)
        if lists is None:
            report.skipped += 1
            continue
        mentioned, recommended, rejected = (match.ids(part) for part in lists)
        if recommended or rejected:
            turns.append(DialogueTurn(str(row.get("dialog_id", number)), mentioned, recommended, rejected,
                                      _text(row)))  # fmt: skip
    report.turns_kept = len(turns)
    report.count_text(turns)
    if not any(t.recommended for t in turns):
        raise InputError(
            f"no recommended catalog item in the dialogue log {path}: {report.turns_read} turns read, "
            f"{report.unmatched} of {report.names_total} names unmatched "
            f"(e.g. {', '.join(report.unmatched_examples[:3]) or 'none'})",
            hint="check that the catalog is the one the log refers to (ids, or titles as 'Name (Year)')",
        )
    return DialogueLog(turns, report)


def log_from_cases(cases: Sequence[EvalCase]) -> DialogueLog:
    """A dialogue log from conversation eval cases (``liked`` = mentioned, ``gold`` = recommended, ``text`` = the
    case's query): the training log of a dataset that is its own log (``--folds``)."""
    turns = [DialogueTurn(str(c.meta.get("dialog_id") or c.case_id), tuple(c.liked), tuple(c.gold), (), c.query)
             for c in cases]  # fmt: skip
    report = DialogueLogReport(
        source="eval cases",
        format="cases",
        turns_read=len(turns),
        turns_kept=len(turns),
        dialogues=len({t.dialog_id for t in turns}),
    )
    report.count_text(turns)
    return DialogueLog(turns, report)
