"""Chat session storage: the models and the store interface (:mod:`agent.sessions.models`), the SQLite and
PostgreSQL backends (:mod:`agent.sessions.sqlite`, :mod:`agent.sessions.postgres`), and :func:`open_session_store`,
which picks one from the settings.

The backends import :mod:`agent.sessions.models`, never this factory, so nothing imports in a circle; the factory
imports the backend it opens when it is called. The public names are exported here: import them from
``agent.sessions``.
"""

from __future__ import annotations

from pathlib import Path

from agent.errors import InputError
from agent.sessions import models
from agent.sessions.models import *  # noqa: F403 (the public names of the models, listed in models.__all__)
from agent.settings import Settings

__all__ = [*models.__all__, "open_session_store", "sqlite_path"]


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite file the settings name, or None when they name a PostgreSQL database."""
    url = (settings.session_db_url or "").strip()
    if not url:
        return settings.home / "sessions.sqlite3"
    if url.startswith(("postgresql://", "postgres://")):
        return None
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).expanduser()
    if "://" in url:
        raise InputError(
            f"unsupported session database URL {url!r}",
            hint="use postgresql://user:password@host:port/dbname, sqlite:///path/to/file.sqlite3 or a file path",
        )
    return Path(url).expanduser()


def open_session_store(settings: Settings) -> models.SessionStore:
    """SQLite (default) or PostgreSQL when ``settings.session_db_url`` starts with ``postgresql://``."""
    path = sqlite_path(settings)
    if path is None:
        from agent.sessions.postgres import PostgresSessionStore

        return PostgresSessionStore(str(settings.session_db_url), max_sessions=settings.max_sessions)
    from agent.sessions.sqlite import SQLiteSessionStore

    return SQLiteSessionStore(path, max_sessions=settings.max_sessions)
