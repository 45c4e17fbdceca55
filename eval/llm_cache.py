"""A caching :class:`~agent.llm.base.LLMEngine` wrapper: every raw request/response is kept in SQLite.

Keys: model id + engine description (backend, version) + the rendered request + sampling parameters (and the JSON
schema or option labels). Only misses go to the inner engine. In replay mode there is no inner engine and a miss
is an error, so a replayed evaluation provably uses the recorded outputs only (bit-identical metrics).

Engine errors of a whole call (e.g. output that fails the schema) are recorded too, keyed by every request of the
call, and raised again on replay: the ranking layer then takes the same fallback path as in the live run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import EngineError, InputError, PartialOutputError, RecagentError, StructuredOutputError
from agent.llm.base import (
    Generation,
    LLMEngine,
    LLMRequest,
    OptionScores,
    RequestLike,
    SchemaArg,
    check_labels,
    schemas_per_request,
)

__all__ = ["CacheMissError", "CachingEngine", "LLMCache", "MergeReport", "cache_file", "merge_caches"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, kind TEXT, request TEXT, response TEXT);
CREATE TABLE IF NOT EXISTS errors (key TEXT PRIMARY KEY, kind TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS engines (name TEXT PRIMARY KEY, identity TEXT);
"""


class CacheMissError(EngineError):
    """Replay asked for an LLM output that the cache does not hold."""


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class LLMCache:
    """The SQLite file (thread-safe: one connection guarded by a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, kind: str, request: Any, response: Any) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                (key, kind, json.dumps(request, ensure_ascii=False), json.dumps(response, ensure_ascii=False)),
            )

    def get_error(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT error FROM errors WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def delete_error(self, key: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM errors WHERE key = ?", (key,))

    def put_error(self, key: str, kind: str, error: dict[str, Any]) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO errors VALUES (?, ?, ?)", (key, kind, json.dumps(error)))

    def set_engine(self, name: str, identity: dict[str, Any]) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO engines VALUES (?, ?)", (name, json.dumps(identity)))

    def engine(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT identity FROM engines WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def absorb(self, source: sqlite3.Connection) -> dict[str, Any]:
        """Copy another cache's rows into this one (one transaction); counts of what came in and what was added.
        A key this cache already holds keeps its output (a different one is counted as a conflict); errors and
        engine identities are copied as recorded unless this cache has the key or arm name."""
        responses = errors = added = held = conflicts = 0
        names: list[str] = []
        with self._lock, self._db:
            for key, kind, request, response in source.execute("SELECT key, kind, request, response FROM responses"):
                responses += 1
                row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
                if row is None:
                    self._db.execute("INSERT INTO responses VALUES (?, ?, ?, ?)", (key, kind, request, response))
                    added += 1
                elif json.loads(row[0]) == json.loads(response):
                    held += 1
                else:
                    conflicts += 1
            for key, kind, error in source.execute("SELECT key, kind, error FROM errors"):
                errors += 1
                self._db.execute("INSERT OR IGNORE INTO errors VALUES (?, ?, ?)", (key, kind, error))
            for name, identity in source.execute("SELECT name, identity FROM engines"):
                self._db.execute("INSERT OR IGNORE INTO engines VALUES (?, ?)", (name, identity))
                names.append(str(name))
        return {"responses": responses, "errors": errors, "added": added, "already_held": held,
                "conflicts": conflicts, "engines": sorted(names)}  # fmt: skip

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


CACHE_FILE = "llm_cache.sqlite"


def cache_file(path: Path) -> Path:
    """A run folder's LLM cache (``OUT/llm_cache.sqlite``), or ``path`` itself when it names a file."""
    path = Path(path)
    return path / CACHE_FILE if path.is_dir() or not path.suffix else path


@dataclass(frozen=True)
class MergeReport:
    """What :func:`merge_caches` did, per source and in all."""

    dest: Path
    sources: list[dict[str, Any]]  # path, responses, errors, added, already_held, conflicts, engines
    responses: int  # responses held by the destination afterwards
    added: int
    conflicts: int  # same key, different recorded output: the destination's output is kept


def _open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise InputError(
            f"LLM cache {path} does not exist",
            hint="give run folders written by `recagent eval run` (OUT/llm_cache.sqlite) or the .sqlite files",
        )
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        db.close()
        raise InputError(f"{path} is not an SQLite file: {exc}", hint="give an evaluator LLM cache") from exc
    if not {"responses", "errors", "engines"} <= tables:
        db.close()
        raise InputError(f"{path} is not an evaluator LLM cache (tables: {sorted(tables)})",
                         hint="give run folders written by `recagent eval run`")  # fmt: skip
    return db


