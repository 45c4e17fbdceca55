"""A chat session as a LangChain ``BaseChatMessageHistory`` (for ``RunnableWithMessageHistory`` and friends).

Sessions are append-only and stored a turn pair at a time: ``add_messages`` takes user / assistant message pairs
and commits each pair in one transaction (the same :meth:`SessionStore.commit_turn` the conversation uses), so a
history written here and one written by :class:`~agent.chat.conversation.Conversation` are the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from agent.chat.conversation import history_messages
from agent.errors import InputError
from agent.sessions import SessionStore, Turn

__all__ = ["SessionChatHistory"]


class SessionChatHistory(BaseChatMessageHistory):
    """The turns of session ``session_id`` in ``store``, as LangChain messages."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        store.get(session_id)  # SessionNotFoundError (with its hint) now rather than later

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return history_messages(self.store.get(self.session_id).turns)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        msgs = list(messages)
        pairs_ok = len(msgs) % 2 == 0 and all(
            isinstance(h, HumanMessage) and isinstance(a, AIMessage) for h, a in zip(msgs[::2], msgs[1::2], strict=True)
        )
        if not pairs_ok:
            raise InputError(
                "a session stores turns in pairs: a human message followed by an AI message",
                hint="add [HumanMessage(...), AIMessage(...)] together",
            )
        for human, ai in zip(msgs[::2], msgs[1::2], strict=True):
            state = self.store.get(self.session_id)
            n = state.last_turn_id
            self.store.commit_turn(
                state,
                Turn(turn_id=n + 1, role="user", content=str(human.content)),
                Turn(turn_id=n + 2, role="assistant", content=str(ai.content)),
            )

    def clear(self) -> None:
        raise InputError("chat sessions are append-only and cannot be cleared", hint="start a new session instead")
