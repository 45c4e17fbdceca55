"""Chat sessions: the models, the errors and the store interface (the factory is :mod:`agent.sessions`).

A session is a list of turns (user and assistant, numbered together 1, 2, 3, ...) plus the state the conversation
built: extracted preferences, items shown, accepted and rejected. Stores write one user turn and its assistant turn
together with the new state in ONE transaction (:meth:`SessionStore.commit_turn`), so a crash or a restart never
leaves half a turn, and a turn that was acknowledged is on disk. Two writers on the same session are detected
(optimistic concurrency on the last turn id) and the second one gets :class:`SessionConflictError`.

Backends: SQLite in WAL mode (default, ``<home>/sessions.sqlite3``; :mod:`agent.sessions.sqlite`) and PostgreSQL
(``RECAGENT_SESSION_DB_URL=postgresql://...``, shared by several servers; :mod:`agent.sessions.postgres`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent.errors import InputError, RecagentError, StoreError
from agent.schemas import AttributePreference
from retrieval.types import Constraints

__all__ = [
    "SCHEMA_VERSION",
    "AttributePref",
    "Avoidance",
    "Preferences",
    "SessionConflictError",
    "SessionLimitError",
    "SessionNotFoundError",
    "SessionState",
    "SessionStore",
    "SessionStoreError",
    "Turn",
]

SCHEMA_VERSION = 1
"""Version of the session tables; a store refuses a database written by a newer recagent."""

AttributePref = AttributePreference
"""A preference on an item field: ``{"field": "genres", "value": "Comedy"}`` (same model the ranker uses)."""


# ------------------------------------------------------------------------------------------------ errors
class SessionNotFoundError(InputError):
    """No session has this id."""


class SessionConflictError(RecagentError):
    """Another writer committed a turn to the session after this turn's state was read."""


class SessionStoreError(StoreError):
    """The session database cannot be opened, written or read."""


class SessionLimitError(SessionStoreError):
    """Creating one more session would exceed ``max_sessions``."""


def not_found(session_id: str) -> SessionNotFoundError:
    return SessionNotFoundError(
        f"no chat session {session_id!r}",
        hint="start a new session (omit the session id) or list existing ones; ids are 32 hex characters",
    )


def conflict(session_id: str, expected: int, found: int) -> SessionConflictError:
    return SessionConflictError(
        f"session {session_id!r} changed while this turn was being answered (expected last turn {expected}, "
        f"found {found})",
        hint="send the message again: another request added a turn to this session at the same time",
    )


def limit_reached(limit: int) -> SessionLimitError:
    return SessionLimitError(
        f"the session store is full ({limit} sessions)",
        hint="raise RECAGENT_MAX_SESSIONS or remove old sessions from the session database",
    )


# ------------------------------------------------------------------------------------------------ models
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Avoidance(_Model):
    """A concept the user wants less of, in their words ("violent", "gore", "subtitles"): ``hard`` ("no gore")
    leaves matching items out, ``soft`` ("not too violent") ranks them lower (:mod:`agent.chat.avoid`)."""

    concept: str = Field(min_length=1, max_length=80)
    strength: Literal["hard", "soft"] = "hard"


class Preferences(_Model):
    """What the conversation learned about the user so far (persisted across turns)."""

    liked_ids: list[str] = Field(default_factory=list, description="Items the user likes (similarity seeds).")
    disliked_ids: list[str] = Field(default_factory=list, description="Items the user dislikes (never shown).")
    liked_attributes: list[AttributePref] = Field(default_factory=list, description="Soft likes (field, value).")
    disliked_attributes: list[AttributePref] = Field(
        default_factory=list, description="Field values the user does not want (items with them are left out)."
    )
    constraints: Constraints = Field(default_factory=Constraints, description="Hard filters, kept across turns.")
    need: str | None = Field(None, description="What the user is looking for, in their words.")
    avoid: list[Avoidance] = Field(
        default_factory=list, description="Concepts to avoid (matched on the items' fields, tags and text)."
    )


