"""The feedback loop on real parts (embedded Chroma, SQLite sessions, the CLI): a session's accepted
recommendation, exported and fitted with the documented commands, changes a later session's candidates."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from agent.pipeline import Recommender
from agent.sessions import Preferences, Turn
from agent.sessions.sqlite import SQLiteSessionStore
from agent.settings import load_settings
from recagent import cmd_sessions, cmd_train
from retrieval.types import UserQuery

from testkit import HashEmbedder, cli_app, hashed_sample_home


def test_accepted_items_fed_back_change_later_candidates(ml_sample: Path, tmp_path: Path) -> None:
    embedder = HashEmbedder()
    home = hashed_sample_home(tmp_path / "home", ml_sample, embedder, "loop")
    settings = load_settings(home=home, collection="loop", session_db_url=str(tmp_path / "sessions.sqlite3"))
    before_rec = Recommender(settings, embedder=embedder)
    assert before_rec.dialogue_model is None and before_rec.dialogue_note() is None
    ids = sorted(before_rec.collection.ids())
    seed = ids[0]
    query = UserQuery(liked=[seed], n=20)
    before = [c.item_id for c in before_rec.generator.generate(query)]
    accepted, rejected = [i for i in ids if i not in before and i != seed][:2]

    store = SQLiteSessionStore(tmp_path / "sessions.sqlite3")
    state = store.create()
    state.preferences = Preferences(liked_ids=[seed])
    state.shown, state.accepted, state.rejected = [accepted, rejected], [accepted], [rejected]
    store.commit_turn(
        state,
        Turn(turn_id=1, role="user", content="I loved it"),
        Turn(turn_id=2, role="assistant", content="try these", item_ids=[accepted, rejected]),
    )
    store.create()  # a session that accepted nothing: read, skipped
    store.close()

    runner = CliRunner()
    log = tmp_path / "sessions-log.jsonl"
    done = runner.invoke(cli_app(settings, "sessions", cmd_sessions.app), ["sessions", "export", str(log)])
    assert done.exit_code == 0, done.output
    assert "2 sessions read, 1 written" in done.output and "1 without accepted or rejected" in done.output
    row = json.loads(log.read_text(encoding="utf-8"))
    assert row == {
        "dialog_id": state.session_id,
        "mentioned": [seed],
        "recommended": [accepted],
        "rejected": [rejected],
        "context": ["I loved it"],  # the user's messages: the turn's request text when the ranker trains
    }
    done = runner.invoke(cli_app(settings, "train", cmd_train.app), ["train", "dialogue-sources", str(log)])
    assert done.exit_code == 0, done.output
    assert "fitted: 1 turns, 1 dialogues" in done.output and "3 by id" in done.output
    assert "; 1 turns with text, 0 without" in done.output
    again = runner.invoke(cli_app(settings, "train", cmd_train.app), ["train", "dialogue-sources", str(log)])
    assert "reused: 1 turns" in again.output

    after_rec = Recommender(settings, embedder=embedder)
    # the evaluator opts out: a collection's fitted log may hold the dialogues it scores
    assert Recommender(settings, embedder=embedder, dialogue_sources=False).dialogue_model is None
    assert after_rec.dialogue_note() is not None and "1 turns" in (after_rec.dialogue_note() or "")
    lists = after_rec.generator.run_sources(query)
    assert lists["comention"][0][0] == accepted
    assert rejected not in [i for i, _ in lists["comention"]]
    after = [c.item_id for c in after_rec.generator.generate(query)]
    assert accepted in after and accepted not in before and rejected not in after
    # a later session that did not mention the seed is not affected by comention (only the prior source)
    cold = after_rec.generator.run_sources(UserQuery(need="anything", n=20))
    assert cold["comention"] == [] and cold["recommended_popularity"][0][0] == accepted


def test_train_dialogue_sources_without_a_log_is_a_clear_error(ml_sample: Path, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", session_db_url=str(tmp_path / "s.sqlite3"))
    done = CliRunner().invoke(cli_app(settings, "train", cmd_train.app), ["train", "dialogue-sources"])
    assert done.exit_code != 0
    assert "no dialogue log given" in str(done.exception)
