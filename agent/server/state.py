"""What every request shares: the settings, ONE Recommender (one engine), the Conversation and the batchers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request

from agent.errors import InputError, RecagentError, StoreError
from agent.pipeline import Recommendation, Recommender, RecommendRequest
from agent.server.batcher import MicroBatcher, ServerBusyError
from agent.settings import Settings

if TYPE_CHECKING:
    from agent.chat.conversation import ChatReply, Conversation
    from agent.sessions import SessionStore

log = logging.getLogger(__name__)

R = TypeVar("R")

ChatInput = tuple[str, str, str]
"""(session id, message, request id) of one chat turn queued for the batcher."""


class CatalogUnavailableError(StoreError):
    """The configured collection is missing or empty: the server cannot recommend yet."""


@dataclass
class ServerState:
    settings: Settings
    recommender: Recommender
    conversation: Conversation
    owns_recommender: bool
    sessions: SessionStore | None = None
    """The session store (health checks); closed on shutdown when ``owns_sessions``."""
    owns_sessions: bool = False
    started: float = field(default_factory=time.time)
    _catalog_ok: bool = False
    _catalog_lock: threading.Lock = field(default_factory=threading.Lock)
    recommend_batcher: MicroBatcher[RecommendRequest, Recommendation] = field(init=False)
    chat_batcher: MicroBatcher[ChatInput, ChatReply] = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        common: dict[str, Any] = {
            "max_batch": s.server_batch_max,
            "max_wait_s": s.server_batch_wait_ms / 1000,
            "max_pending": s.server_max_pending,
        }
        self.recommend_batcher = MicroBatcher(self._recommend_batch, name="recommend-batcher", **common)
        self.chat_batcher = MicroBatcher(self._chat_batch, name="chat-batcher", **common)

    # -- batch functions (run in the batchers' threads) -----------------------------------------------------------
    def _recommend_batch(self, requests: list[RecommendRequest]) -> list[Recommendation]:
        return self.recommender.recommend_many(requests)

    def _chat_batch(self, turns: list[ChatInput]) -> list[ChatReply | RecagentError]:
        return self.conversation.send_many(
            [(sid, message) for sid, message, _ in turns], request_ids=[rid or None for _, _, rid in turns]
        )

    # -- helpers for the routes ----------------------------------------------------------------------------------
    def check_catalog(self) -> None:
        """Open the collection once; a missing or empty catalog is the server's problem (503), not the caller's."""
        if self._catalog_ok:
            return
        with self._catalog_lock:
            if self._catalog_ok:
                return
            try:
                _ = self.recommender.collection
            except InputError as exc:
                raise CatalogUnavailableError(exc.message, hint=exc.hint) from exc
            self._catalog_ok = True

    async def result(self, future: Future[R]) -> R:
        """Await a batcher future, bounded by ``server_request_timeout_s``."""
        timeout = self.settings.server_request_timeout_s
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError as exc:
            raise ServerBusyError(
                f"the request did not finish within {timeout:.0f} s",
                hint="retry later, or raise RECAGENT_SERVER_REQUEST_TIMEOUT_S",
            ) from exc

    def warm_up(self) -> None:
        """Start the engine and open the catalog now (call it in the main thread before serving)."""
        engine = self.recommender.engine()
        if engine is None:
            log.warning("the LLM engine is unavailable: answers fall back to the retrieval order")
        try:
            self.check_catalog()
        except RecagentError as exc:
            log.warning("catalog not ready: %s (%s)", exc.message, exc.hint)

    def close(self) -> None:
        self.recommend_batcher.close()
        self.chat_batcher.close()
        if self.owns_sessions and self.sessions is not None:
            self.sessions.close()
        if self.owns_recommender:
            self.recommender.close()


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.recagent
    return state
