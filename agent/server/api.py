"""The JSON API under ``/v1`` and ``/healthz``. Handlers are thin: validate (pydantic), queue, await, answer."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from agent.chat.conversation import ChatReply
from agent.errors import InputError, RecagentError
from agent.pipeline import Recommendation, RecommendRequest
from agent.server.batcher import ServerBusyError
from agent.server.errors import NotFoundError, classify, classify_name, envelope, request_id_of
from agent.server.health import check_health
from agent.server.middleware import auth_problem
from agent.server.state import get_state
from agent.server.wire import CreateSessionRequest, ErrorResponse, Health, MessageRequest
from agent.sessions import SessionState
from retrieval.types import Item

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="Required when the server has a token (RECAGENT_SERVER_TOKEN).")
"""Documents the scheme in the OpenAPI schema; the check itself runs in middleware.py, before the body is read."""

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (400, "Bad input (the message says which, the hint how to fix it)"),
        (401, "Missing or wrong bearer token"),
        (404, "Unknown session, item or route"),
        (413, "Request body too large"),
        (422, "Body does not match the schema"),
        (500, "Internal error (quote the request id)"),
        (503, "Engine, catalog store or session database unavailable, or the server is overloaded"),
    ]
}

api = APIRouter(prefix="/v1", dependencies=[Security(_bearer)], responses=ERRORS)
meta = APIRouter()


@api.post(
    "/recommend",
    response_model=Recommendation,
    tags=["recommend"],
    responses={200: {"content": {"text/event-stream": {}}, "description": "Recommendation, or server-sent events"}},
)
async def recommend(
    body: RecommendRequest,
    request: Request,
    stream: bool = Query(False, description="Stream server-sent events (same as `Accept: text/event-stream`)."),
) -> Any:
    """Ranked items with grounded justifications for a user id, a free-text need, likes and constraints. With
    `?stream=true` or `Accept: text/event-stream` the items come first: an `items` event (the Recommendation with
    template reasons, `justifications_pending` > 0 and items flagged `justification_pending`), one `justification`
    event per item as its LLM justification is written (`{rank, item_id, justification, justification_source,
    grounded, grounding_note, cited, flags, error}`; `error` says why the template reason was kept), then `done`
    (the final Recommendation) - or `error` (the error envelope's body)."""
    _check_text(body.model_dump(), "the request")
    state = get_state(request)
    await run_in_threadpool(state.check_catalog)
    if stream or "text/event-stream" in request.headers.get("accept", ""):
        return await _recommend_stream(request, body)
    rec = await state.result(state.recommend_batcher.submit(body))
    _log_fallback(request_id_of(request), rec)
    return rec


@api.get("/items/{item_id}", response_model=Item, tags=["catalog"])
async def get_item(item_id: str, request: Request) -> Item:
    """One catalog item with all its fields."""
    state = get_state(request)

    def lookup() -> Item | None:
        state.check_catalog()
        return state.recommender.collection.get_items([item_id]).get(item_id)

    item = await run_in_threadpool(lookup)
    if item is None:
        raise NotFoundError(
            f"no item {item_id!r} in collection {state.recommender.collection_name!r}",
            hint="use an item id from a recommendation (items[].item_id)",
        )
    return item


@api.post("/sessions", response_model=SessionState, status_code=201, tags=["chat"])
async def create_session(request: Request, body: CreateSessionRequest | None = None) -> SessionState:
    """Start a conversation (optionally for a known user id, whose history then seeds the suggestions)."""
    state = get_state(request)
    _check_text(body.user_id if body else None, "user_id")
    return await run_in_threadpool(state.conversation.start, body.user_id if body else None)


@api.get("/sessions/{session_id}", response_model=SessionState, tags=["chat"])
async def get_session(session_id: str, request: Request) -> SessionState:
    """A conversation: its turns, the preferences gathered so far, items shown, accepted and rejected."""
    return await run_in_threadpool(get_state(request).conversation.get, session_id)


@api.post(
    "/sessions/{session_id}/messages",
    response_model=ChatReply,
    tags=["chat"],
    responses={200: {"content": {"text/event-stream": {}}, "description": "ChatReply, or server-sent events"}},
)
async def send_message(
    session_id: str,
    body: MessageRequest,
    request: Request,
    stream: bool = Query(False, description="Stream server-sent events (same as `Accept: text/event-stream`)."),
) -> Any:
    """One chat turn. JSON answers a ChatReply once the turn is stored. With `?stream=true` or
    `Accept: text/event-stream` the answer is a stream of events: `preferences`, `items`, `delta` (reply text to
    append, streamed as the engine decodes it), `replace` (only when the checked reply differs from the deltas:
    `{"text", "reason"}`, show `text` instead), then `done` (the ChatReply, whose `reply` is the text to keep) - or
    `error` (the error envelope's body)."""
    _check_text(body.message, "the message")
    state = get_state(request)
    rid = request_id_of(request) or ""
    if stream or "text/event-stream" in request.headers.get("accept", ""):
        return await _stream(request, session_id, body.message)
    await run_in_threadpool(state.check_catalog)
    reply = await state.result(state.chat_batcher.submit((session_id, body.message, rid)))
    _log_fallback(rid, reply.recommendation)
    return reply


def _check_text(value: Any, where: str) -> None:
    """Text in a request must be valid Unicode. JSON lets a client send escapes of unpaired surrogates
    (``"\\ud800"``), which can be neither stored (SQLite) nor tokenized (the embedder): they are bad input (400)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"{where} contains an unpaired surrogate escape at character {exc.start}, which is not valid Unicode",
                hint="send valid UTF-8 text (\\uD800-\\uDFFF escapes are only valid as surrogate pairs)",
            ) from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_text(item, where)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_text(item, where)


def _log_fallback(rid: str | None, rec: Recommendation | None) -> None:
    """An answer the engine could not rank (engine down, timeout, invalid output) is still an answer; the
    operator sees why in the log, under the request id."""
    if rec is not None and rec.fallback_reason:
        log.warning("request %s answered in retrieval order (fallback: %s)", rid, rec.fallback_reason)


E = TypeVar("E")


def _next(events: Iterator[E]) -> E | None:
    return next(events, None)


def _stream_error(n: int, exc: Exception, rid: str | None) -> ServerSentEvent:
    if isinstance(exc, RecagentError):
        status, kind = classify(exc)
        return _sse(n, "error", envelope(status, kind, exc.message, hint=exc.hint, request_id=rid)["error"])
    log.error("unexpected error while streaming request %s", rid, exc_info=exc)
    body = envelope(500, "server_error", f"internal server error (request id {rid})", request_id=rid)
    return _sse(n, "error", body["error"])


async def _recommend_stream(request: Request, body: RecommendRequest) -> Any:
    """Recommend with the justifications later (errors before the first event are plain HTTP errors)."""
    state = get_state(request)
    rid = request_id_of(request)
    timeout = state.settings.server_request_timeout_s
    try:
        rec = await asyncio.wait_for(run_in_threadpool(state.recommender.recommend, body, explain="later"), timeout)
    except TimeoutError as exc:
        raise ServerBusyError(
            f"the request did not finish within {timeout:.0f} s",
            hint="retry later, or raise RECAGENT_SERVER_REQUEST_TIMEOUT_S",
        ) from exc
    _log_fallback(rid, rec)
    events = state.recommender.justify_events(rec)

    async def gen() -> AsyncIterator[ServerSentEvent]:
        n = 1
        yield _sse(n, "items", rec.model_dump(mode="json"))
        try:
            while (event := await run_in_threadpool(_next, events)) is not None:
                n += 1
                yield _sse(n, "justification", event.model_dump(mode="json"))
        except Exception as exc:  # justify_events keeps template reasons itself: this is a bug, said as one
            yield _stream_error(n + 1, exc, rid)
            return
        finally:
            await run_in_threadpool(events.close)
        yield _sse(n + 1, "done", rec.model_dump(mode="json"))

    return EventSourceResponse(gen(), ping=15, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(n: int, event: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data, ensure_ascii=False), event=event, id=str(n))


def _error_body(data: dict[str, Any], rid: str | None) -> tuple[int, dict[str, Any]]:
    """The conversation's error event (``type`` = error class name) as the API's error envelope body."""
    status, kind = classify_name(str(data.get("type", "")))
    message = str(data.get("message") or "the turn failed")
    body = envelope(status, kind, message, hint=data.get("hint") or None, request_id=rid)["error"]
    return status, body


async def _stream(request: Request, session_id: str, message: str) -> Any:
    state = get_state(request)
    rid = request_id_of(request)
    await run_in_threadpool(state.check_catalog)
    events = state.conversation.stream(session_id, message, request_id=rid)
    # the first stage runs before answering: an unknown session or a bad message is a plain HTTP error
    first = await run_in_threadpool(_next, events)
    if first is not None and first.event == "error":
        status, body = _error_body(first.data, rid)
        return JSONResponse({"error": body}, status_code=status)

    async def gen() -> AsyncIterator[ServerSentEvent]:
        n = 0
        event = first
        try:
            while event is not None:
                n += 1
                if event.event == "error":
                    yield _sse(n, "error", _error_body(event.data, rid)[1])
                    break
                yield _sse(n, event.event, event.data)
                if event.event == "done":
                    reason = (event.data.get("recommendation") or {}).get("fallback_reason")
                    if reason:
                        log.warning("request %s answered in retrieval order (fallback: %s)", rid, reason)
                    break
                try:
                    event = await run_in_threadpool(_next, events)
                except Exception as exc:
                    yield _stream_error(n + 1, exc, rid)
                    break
        finally:
            close = getattr(events, "close", None)  # a generator left early: let it clean up
            if close is not None:
                await run_in_threadpool(close)

    return EventSourceResponse(gen(), ping=15, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@meta.get("/healthz", response_model=Health, tags=["meta"], responses={503: {"model": Health}})
async def healthz(request: Request) -> JSONResponse:
    """Engine, catalog store and session database status (no token needed: for load balancers). 503 when the
    store or the session database cannot be used; 200 with status `degraded` when only the LLM is down. When the
    server has a token, callers without it see the statuses only (no locations, models or error details)."""
    state = get_state(request)
    code, health = await run_in_threadpool(check_health, state)
    token = state.settings.server_token
    if token is not None and auth_problem(request.headers.get("authorization"), token.get_secret_value().encode()):
        health = health.summary()  # callers without the token (load balancers) see the statuses, not the details
    return JSONResponse(health.model_dump(mode="json"), status_code=code)
