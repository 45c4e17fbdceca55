"""Raw ReDial dialogues (``dialogues.jsonl``) cut into recommendation turns (the ``turns.jsonl`` shape).

The turn-level protocol of the LLM conversational-recommendation papers (iEvaLM-CRS, "LLMs as zero-shot
conversational recommenders") evaluates one case per recommender utterance that mentions movies:

- consecutive messages of the same speaker are merged into one utterance (CRSLab convention);
- when the recommender speaks first, the context starts with an empty seeker utterance, so roles alternate;
- ``@<movieId>`` mentions are replaced by the dialogue's ``movieMentions`` name (whitespace normalised);
- a case is every recommender utterance with annotated movies (``item``) after at least one earlier utterance:
  ``context`` = the earlier utterances, ``rec`` = the movies it names, ``entity`` = the entities and movies of the
  earlier utterances, ``turn_id`` = the ``turn_id`` of its first message.

On ``../shared/data/redial-dev`` this reproduces the published ``turns.jsonl`` exactly (context and gold names of
all 2,716 turns) and yields 175 more turns, which the publishers filtered with annotations not in the file.
Dialogues without messages or speaker ids are counted as skipped, never silently dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import InputError

__all__ = ["CutReport", "cut_dialogue", "is_dialogue_file", "iter_dialogue_turns", "utterances"]

_MENTION = re.compile(r"@(\d+)")


@dataclass
class CutReport:
    dialogues: int = 0
    skipped: int = 0
    turns: int = 0


def is_dialogue_file(path: Path) -> bool:
    """True when the first JSON line of ``path`` is a raw dialogue (has ``messages``), not a cut turn."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(row, dict) and "messages" in row and "context" not in row
    return False


def _text(message: dict[str, Any], mentions: dict[str, str]) -> str:
    def name(match: re.Match[str]) -> str:
        found = mentions.get(match.group(1))
        return " ".join(str(found).split()) if found else match.group(0)

    return _MENTION.sub(name, str(message.get("text") or ""))


def utterances(dialogue: dict[str, Any]) -> list[dict[str, Any]]:
    """The dialogue's utterances in order: consecutive messages of one speaker merged, ``@<movieId>`` replaced by
    the movie's name. Each ``{sender, text, items (annotated names), entities, movie_ids (the ``@`` mentions, in
    order), turn_id}``."""
    messages = dialogue.get("messages")
    if not isinstance(messages, list):
        raise ValueError("a dialogue needs 'messages' (a list)")
    mentions = {str(k): str(v) for k, v in (dialogue.get("movieMentions") or {}).items() if v}
    out: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise ValueError("every message must be a JSON object")
        text = _text(message, mentions)
        items = [str(i) for i in message.get("item") or []]
        entities = [str(e) for e in message.get("entity") or []]
        ids = _MENTION.findall(str(message.get("text") or ""))
        sender = message.get("senderWorkerId")
        if out and out[-1]["sender"] == sender:
            last = out[-1]
            last["text"] = f"{last['text']} {text}"
            last["items"] += items
            last["entities"] += entities
            last["movie_ids"] += ids
        else:
            turn_id = message.get("turn_id", len(out))
            out.append(
                {"sender": sender, "text": text, "items": items, "entities": entities, "movie_ids": ids,
                 "turn_id": turn_id}
            )  # fmt: skip
    return out


def cut_dialogue(dialogue: dict[str, Any]) -> list[dict[str, Any]]:
    """The recommendation turns of one raw dialogue (see the module doc for the rules)."""
    recommender = dialogue.get("respondentWorkerId")
    if not isinstance(dialogue.get("messages"), list) or recommender is None:
        raise ValueError("a dialogue needs 'messages' (a list) and 'respondentWorkerId'")
    said = utterances(dialogue)
    context: list[str] = [""] if said and said[0]["sender"] == recommender else []
    seen_entities: list[str] = []
    turns = []
    for utt in said:
        if utt["sender"] == recommender and utt["items"] and context:
            turns.append(
                {
                    "dialog_id": str(dialogue.get("conversationId", "")),
                    "turn_id": utt["turn_id"],
                    "context": list(context),
                    "entity": list(seen_entities),
                    "rec": list(utt["items"]),
                    "resp": utt["text"],
                }
            )
        context.append(utt["text"])
        seen_entities += utt["entities"] + utt["items"]
    return turns


def iter_dialogue_turns(path: Path, report: CutReport) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, turn row)`` for every turn of every dialogue in ``path``; ``report`` counts dialogues,
    skipped (malformed) dialogues and turns."""
    for number, row in dialogue_lines(path):
        report.dialogues += 1
        try:
            turns = cut_dialogue(row) if isinstance(row, dict) else None
        except ValueError:
            turns = None
        if turns is None:
            report.skipped += 1
            continue
        report.turns += len(turns)
        for turn in turns:
            yield number, turn


def dialogue_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON)`` for every non-blank line of a raw dialogue file (one dialogue per line); a line
    that is not JSON stops the read with an InputError naming it."""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} line {number} is not JSON: {exc.msg}", hint="one dialogue per line") from exc
