"""``GET /healthz``: can this process answer? Engine (and each LLM server replica), catalog store, session DB."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

import httpx

from agent.errors import RecagentError
from agent.server.state import ServerState
from agent.server.wire import (
    BatcherHealth,
    EngineHealth,
    Health,
    SessionsHealth,
    StoreHealth,
)


def package_version() -> str:
    try:
        return version("recagent")
    except PackageNotFoundError:
        return "unknown"


def _replica_status(url: str) -> str:
    root = url[: -len("/v1")] if url.endswith("/v1") else url
    try:
        code = httpx.get(f"{root}/health", timeout=2).status_code
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok" if code == 200 else f"HTTP {code}"


def engine_health(state: ServerState) -> EngineHealth:
    rec = state.recommender
    engine = rec.engine()  # starts the engine, or tries a failed start again once its cool-down has passed
    info = rec.engine_status()
    if engine is None:
        reason = info["error"] or "not started"
        retry = f"; next start attempt in {info['retry_in_s']:.0f} s" if info["retry_in_s"] is not None else ""
        return EngineHealth(
            status="unavailable",
            detail=f"{reason}; answers fall back to the retrieval order{retry}",
            attempts=info["attempts"],
            retry_in_s=info["retry_in_s"],
        )
    out = EngineHealth(status="ok", backend=engine.backend, model=engine.model_id, attempts=info["attempts"])
    if engine.backend == "openai":
        from agent.network import redact_url

        out.replicas = {redact_url(url): _replica_status(url) for url in state.settings.server_urls}
        if out.replicas and not any(v == "ok" for v in out.replicas.values()):
            out.status = "unavailable"
            out.detail = "no LLM server replica answers its health check"
    return out


def store_health(state: ServerState) -> StoreHealth:
    rec = state.recommender
    out = StoreHealth(status="ok", collection=rec.collection_name)
    try:
        out.location = rec.store.location
        state.check_catalog()
        out.items = rec.collection.count()
    except RecagentError as exc:
        out.status = "error"
        out.detail = exc.message
    return out


def sessions_health(state: ServerState) -> SessionsHealth:
    store = state.sessions
    if store is None:
        return SessionsHealth(status="unavailable", detail="no session store")
    try:
        return SessionsHealth(status="ok", sessions=store.count())
    except RecagentError as exc:
        return SessionsHealth(status="error", detail=exc.message)
    except Exception as exc:  # a database driver error: report it, the health check itself must answer
        return SessionsHealth(status="error", detail=f"{type(exc).__name__}: {exc}"[:300])


def check_health(state: ServerState) -> tuple[int, Health]:
    engine = engine_health(state)
    store = store_health(state)
    sessions = sessions_health(state)
    if store.status != "ok" or sessions.status != "ok":
        status, code = "unavailable", 503
    elif engine.status != "ok":
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    batchers = {
        b.name: BatcherHealth(
            pending=b.pending, batches=b.stats.batches, requests=b.stats.items, largest_batch=b.stats.largest
        )
        for b in (state.recommend_batcher, state.chat_batcher)
    }
    health = Health(
        status=status,  # type: ignore[arg-type]
        engine=engine,
        store=store,
        sessions=sessions,
        batchers=batchers,
        version=package_version(),
        uptime_s=round(time.time() - state.started, 1),
    )
    return code, health