def merge_caches(sources: Sequence[Path], dest: Path) -> MergeReport:
    """Copy every recorded output, error and engine identity of ``sources`` into the cache ``dest`` (created when
    missing), so that one ``--replay`` run can recompute the arms that several runs recorded.

    Keys already hash the engine identity, so outputs of different models never mix. Refused before anything is
    written: a missing or foreign source, ``dest`` among the sources, and an arm name whose engine identity
    differs between the caches (a replay would look its requests up under one identity only). A key held with a
    different output (a non-deterministic engine) keeps the destination's output and is counted as a conflict."""
    dest = cache_file(dest)
    paths = [cache_file(s) for s in sources]
    if not paths:
        raise InputError("no LLM cache to merge", hint="give one or more run folders or .sqlite files")
    resolved = dest.resolve()
    if any(p.resolve() == resolved for p in paths):
        raise InputError(f"{dest} is both a source and the destination", hint="write the merge to another folder")
    dbs = [_open_source(p) for p in paths]
    try:
        engines: dict[str, tuple[str, Path]] = {}
        if dest.is_file():
            held = _open_source(dest)
            try:
                engines = {n: (i, dest) for n, i in held.execute("SELECT name, identity FROM engines")}
            finally:
                held.close()
        for path, db in zip(paths, dbs, strict=True):
            for name, identity in db.execute("SELECT name, identity FROM engines"):
                seen = engines.setdefault(name, (identity, path))
                if json.loads(seen[0]) != json.loads(identity):
                    raise InputError(
                        f"arm {name!r} was recorded with different engines in {seen[1]} and {path}",
                        hint="merge caches whose arms of the same name used the same model and engine version, "
                        "or rename the arm in one of the runs",
                    )
        cache = LLMCache(dest)
        try:
            rows = [{"path": str(path), **cache.absorb(db)} for path, db in zip(paths, dbs, strict=True)]
            total = cache.count()
        finally:
            cache.close()
    finally:
        for db in dbs:
            db.close()
    return MergeReport(
        dest=dest,
        sources=rows,
        responses=total,
        added=sum(r["added"] for r in rows),
        conflicts=sum(r["conflicts"] for r in rows),
    )


SERVING_KEYS = ("block_size", "prefix_caching")
"""Keys of ``engine.describe()`` that say how the engine serves (KV-cache layout, prefix reuse), not which model
answers: left out of the identity, so a cache recorded before they were reported (or with another block size)
still replays."""


def engine_identity(engine: LLMEngine) -> dict[str, Any]:
    """What identifies an engine's outputs: its description (backend, model, versions; not :data:`SERVING_KEYS`)
    and model id."""
    info = {str(k): v for k, v in engine.describe().items() if k not in SERVING_KEYS}
    info.setdefault("model", engine.model_id)
    info["model_id"] = engine.model_id
    return json.loads(json.dumps(info, default=str))


def _error_record(exc: RecagentError) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": exc.message,
        "hint": exc.hint,
        "raw": getattr(exc, "raw", None),
    }


# errors that the same request always gets again (outputs that fail their schema, prompts that do not fit)
_DETERMINISTIC_ERRORS = frozenset({"StructuredOutputError", "InputError", "SchemaError"})


def _single_key(kind: str, key: str) -> str:
    """The call key of a one-request call: where a failure of that request alone is recorded."""
    return _hash([kind, [key]])


def _recorded(record: dict[str, Any]) -> RecagentError:
    if record["type"] == "StructuredOutputError":
        return StructuredOutputError(record["message"], raw=record.get("raw") or "", hint=record.get("hint") or "")
    if record["type"] == "InputError":
        return InputError(record["message"], hint=record.get("hint") or "")
    return EngineError(record["message"], hint=record.get("hint") or "")


