"""Raw ReDial dialogues cut into turns: hand-built dialogues, and the published turns of the dev sample."""

from __future__ import annotations

import json
from pathlib import Path

from eval.datasets import load_dataset
from eval.dialogues import CutReport, cut_dialogue, is_dialogue_file, iter_dialogue_turns

from testkit import ROOT

REDIAL = ROOT.parent / "shared" / "data" / "redial-dev"

SEEKER, RECOMMENDER = 1, 2


def _msg(turn: int, sender: int, text: str, items: list[str] = (), entity: list[str] = ()) -> dict[str, object]:  # type: ignore[assignment]
    return {"turn_id": turn, "senderWorkerId": sender, "text": text, "item": list(items), "entity": list(entity)}


DIALOGUE = {
    "conversationId": "77",
    "initiatorWorkerId": SEEKER,
    "respondentWorkerId": RECOMMENDER,
    "movieMentions": {"10": "The Matrix  (1999)", "20": "Up (2009)"},
    "messages": [
        _msg(0, RECOMMENDER, "Hi! What do you like?"),
        _msg(1, SEEKER, "Something like @20", ["Up (2009)"], ["animation"]),
        _msg(2, SEEKER, "but funnier"),
        _msg(3, RECOMMENDER, "Try @10", ["The Matrix (1999)"]),
        _msg(4, RECOMMENDER, "or @20 again", ["Up (2009)"]),
        _msg(5, SEEKER, "thanks"),
    ],
}


def test_cut_merges_speakers_replaces_mentions_and_alternates_roles() -> None:
    turns = cut_dialogue(DIALOGUE)
    assert len(turns) == 1  # the greeting names no movie; messages 3+4 are one utterance
    turn = turns[0]
    assert turn["dialog_id"] == "77" and turn["turn_id"] == 3
    # the recommender spoke first: an empty seeker utterance keeps the roles alternating
    assert turn["context"] == ["", "Hi! What do you like?", "Something like Up (2009) but funnier"]
    assert turn["rec"] == ["The Matrix (1999)", "Up (2009)"]
    assert turn["resp"] == "Try The Matrix (1999) or Up (2009) again"  # double space in the mention normalised
    assert turn["entity"] == ["animation", "Up (2009)"]


def test_only_a_recommender_first_context_starts_empty() -> None:
    dialogue = dict(DIALOGUE, messages=[_msg(0, RECOMMENDER, "Watch @10", ["The Matrix (1999)"]),
                                        _msg(1, SEEKER, "ok")])  # fmt: skip
    assert [t["context"] for t in cut_dialogue(dialogue)] == [[""]]
    seeker_first = dict(
        DIALOGUE, messages=[_msg(0, SEEKER, "hello"), _msg(1, RECOMMENDER, "@10", ["The Matrix (1999)"])]
    )
    assert cut_dialogue(seeker_first)[0]["context"] == ["hello"]


def test_malformed_dialogues_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "dialogues.jsonl"
    path.write_text(json.dumps(DIALOGUE) + "\n" + json.dumps({"messages": "nope"}) + "\n" + json.dumps([1]) + "\n")
    assert is_dialogue_file(path)
    report = CutReport()
    rows = list(iter_dialogue_turns(path, report))
    assert (report.dialogues, report.skipped, report.turns, len(rows)) == (3, 2, 1, 1)


def test_a_folder_with_only_dialogues_loads_as_conversations(tmp_path: Path) -> None:
    extra = {"director": ["D"], "writer": ["W"], "star": ["S"], "imdb_id": "tt0"}
    movies = {"10": {"name": "The Matrix (1999)", "genre": ["sci-fi"], "plot": "x", **extra},
              "20": {"name": "Up (2009)", "genre": ["animation"], "plot": "y", **extra}}  # fmt: skip
    (tmp_path / "movies.json").write_text(json.dumps(movies))
    (tmp_path / "dialogues.jsonl").write_text(json.dumps(DIALOGUE) + "\n" + json.dumps({"bad": 1}) + "\n")
    data = load_dataset(tmp_path)
    assert data.kind == "conversations" and [c.case_id for c in data.cases] == ["77_3"]
    assert data.cases[0].gold == {"10": 1, "20": 1}
    assert data.match is not None and (data.match.dialogues, data.match.dialogues_skipped) == (2, 1)


def test_cutting_the_dev_dialogues_reproduces_the_published_turns() -> None:
    assert (REDIAL / "dialogues.jsonl").is_file(), f"dev data missing at {REDIAL}"
    report = CutReport()
    mine = {(t["dialog_id"], t["turn_id"]): t for _, t in iter_dialogue_turns(REDIAL / "dialogues.jsonl", report)}
    published = [json.loads(line) for line in (REDIAL / "turns.jsonl").read_text().splitlines() if line.strip()]
    assert report.dialogues == 1000 and report.skipped == 0
    for turn in published:
        cut = mine[(turn["dialog_id"], turn["turn_id"])]
        assert (cut["context"], cut["rec"], cut["entity"]) == (turn["context"], turn["rec"], turn["entity"])
    assert len(mine) >= len(published) == 2716
