"""One error envelope for every failure, like vLLM's OpenAI server: ``{"error": {message, type, code, hint}}``.

- ``RecagentError``: bad input 400 (not found 404, conflict 409), authentication 401, engine or store unavailable
  or server busy 503, anything else 500 (its message is deliberate and safe to show);
- request validation (pydantic) 422 listing each problem; unknown routes 404; wrong method 405; oversized body 413;
- unexpected exceptions: 500 with the request id only (logged with the traceback server side; see middleware.py).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.errors import (
    ConfigError,
    EngineError,
    InputError,
    RecagentError,
    StoreError,
)
from agent.server.batcher import ServerBusyError
from agent.server.wire import ErrorBody, ErrorResponse

log = logging.getLogger(__name__)


class AuthenticationError(RecagentError):
    """Missing or wrong bearer token."""


class NotFoundError(InputError):
    """A route or an item that does not exist."""


class ConflictError(InputError):
    """The resource changed underneath the request."""


class BodyTooLargeError(InputError):
    """The request body is over ``server_max_body_bytes``."""


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def classify(exc: RecagentError) -> tuple[int, str]:
    """HTTP status and envelope type of a recagent error."""
    names = _class_names(exc)
    if isinstance(exc, AuthenticationError):
        return 401, "authentication_error"
    if isinstance(exc, BodyTooLargeError):
        return 413, "request_too_large"
    # SessionNotFoundError / SessionConflictError live in agent.sessions (matched by name: no import cycle)
    if isinstance(exc, NotFoundError) or "SessionNotFoundError" in names:
        return 404, "not_found_error"
    if isinstance(exc, ConflictError) or "SessionConflictError" in names:
        return 409, "conflict_error"
    if isinstance(exc, ServerBusyError | EngineError | StoreError):
        return 503, "service_unavailable"
    if isinstance(exc, ConfigError):
        return 500, "server_error"
    if isinstance(exc, InputError):
        return 400, "invalid_request_error"
    return 500, "server_error"


def _subclasses(cls: type[RecagentError]) -> list[type[RecagentError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


def classify_name(type_name: str) -> tuple[int, str]:
    """Like :func:`classify` for an error known only by its class name (the conversation's stream reports errors
    as events: ``{"type": "SessionNotFoundError", "message", "hint"}``)."""
    cls = next((c for c in _subclasses(RecagentError) if c.__name__ == type_name), RecagentError)
    return classify(cls.__new__(cls))


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def envelope(
    status: int, kind: str, message: str, *, hint: str | None = None, request_id: str | None = None
) -> dict[str, Any]:
    body = ErrorBody(message=message, type=kind, code=status, hint=hint or None, request_id=request_id)
    return ErrorResponse(error=body).model_dump(mode="json")


def error_response(
    status: int,
    kind: str,
    message: str,
    *,
    hint: str | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        envelope(status, kind, message, hint=hint, request_id=request_id), status_code=status, headers=headers
    )


def recagent_error_response(exc: RecagentError, request_id: str | None) -> JSONResponse:
    status, kind = classify(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status >= 500:
        log.warning("request %s failed: %s: %s", request_id, type(exc).__name__, exc.message)
    return error_response(status, kind, exc.message, hint=exc.hint, request_id=request_id, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors()[:20]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        problems.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(problems)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RecagentError)
    async def _recagent(request: Request, exc: RecagentError) -> JSONResponse:
        return recagent_error_response(exc, request_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            422,
            "invalid_request_error",
            _validation_message(exc),
            hint="send a JSON body matching the schema at /docs (GET /openapi.json)",
            request_id=request_id_of(request),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        rid = request_id_of(request)
        if isinstance(exc.__cause__, RecagentError):  # e.g. the body limit hit while FastAPI read the body
            return recagent_error_response(exc.__cause__, rid)
        if exc.status_code == 404:
            detail = exc.detail if exc.detail and exc.detail != "Not Found" else f"no route {request.url.path}"
            return error_response(
                404, "not_found_error", str(detail), hint="the API is described at /docs", request_id=rid
            )
        if exc.status_code == 405:
            return error_response(
                405,
                "invalid_request_error",
                f"method {request.method} is not allowed on {request.url.path}",
                hint="the API is described at /docs",
                request_id=rid,
                headers=dict(exc.headers or {}),
            )
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(exc.status_code, kind, str(exc.detail), request_id=rid, headers=dict(exc.headers or {}))