class Turn(_Model):
    turn_id: int = Field(ge=1, description="1, 2, ... per session; user and assistant turns numbered together.")
    role: Literal["user", "assistant"]
    content: str
    created_at: float = Field(default_factory=time.time, description="Unix seconds.")
    item_ids: list[str] = Field(default_factory=list, description="Recommended ids (assistant turns).")
    request_id: str | None = None


class SessionState(_Model):
    session_id: str
    user_id: str | None = None
    created_at: float
    updated_at: float
    turns: list[Turn] = Field(default_factory=list)
    preferences: Preferences = Field(default_factory=Preferences)
    shown: list[str] = Field(default_factory=list, description="Every item shown so far, in order.")
    accepted: list[str] = Field(default_factory=list, description="Shown items the user picked or liked.")
    rejected: list[str] = Field(default_factory=list, description="Shown items the user turned down.")

    @property
    def last_turn_id(self) -> int:
        return self.turns[-1].turn_id if self.turns else 0

    def last_shown(self) -> list[str]:
        """The item ids of the latest assistant turn that showed items (what "the second one" refers to)."""
        for turn in reversed(self.turns):
            if turn.role == "assistant" and turn.item_ids:
                return list(turn.item_ids)
        return []


class SessionStore(Protocol):
    """Where sessions live. Every method is safe to call from several threads."""

    def create(self, user_id: str | None = None) -> SessionState: ...

    def get(self, session_id: str) -> SessionState: ...

    def commit_turn(self, state: SessionState, user: Turn, assistant: Turn) -> None: ...

    def count(self) -> int: ...

    def list_ids(self, limit: int = 100) -> list[str]: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------------ helpers
def new_state(user_id: str | None) -> SessionState:
    now = time.time()
    return SessionState(session_id=uuid.uuid4().hex, user_id=user_id, created_at=now, updated_at=now)


def check_turn_pair(state: SessionState, user: Turn, assistant: Turn) -> int:
    """Validate the pair; return the last turn id the database must still have (optimistic lock)."""
    if user.role != "user" or assistant.role != "assistant":
        raise InputError(
            f"commit_turn takes a user turn then an assistant turn, got {user.role} and {assistant.role}",
            hint="pass Turn(role='user', ...) then Turn(role='assistant', ...)",
        )
    if assistant.turn_id != user.turn_id + 1:
        raise InputError(
            f"turn ids must follow each other, got {user.turn_id} and {assistant.turn_id}",
            hint="number the assistant turn right after the user turn",
        )
    return user.turn_id - 1


def state_blob(state: SessionState) -> str:
    """The state columns stored as one JSON document (turns live in their own table)."""
    data = state.model_dump(mode="json", include={"preferences", "shown", "accepted", "rejected"})
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def state_from_rows(
    session_id: str,
    user_id: str | None,
    created_at: float,
    updated_at: float,
    blob: str | dict[str, Any],
    turn_rows: list[tuple[Any, ...]],
) -> SessionState:
    """Rebuild a :class:`SessionState` from its session row and its turn rows
    ``(turn_id, role, content, created_at, item_ids_json, request_id)``."""
    data = json.loads(blob) if isinstance(blob, str) else dict(blob)
    turns = [
        Turn(
            turn_id=int(r[0]),
            role=r[1],
            content=r[2],
            created_at=float(r[3]),
            item_ids=json.loads(r[4]) if isinstance(r[4], str) else list(r[4] or []),
            request_id=r[5],
        )
        for r in turn_rows
    ]
    return SessionState(
        session_id=session_id,
        user_id=user_id,
        created_at=float(created_at),
        updated_at=float(updated_at),
        turns=turns,
        **data,
    )


def apply_commit(state: SessionState, user: Turn, assistant: Turn, now: float) -> None:
    """After a successful commit: the in-memory state shows the two turns (once) and the new update time."""
    known = {t.turn_id for t in state.turns}
    state.turns.extend(t for t in (user, assistant) if t.turn_id not in known)
    state.updated_at = now


def newer_schema(found: int, where: str) -> SessionStoreError:
    return SessionStoreError(
        f"the session database {where} has schema version {found}; this recagent knows version {SCHEMA_VERSION}",
        hint="upgrade recagent, or point RECAGENT_SESSION_DB_URL at another database",
    )
