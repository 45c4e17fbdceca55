"""The generation cache shared by the LLM side tasks: a small SQLite key -> JSON store for outputs that are costly to
generate again (enrichment, user profiles), and :func:`cache_key`, the hash that names an output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.errors import StoreError

__all__ = ["GenerationCache", "cache_key"]


class GenerationCache:
    """A small SQLite key -> JSON store (WAL; one connection per cache, guarded by a lock) for LLM outputs.

    Used by enrichment (``<home>/cache/enrich.sqlite``) and user profiles (``<home>/cache/profiles.sqlite``).
    Every ``put`` commits, so a killed run keeps what it had generated."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, value TEXT NOT NULL, at REAL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the generation cache {self.path}: {exc}",
                hint="check that RECAGENT_HOME is writable, or delete the damaged cache file",
            ) from exc
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(f"SELECT key, value FROM outputs WHERE key IN ({marks})", part).fetchall()
                for key, value in rows:
                    with contextlib.suppress(ValueError):
                        out[key] = json.loads(value)
        return out

    def put_many(self, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not rows:
            return
        now = time.time()
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO outputs (key, value, at) VALUES (?, ?, ?)",
                [(key, json.dumps(value, ensure_ascii=False), now) for key, value in rows],
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def cache_key(*parts: Any) -> str:
    """sha256 over the JSON of ``parts`` (sorted keys)."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
