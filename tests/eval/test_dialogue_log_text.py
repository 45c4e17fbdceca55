"""Dialogue logs keep the turns' text (issue 24, the live ranker): turn files, raw ReDial dialogues, the generic
JSONL with and without ``context``, recagent's sessions; counted in the report, carried into the training cases'
request text, and printed by `recagent train dialogue-sources`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.sessions import Preferences, SessionState, Turn
from agent.sessions.log import session_log, write_log_jsonl
from eval.datasets import load_turns
from eval.dialogue_log import log_from_cases, read_dialogue_log
from retrieval.dialogue_log import DialogueLog, context_query
from retrieval.types import Item
from train.dialogue import log_cases, turn_query

from testkit import ROOT

REDIAL = ROOT.parent / "shared" / "data" / "redial-dev"
ITEMS = [Item(id="10", title="The Matrix (1999)"), Item(id="20", title="Up (2009)"), Item(id="30", title="Heat (1995)")]


def _write(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_context_query_is_the_last_six_utterances() -> None:
    context = ["", "a", " ", *[f"u{i}" for i in range(8)]]
    assert context_query(context) == "\n".join(f"u{i}" for i in range(2, 8))
    assert context_query("one string") == "one string"
    assert context_query([]) is None and context_query(["", "  "]) is None and context_query(None) is None
    assert context_query(["x" * 5000]) == "x" * 3900


def test_turn_file_keeps_the_text(tmp_path: Path) -> None:
    rows = [
        {"dialog_id": "a", "turn_id": 2, "context": ["", "hi", "something like Up (2009)"], "entity": ["Up (2009)"],
         "rec": ["Heat (1995)"]},
        {"dialog_id": "a", "turn_id": 4, "context": [""], "entity": [], "rec": ["The Matrix (1999)"]},
    ]  # fmt: skip
    log = read_dialogue_log(_write(tmp_path / "turns.jsonl", rows), ITEMS)
    assert [t.text for t in log.turns] == ["hi\nsomething like Up (2009)", None]
    assert (log.report.turns_with_text, log.report.turns_without_text) == (1, 1)
    cases = log_cases(log)
    assert [c.query for c in cases] == ["hi\nsomething like Up (2009)", None]
    query = turn_query(cases[0], 1)
    assert query.need == "hi\nsomething like Up (2009)" and query.liked == ["20"]
    assert turn_query(cases[1], 1).need is None


def test_raw_redial_dialogue_keeps_the_text(tmp_path: Path) -> None:
    def msg(turn: int, sender: int, text: str, items: list[str]) -> dict[str, object]:
        return {"turn_id": turn, "senderWorkerId": sender, "text": text, "item": items, "entity": []}

    dialogue = {
        "conversationId": "77", "initiatorWorkerId": 1, "respondentWorkerId": 2,
        "movieMentions": {"10": "The Matrix (1999)", "20": "Up (2009)"},
        "messages": [msg(0, 2, "Hi! What do you like?", []), msg(1, 1, "Something like @20", ["Up (2009)"]),
                     msg(2, 2, "Try @10", ["The Matrix (1999)"])],
    }  # fmt: skip
    log = read_dialogue_log(_write(tmp_path / "dialogues.jsonl", [dialogue]), ITEMS)
    assert log.report.format == "redial-dialogues"
    assert [t.text for t in log.turns] == ["Hi! What do you like?\nSomething like Up (2009)"]
    assert (log.report.turns_with_text, log.report.turns_without_text) == (1, 0)


def test_generic_jsonl_with_and_without_context(tmp_path: Path) -> None:
    rows = [
        {"dialog_id": "g1", "mentioned": ["10"], "recommended": ["30"], "context": ["I want a heist movie"]},
        {"dialog_id": "g2", "mentioned": ["Up (2009)"], "recommended": ["10"], "context": "one line of text"},
        {"dialog_id": "g3", "mentioned": [], "recommended": ["20"]},
        {"dialog_id": "g4", "mentioned": [], "recommended": ["20"], "context": 5},  # not text: no text, still read
    ]
    log = read_dialogue_log(_write(tmp_path / "generic.jsonl", rows), ITEMS)
    assert [t.text for t in log.turns] == ["I want a heist movie", "one line of text", None, None]
    assert (log.report.turns_with_text, log.report.turns_without_text) == (2, 2)
    assert log.report.text_line() == "2 turns with text, 2 without"
    # the counts follow the kept turns through a fold's training log and a concatenation
    assert log.without({"g1"}).report.turns_with_text == 1
    both = DialogueLog.concat([log, log.only({"g3"})])
    assert (both.report.turns_with_text, both.report.turns_without_text) == (2, 3)


def test_a_log_without_text_still_reads(tmp_path: Path) -> None:
    rows = [{"dialog_id": "g1", "mentioned": ["10"], "recommended": ["30"]}]
    log = read_dialogue_log(_write(tmp_path / "plain.jsonl", rows), ITEMS)
    assert log.turns[0].text is None and log.report.text_line() == "0 turns with text, 1 without"
    assert log_cases(log)[0].query is None


def test_sessions_keep_the_users_messages(tmp_path: Path) -> None:
    state = SessionState(session_id="s1", created_at=0.0, updated_at=0.0, preferences=Preferences(liked_ids=["20"]),
                         shown=["10", "30"], accepted=["10"], rejected=["30"],
                         turns=[Turn(turn_id=1, role="user", content="something like Up"),
                                Turn(turn_id=2, role="assistant", content="try these", item_ids=["10", "30"]),
                                Turn(turn_id=3, role="user", content="but darker")])  # fmt: skip
    log = session_log([state])
    assert log.turns[0].text == "something like Up\nbut darker"
    assert (log.report.turns_with_text, log.report.turns_without_text) == (1, 0)
    path = tmp_path / "export.jsonl"
    write_log_jsonl(log, path)
    assert json.loads(path.read_text(encoding="utf-8"))["context"] == ["something like Up\nbut darker"]
    again = read_dialogue_log(path, ITEMS)  # the export reads back with the same text
    assert again.turns[0].text == "something like Up\nbut darker"
    turn = again.turns[0]
    assert (turn.mentioned, turn.recommended, turn.rejected) == (("20",), ("10",), ("30",))


@pytest.mark.skipif(not (REDIAL / "turns.jsonl").is_file(), reason="the bundled ReDial dev sample is not here")
def test_the_logs_text_is_the_evaluators_query_on_redial_dev() -> None:
    """The same function builds both: the log's turn text equals the evaluator's EvalCase.query, turn for turn, for
    the turn file and for the raw dialogues it was cut from."""
    for name in ("turns.jsonl", "dialogues.jsonl"):
        dataset = load_turns(REDIAL / name, REDIAL / "movies.json")
        queries = [c.query for c in dataset.cases]
        log = read_dialogue_log(REDIAL / name, list(dataset.items.values()))
        assert [t.text for t in log.turns] == queries, name
        assert log.report.turns_with_text == sum(1 for q in queries if q) > 0.9 * len(queries)
        assert log.report.turns_with_text + log.report.turns_without_text == len(queries)
        assert [t.text for t in log_from_cases(dataset.cases).turns] == queries
