"""The edge of every request, as one pure ASGI middleware (streaming responses pass through untouched):

1. a request id: the caller's ``X-Request-ID`` when it is a short token, else a new one; echoed on every response
   and put in ``request.state.request_id``;
2. bearer-token auth on ``/v1/...`` when a token is configured (constant-time comparison), before any body is read;
3. the body size limit: ``Content-Length`` over the limit is refused at once, a chunked body as soon as it passes it;
4. a last guard: an unexpected exception becomes a 500 envelope naming the request id; the traceback goes to the
   log, never to the client.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.server.errors import BodyTooLargeError, envelope

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_GOOD_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PROTECTED_PREFIX = "/v1/"


def new_request_id() -> str:
    return uuid.uuid4().hex


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get(REQUEST_ID_HEADER, "")
        rid = given if _GOOD_ID.match(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                raw = list(message.get("headers", []))
                raw.append((b"x-request-id", rid.encode()))
                raw.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": raw}
            await send(message)

        async def reply(status: int, kind: str, text: str, hint: str, extra: dict[str, str] | None = None) -> None:
            body = json.dumps(envelope(status, kind, text, hint=hint, request_id=rid)).encode()
            head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            head += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
            await send_with_id({"type": "http.response.start", "status": status, "headers": head})
            await send_with_id({"type": "http.response.body", "body": body})

        path: str = scope.get("path", "")
        if self.token is not None and path.startswith(PROTECTED_PREFIX) and scope.get("method") != "OPTIONS":
            problem = self._auth_problem(headers.get("authorization"))
            if problem:
                await reply(
                    401,
                    "authentication_error",
                    problem,
                    "send the header `Authorization: Bearer TOKEN` with the server's token (RECAGENT_SERVER_TOKEN)",
                    {"www-authenticate": "Bearer"},
                )
                return

        limit = self.max_body_bytes
        too_large = f"request body is larger than the limit of {limit} bytes"
        size_hint = "send a smaller body, or raise RECAGENT_SERVER_MAX_BODY_BYTES on the server"
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await reply(413, "request_too_large", too_large, size_hint)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # FastAPI turns this into a 400 whose cause the error handler maps to 413
                    raise BodyTooLargeError(too_large, hint=size_hint)
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLargeError:
            if started:
                raise
            await reply(413, "request_too_large", too_large, size_hint)
        except Exception:
            log.exception("unexpected error in request %s %s %s", rid, scope.get("method"), path)
            if started:
                raise
            await reply(
                500,
                "server_error",
                f"internal server error (request id {rid})",
                "retry; if it persists, report the request id to the operator (the server log has the details)",
            )

    def _auth_problem(self, header: str | None) -> str | None:
        assert self.token is not None
        return auth_problem(header, self.token)


def auth_problem(header: str | None, token: bytes) -> str | None:
    """Why the ``Authorization`` header does not carry ``token`` (None when it does). Constant-time comparison:
    the time taken does not tell how much of a guess was right."""
    if not header:
        return "missing bearer token"
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return "the Authorization header must be `Bearer TOKEN`"
    if not hmac.compare_digest(value.strip().encode(), token):
        return "wrong bearer token"
    return None
