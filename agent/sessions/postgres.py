"""PostgreSQL session store (psycopg 3): one database shared by several ``recagent serve`` processes.

Same tables and the same guarantees as the SQLite store: one transaction per turn, the session row locked
(``SELECT ... FOR UPDATE``) while its last turn id is checked, a schema version table (created under an advisory
lock, so several servers may start at once). Connections are pooled per store; a connection broken by a server
restart is replaced and the operation tried once more.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent.errors import RecagentError
from agent.network import redact_url
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

__all__ = ["PostgresSessionStore"]

T = TypeVar("T")

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS recagent_schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS recagent_sessions (
        session_id TEXT PRIMARY KEY,
        user_id TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        last_turn INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS recagent_sessions_updated ON recagent_sessions (updated_at)",
    """CREATE TABLE IF NOT EXISTS recagent_turns (
        session_id TEXT NOT NULL REFERENCES recagent_sessions (session_id),
        turn_id INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        item_ids TEXT NOT NULL,
        request_id TEXT,
        PRIMARY KEY (session_id, turn_id)
    )""",
]
_MIGRATION_LOCK = 0x7265636167  # advisory lock key ("recag")
_HINT = "check RECAGENT_SESSION_DB_URL (postgresql://user:password@host:port/dbname) and that the server is up"


class PostgresSessionStore:
    """Sessions in PostgreSQL. Thread-safe: each call borrows a pooled connection."""

    def __init__(self, url: str, *, max_sessions: int = 100_000, pool_size: int = 8, connect_timeout_s: int = 10):
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise SessionStoreError(
                "psycopg is not installed", hint="run `make setup` (psycopg[binary] is a dependency)"
            ) from exc
        self._psycopg = psycopg
        self.url = url
        self.max_sessions = max_sessions
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self._run(self._migrate, "preparing the session tables")

    # -- plumbing ------------------------------------------------------------------------------------------
    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout_s)
        except self._psycopg.Error as exc:
            raise SessionStoreError(
                f"cannot connect to the session database {redact_url(self.url)}: {str(exc).strip()}", hint=_HINT
            ) from exc

    def _borrow(self) -> Any:
        with self._lock:
            if self._closed:
                raise SessionStoreError("the session store is closed", hint="open a new store")
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, conn: Any) -> None:
        with self._lock:
            if not self._closed and not conn.closed and len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        conn.close()

    def _run(self, fn: Callable[[Any], T], what: str) -> T:
        """``fn(connection)``; a connection found broken (server restarted) is replaced and ``fn`` run once more."""
        for attempt in (1, 2):
            conn = self._borrow()
            try:
                result = fn(conn)
            except self._psycopg.Error as exc:
                broken = conn.broken or conn.closed
                conn.close()
                if broken and attempt == 1:
                    continue
                raise SessionStoreError(f"{what} failed: {str(exc).strip()}", hint=_HINT) from exc
            except RecagentError:  # ours (not found, conflict, full): the transaction was rolled back
                self._give_back(conn)
                raise
            except BaseException:
                conn.close()
                raise
            self._give_back(conn)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _migrate(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
            found = conn.execute("SELECT MAX(version) FROM recagent_schema_version").fetchone()[0]
            if found is None:
                conn.execute("INSERT INTO recagent_schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif int(found) > SCHEMA_VERSION:
                raise newer_schema(int(found), redact_url(self.url))

    # -- interface -----------------------------------------------------------------------------------------
    def create(self, user_id: str | None = None) -> SessionState:
        state = new_state(user_id)

        def work(conn: Any) -> None:
            with conn.transaction():
                (count,) = conn.execute("SELECT COUNT(*) FROM recagent_sessions").fetchone()
                if count >= self.max_sessions:
                    raise limit_reached(self.max_sessions)
                conn.execute(
                    "INSERT INTO recagent_sessions (session_id, user_id, created_at, updated_at, last_turn, state) "
                    "VALUES (%s, %s, %s, %s, 0, %s)",
                    (state.session_id, user_id, state.created_at, state.updated_at, state_blob(state)),
                )

        self._run(work, "creating a session")
        return state

    def get(self, session_id: str) -> SessionState:
        def work(conn: Any) -> SessionState:
            row = conn.execute(
                "SELECT user_id, created_at, updated_at, state FROM recagent_sessions WHERE session_id = %s",
                (session_id,),
            ).fetchone()
            if row is None:
                raise not_found(session_id)
            turns = conn.execute(
                "SELECT turn_id, role, content, created_at, item_ids, request_id FROM recagent_turns "
                "WHERE session_id = %s ORDER BY turn_id",
                (session_id,),
            ).fetchall()
            return state_from_rows(session_id, row[0], row[1], row[2], row[3], list(turns))

        return self._run(work, "reading a session")

    def commit_turn(self, state: SessionState, user: Turn, assistant: Turn) -> None:
        expected = check_turn_pair(state, user, assistant)
        now = time.time()

        def work(conn: Any) -> None:
            with conn.transaction():
                row = conn.execute(
                    "SELECT last_turn FROM recagent_sessions WHERE session_id = %s FOR UPDATE", (state.session_id,)
                ).fetchone()
                if row is None:
                    raise not_found(state.session_id)
                if int(row[0]) != expected:
                    raise conflict(state.session_id, expected, int(row[0]))
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO recagent_turns (session_id, turn_id, role, content, created_at, item_ids, "
                        "request_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        [
                            (
                                state.session_id,
                                t.turn_id,
                                t.role,
                                t.content,
                                t.created_at,
                                json.dumps(t.item_ids),
                                t.request_id,
                            )
                            for t in (user, assistant)
                        ],
                    )
                conn.execute(
                    "UPDATE recagent_sessions SET last_turn = %s, updated_at = %s, state = %s WHERE session_id = %s",
                    (assistant.turn_id, now, state_blob(state), state.session_id),
                )

        self._run(work, "saving a chat turn")
        apply_commit(state, user, assistant, now)

    def count(self) -> int:
        return int(self._run(lambda c: c.execute("SELECT COUNT(*) FROM recagent_sessions").fetchone()[0], "counting"))

    def list_ids(self, limit: int = 100) -> list[str]:
        rows = self._run(
            lambda c: c.execute(
                "SELECT session_id FROM recagent_sessions ORDER BY updated_at DESC LIMIT %s", (max(0, int(limit)),)
            ).fetchall(),
            "listing sessions",
        )
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __repr__(self) -> str:
        return f"PostgresSessionStore({redact_url(self.url)!r})"
