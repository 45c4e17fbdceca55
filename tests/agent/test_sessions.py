"""Session stores: the same suite against SQLite (a real file) and PostgreSQL (a real server from the fixture)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.errors import InputError
from agent.sessions import (
    AttributePref,
    Preferences,
    SessionConflictError,
    SessionLimitError,
    SessionNotFoundError,
    SessionState,
    SessionStore,
    SessionStoreError,
    Turn,
    open_session_store,
)
from agent.settings import load_settings
from retrieval.types import Constraints

from pgserver import PgServer

Opener = Callable[..., SessionStore]


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with PgServer() as server:
        yield server


def _fresh_pg_db(server: PgServer) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """``opener(max_sessions=...)`` opens a NEW store object on the same database each time (a restart)."""
    opened: list[SessionStore] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'sessions.sqlite3'}"
    else:
        url = _fresh_pg_db(request.getfixturevalue("pg"))

    def open_(**kw: object) -> SessionStore:
        store = open_session_store(load_settings(home=tmp_path, session_db_url=url, **kw))
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def _pair(state: SessionState, text: str = "hi", items: list[str] | None = None) -> tuple[Turn, Turn]:
    n = state.last_turn_id
    return (
        Turn(turn_id=n + 1, role="user", content=text, request_id="r"),
        Turn(turn_id=n + 2, role="assistant", content=f"reply to {text}", item_ids=items or []),
    )


def test_create_get_commit_and_restart(opener: Opener) -> None:
    store = opener()
    state = store.create(user_id="u7")
    assert len(state.session_id) == 32 and state.turns == []
    assert store.get(state.session_id).user_id == "u7"

    state.preferences = Preferences(
        liked_ids=["1"],
        disliked_attributes=[AttributePref(field="genres", value="Horror")],
        constraints=Constraints(exclude_genres=["Horror"], year_max=1999),
        need="a heist film",
    )
    state.shown, state.rejected = ["a", "b", "c"], ["b"]
    user, assistant = _pair(state, "a heist film", ["a", "b", "c"])
    store.commit_turn(state, user, assistant)
    assert [t.turn_id for t in state.turns] == [1, 2]  # the in-memory state follows the commit
    store.close()

    reopened = opener()  # a restart: a new store object on the same database
    again = reopened.get(state.session_id)
    assert [(t.turn_id, t.role) for t in again.turns] == [(1, "user"), (2, "assistant")]
    assert again.turns[1].item_ids == ["a", "b", "c"] and again.turns[0].request_id == "r"
    assert again.preferences == state.preferences
    assert again.rejected == ["b"] and again.shown == ["a", "b", "c"]
    assert again.last_shown() == ["a", "b", "c"]

    user, assistant = _pair(again, "older please", ["d"])
    reopened.commit_turn(again, user, assistant)
    assert [t.turn_id for t in reopened.get(state.session_id).turns] == [1, 2, 3, 4]


def test_unknown_session_is_a_clear_input_error(opener: Opener) -> None:
    store = opener()
    with pytest.raises(SessionNotFoundError, match="no chat session") as info:
        store.get("0" * 32)
    assert isinstance(info.value, InputError) and "new session" in info.value.hint
    ghost = store.create()
    ghost.session_id = "f" * 32
    with pytest.raises(SessionNotFoundError):
        store.commit_turn(ghost, *_pair(ghost))


def test_second_writer_gets_a_conflict_and_writes_nothing(opener: Opener) -> None:
    a, b = opener(), opener()
    state = a.create()
    seen_by_a, seen_by_b = a.get(state.session_id), b.get(state.session_id)
    a.commit_turn(seen_by_a, *_pair(seen_by_a, "from a"))
    with pytest.raises(SessionConflictError, match="changed while"):
        b.commit_turn(seen_by_b, *_pair(seen_by_b, "from b"))
    turns = a.get(state.session_id).turns
    assert [t.content for t in turns] == ["from a", "reply to from a"]


def test_concurrent_commits_exactly_one_wins(opener: Opener) -> None:
    stores = [opener() for _ in range(2)]
    state = stores[0].create()
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def worker(i: int) -> None:
        store = stores[i % 2]
        mine = store.get(state.session_id)
        barrier.wait()
        try:
            store.commit_turn(mine, *_pair(mine, f"w{i}"))
            outcomes.append("ok")
        except SessionConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["ok"]
    assert len(stores[1].get(state.session_id).turns) == 2


def test_a_failing_commit_leaves_no_half_turn(opener: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    store = opener()
    state = store.create()
    module = "agent.sessions.sqlite" if "SQLite" in type(store).__name__ else "agent.sessions.postgres"

    def boom(_: SessionState) -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(f"{module}.state_blob", boom)  # fails after the turn rows were inserted
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.commit_turn(state, *_pair(state))
    monkeypatch.undo()
    fresh = store.get(state.session_id)
    assert fresh.turns == []
    store.commit_turn(fresh, *_pair(fresh, "after the failure"))  # the session is still usable
    assert len(store.get(state.session_id).turns) == 2


def test_turn_pairs_are_validated(opener: Opener) -> None:
    store = opener()
    state = store.create()
    user, assistant = _pair(state)
    with pytest.raises(InputError, match="user turn then an assistant turn"):
        store.commit_turn(state, assistant, user)
    with pytest.raises(InputError, match="follow each other"):
        store.commit_turn(state, user, assistant.model_copy(update={"turn_id": 5}))


def test_limit_count_and_list(opener: Opener) -> None:
    store = opener(max_sessions=3)
    made = [store.create() for _ in range(3)]
    with pytest.raises(SessionLimitError, match="full") as info:
        store.create()
    assert "RECAGENT_MAX_SESSIONS" in info.value.hint
    assert store.count() == 3
    first = made[0]
    store.commit_turn(first, *_pair(first))  # most recently updated comes first
    ids = store.list_ids()
    assert ids[0] == first.session_id and sorted(ids) == sorted(s.session_id for s in made)
    assert len(store.list_ids(limit=2)) == 2


# ------------------------------------------------------------------------------------------------ SQLite only
def test_sqlite_file_is_wal_with_a_schema_version(tmp_path: Path) -> None:
    store = open_session_store(load_settings(home=tmp_path))
    assert Path(store.path) == tmp_path / "sessions.sqlite3"  # type: ignore[attr-defined]
    store.close()
    db = sqlite3.connect(tmp_path / "sessions.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(SessionStoreError, match="schema version 99") as info:
        open_session_store(load_settings(home=tmp_path))
    assert "upgrade recagent" in info.value.hint


def test_sqlite_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(SessionStoreError, match="cannot create the folder") as info:
        open_session_store(load_settings(home=tmp_path, session_db_url=str(blocker / "sessions.sqlite3")))
    assert "writable" in info.value.hint
    with pytest.raises(SessionStoreError, match="is a folder"):
        open_session_store(load_settings(home=tmp_path, session_db_url=str(tmp_path)))
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database file at all" * 200)
    with pytest.raises(SessionStoreError, match="not writable or not a SQLite file"):
        open_session_store(load_settings(home=tmp_path, session_db_url=f"sqlite:///{garbage}"))


def test_unsupported_url_scheme(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unsupported session database URL") as info:
        open_session_store(load_settings(home=tmp_path, session_db_url="mysql://x@y/z"))
    assert "postgresql://" in info.value.hint


# ------------------------------------------------------------------------------------------------ PostgreSQL only
def test_postgres_survives_a_server_restart_between_turns(pg: PgServer, tmp_path: Path) -> None:
    url = _fresh_pg_db(pg)
    store = open_session_store(load_settings(home=tmp_path, session_db_url=url))
    state = store.create()
    store.commit_turn(state, *_pair(state, "before"))
    pg.restart()  # pooled connections are now broken
    again = store.get(state.session_id)
    store.commit_turn(again, *_pair(again, "after"))
    assert [t.content for t in store.get(state.session_id).turns][::2] == ["before", "after"]
    store.close()


def test_postgres_unreachable_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    from testkit import free_port

    url = f"postgresql://bob:s3cret@127.0.0.1:{free_port()}/db"
    with pytest.raises(SessionStoreError, match="cannot connect") as info:
        open_session_store(load_settings(home=tmp_path, session_db_url=url))
    assert "s3cret" not in info.value.message and "bob:***@" in info.value.message
    assert "RECAGENT_SESSION_DB_URL" in info.value.hint
