"""Pydantic wire models of the HTTP API that are not already pipeline or conversation models.

Requests and responses reuse the models of the layers below where they exist (``RecommendRequest``,
``Recommendation``, ``ChatReply``, ``SessionState``, ``Item``) so that the API cannot drift from them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Wire):
    message: str = Field(description="What went wrong.")
    type: str = Field(description="Error class, e.g. invalid_request_error, not_found_error, authentication_error.")
    code: int = Field(description="The HTTP status code.")
    hint: str | None = Field(None, description="How to fix it.")
    request_id: str | None = Field(None, description="The request's X-Request-ID (quote it when reporting a bug).")


class ErrorResponse(_Wire):
    """Every error answer: ``{"error": {"message", "type", "code", "hint", "request_id"}}``."""

    error: ErrorBody


class CreateSessionRequest(_Wire):
    user_id: str | None = Field(
        None, max_length=200, description="Known user: their interaction history seeds the recommendations."
    )


class MessageRequest(_Wire):
    message: str = Field(description="The user's message (empty or too long -> 400).")


class ComponentHealth(_Wire):
    status: Literal["ok", "unavailable", "error"]
    detail: str | None = None


class EngineHealth(ComponentHealth):
    backend: str | None = None
    model: str | None = None
    replicas: dict[str, str] = Field(default_factory=dict, description="Status of each LLM server replica.")
    attempts: int | None = Field(None, description="Engine start attempts so far (a failed start is retried).")
    retry_in_s: float | None = Field(None, description="Seconds until the next start attempt (engine unavailable).")


class StoreHealth(ComponentHealth):
    location: str | None = None
    collection: str | None = None
    items: int | None = None


class SessionsHealth(ComponentHealth):
    sessions: int | None = None


class BatcherHealth(_Wire):
    pending: int
    batches: int
    requests: int
    largest_batch: int


class Health(_Wire):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="ok; degraded = the LLM engine is unavailable (answers fall back to the retrieval order); "
        "unavailable = the catalog store or the session database cannot be used (HTTP 503)."
    )
    engine: EngineHealth
    store: StoreHealth
    sessions: SessionsHealth
    batchers: dict[str, BatcherHealth]
    version: str
    uptime_s: float

    def summary(self) -> Health:
        """The statuses only: what a caller without the server's token may see."""
        return Health(
            status=self.status,
            engine=EngineHealth(status=self.engine.status),
            store=StoreHealth(status=self.store.status),
            sessions=SessionsHealth(status=self.sessions.status),
            batchers={},
            version=self.version,
            uptime_s=self.uptime_s,
        )