class CachingEngine(LLMEngine):
    """Serves requests from ``cache``; sends misses to ``inner`` (None = replay: a miss raises CacheMissError)."""

    def __init__(self, inner: LLMEngine | None, cache: LLMCache, *, identity: dict[str, Any] | None = None) -> None:
        if inner is None and identity is None:
            raise InputError("a replay engine needs the recorded engine identity", hint="pass identity=")
        self.inner = inner
        self.cache = cache
        self.identity = identity if identity is not None else engine_identity(inner)  # type: ignore[arg-type]
        self.backend = str(self.identity.get("backend", "?"))  # same name: batching locks in-process backends
        self.model_id = str(self.identity.get("model_id", "?"))
        self.replay = inner is None

    def describe(self) -> dict[str, Any]:
        return {**self.identity, "cache": str(self.cache.path), "replay": self.replay}

    def _key(self, kind: str, request: LLMRequest, params: dict[str, Any]) -> str:
        return _hash({"engine": self.identity, "kind": kind, "request": request.model_dump(mode="json"), **params})

    def _miss(self, what: str) -> CacheMissError:
        return CacheMissError(
            f"replay: no recorded LLM output for a {what} request (model {self.model_id})",
            hint="the prompts, settings or data differ from the recorded run; run without --replay to record them",
        )

    def _call(self, kind: str, keys: list[str], reqs: list[LLMRequest], send: Any, decode: Any) -> list[Any]:
        call_key = _hash([kind, keys])
        recorded = self.cache.get_error(call_key)
        if recorded is not None and (self.inner is None or recorded["type"] in _DETERMINISTIC_ERRORS):
            raise _recorded(recorded)  # a transient error (engine down, timeout) is tried again unless replaying
        out: list[Any] = [self.cache.get(k) for k in keys]
        # outputs that failed their schema inside a batch are recorded per request (PartialOutputError)
        failed: dict[int, RecagentError] = {}
        if len(keys) > 1:
            for i, v in enumerate(out):
                single = self.cache.get_error(_single_key(kind, keys[i])) if v is None else None
                if single is not None and single["type"] == "StructuredOutputError":
                    failed[i] = _recorded(single)
        missing = [i for i, v in enumerate(out) if v is None and i not in failed]
        self.cache.hits += len(keys) - len(missing)
        self.cache.misses += len(missing)
        if missing:
            if self.inner is None:
                raise self._miss(kind)
            try:
                fresh: list[Any] = list(send(missing))
            except PartialOutputError as exc:
                fresh = list(exc.outcomes)
            except RecagentError as exc:
                self.cache.put_error(call_key, kind, _error_record(exc))
                raise
            if recorded is not None:
                self.cache.delete_error(call_key)  # the call succeeded this time: replay must see the outputs
            for i, value in zip(missing, fresh, strict=True):
                if isinstance(value, StructuredOutputError):
                    self.cache.put_error(_single_key(kind, keys[i]), kind, _error_record(value))
                    failed[i] = value
                    continue
                dumped = value.model_dump(mode="json")
                self.cache.put(keys[i], kind, reqs[i].model_dump(mode="json"), dumped)
                out[i] = dumped
        if failed:
            outcomes = [failed[i] if i in failed else decode(v) for i, v in enumerate(out)]
            if len(outcomes) == 1:
                raise failed[0]
            raise PartialOutputError(outcomes)
        return [decode(v) for v in out]

    def generate(
        self,
        requests: Sequence[RequestLike],
        *,
        json_schema: SchemaArg = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        reqs = [LLMRequest.of(r) for r in requests]
        schemas = schemas_per_request(json_schema, len(reqs))
        params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        if stop:
            params["stop"] = list(stop)  # only then part of the key: entries written without stop stay valid
        keys = [self._key("generate", r, {**params, "schema": s}) for r, s in zip(reqs, schemas, strict=True)]

        def send(idx: list[int]) -> list[Generation]:
            assert self.inner is not None
            return self.inner.generate(
                [reqs[i] for i in idx],
                json_schema=[schemas[i] for i in idx],
                **params,  # type: ignore[arg-type]
            )

        return self._call("generate", keys, reqs, send, Generation.model_validate)

    def has_chat_template(self) -> bool | None:
        return self.inner.has_chat_template() if self.inner is not None else None

    def score_options(self, requests: Sequence[RequestLike], labels: Sequence[str]) -> list[OptionScores]:
        reqs = [LLMRequest.of(r) for r in requests]
        names = check_labels(labels)
        keys = [self._key("score_options", r, {"labels": names}) for r in reqs]

        def send(idx: list[int]) -> list[OptionScores]:
            assert self.inner is not None
            return self.inner.score_options([reqs[i] for i in idx], names)

        return self._call("score_options", keys, reqs, send, OptionScores.model_validate)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
