"""SQLite session store: one file, WAL journal, one transaction per turn.

Several store objects (threads, processes, a restarted server) may open the same file: writers take SQLite's
write lock with ``BEGIN IMMEDIATE`` and wait up to ``busy_timeout_s`` for it; the optimistic check on the session's
last turn id turns a lost race into :class:`~agent.sessions.SessionConflictError` instead of a silent overwrite.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from agent.sessions.models import (
    SCHEMA_VERSION,
    SessionState,
    SessionStoreError,
    Turn,
    apply_commit,
    check_turn_pair,
    conflict,
    limit_reached,
    new_state,
    newer_schema,
    not_found,
    state_blob,
    state_from_rows,
)

__all__ = ["SQLiteSessionStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_turn INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (updated_at);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    turn_id INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    item_ids TEXT NOT NULL,
    request_id TEXT,
    PRIMARY KEY (session_id, turn_id)
);
"""

_WRITE_HINT = (
    "make the folder writable, or point RECAGENT_SESSION_DB_URL at a writable file (sqlite:///path/sessions.sqlite3) "
    "or a PostgreSQL database"
)


class SQLiteSessionStore:
    """Sessions in one SQLite file (WAL). Thread-safe: one connection, used under a lock."""

    def __init__(self, path: Path | str, *, max_sessions: int = 100_000, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SessionStoreError(
                f"cannot create the folder of the session database {self.path}: {exc}", hint=_WRITE_HINT
            ) from exc
        if self.path.is_dir():
            raise SessionStoreError(f"the session database path {self.path} is a folder", hint=_WRITE_HINT)
        try:
            self._db = sqlite3.connect(
                str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise SessionStoreError(f"cannot open the session database {self.path}: {exc}", hint=_WRITE_HINT) from exc
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"the journal mode stays {mode!r} (WAL needs a writable folder)")
            self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged turn survives a power cut too
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise SessionStoreError(
                f"the session database {self.path} is not writable or not a SQLite file: {exc}", hint=_WRITE_HINT
            ) from exc

    # -- plumbing ------------------------------------------------------------------------------------------
    @contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (SQLite's write lock taken up front)."""
        with self._lock:
            if self._db is None:
                raise SessionStoreError("the session store is closed", hint="open a new store")
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise SessionStoreError(f"{what}: cannot lock {self.path}: {exc}", hint=_WRITE_HINT) from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                # SQLite may already have rolled back (disk full, I/O error): a second ROLLBACK would raise
                # "no transaction is active" and hide the real error
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise SessionStoreError(f"{what} failed in {self.path}: {exc}", hint=_WRITE_HINT) from exc
                raise

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            if self._db is None:
                raise SessionStoreError("the session store is closed", hint="open a new store")
            try:
                return list(self._db.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise SessionStoreError(f"reading {self.path} failed: {exc}", hint=_WRITE_HINT) from exc

    def _migrate(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)
            row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            found = row[0] if row else None
            if found is None:
                self._db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif int(found) > SCHEMA_VERSION:
                raise newer_schema(int(found), str(self.path))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    # -- interface -----------------------------------------------------------------------------------------
    def create(self, user_id: str | None = None) -> SessionState:
        state = new_state(user_id)
        with self._tx("creating a session") as db:
            (count,) = db.execute("SELECT COUNT(*) FROM sessions").fetchone()
            if count >= self.max_sessions:
                raise limit_reached(self.max_sessions)
            db.execute(
                "INSERT INTO sessions (session_id, user_id, created_at, updated_at, last_turn, state) "
                "VALUES (?, ?, ?, ?, 0, ?)",
                (state.session_id, user_id, state.created_at, state.updated_at, state_blob(state)),
            )
        return state

    def get(self, session_id: str) -> SessionState:
        rows = self._read(
            "SELECT user_id, created_at, updated_at, state FROM sessions WHERE session_id = ?", (session_id,)
        )
        if not rows:
            raise not_found(session_id)
        user_id, created, updated, blob = rows[0]
        turns = self._read(
            "SELECT turn_id, role, content, created_at, item_ids, request_id FROM turns "
            "WHERE session_id = ? ORDER BY turn_id",
            (session_id,),
        )
        return state_from_rows(session_id, user_id, created, updated, blob, turns)  # type: ignore[arg-type]

    def commit_turn(self, state: SessionState, user: Turn, assistant: Turn) -> None:
        expected = check_turn_pair(state, user, assistant)
        now = time.time()
        with self._tx("saving a chat turn") as db:
            row = db.execute("SELECT last_turn FROM sessions WHERE session_id = ?", (state.session_id,)).fetchone()
            if row is None:
                raise not_found(state.session_id)
            if int(row[0]) != expected:
                raise conflict(state.session_id, expected, int(row[0]))
            db.executemany(
                "INSERT INTO turns (session_id, turn_id, role, content, created_at, item_ids, request_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (state.session_id, t.turn_id, t.role, t.content, t.created_at, json.dumps(t.item_ids), t.request_id)
                    for t in (user, assistant)
                ],
            )
            db.execute(
                "UPDATE sessions SET last_turn = ?, updated_at = ?, state = ? WHERE session_id = ?",
                (assistant.turn_id, now, state_blob(state), state.session_id),
            )
        apply_commit(state, user, assistant, now)

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM sessions")[0][0])  # type: ignore[call-overload]

    def list_ids(self, limit: int = 100) -> list[str]:
        rows = self._read("SELECT session_id FROM sessions ORDER BY updated_at DESC LIMIT ?", (max(0, int(limit)),))
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SQLiteSessionStore({str(self.path)!r})"
