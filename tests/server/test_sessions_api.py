"""Chat sessions over HTTP: create, read, JSON turns, server-sent-event turns, errors; batching of chat turns."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from agent.chat.conversation import ChatEvent, ChatReply, Conversation
from agent.errors import EngineUnavailableError, RecagentError
from agent.llm.base import LLMRequest
from agent.pipeline import Recommender
from agent.server import create_app
from agent.sessions import SessionConflictError, SessionState
from agent.settings import Settings

from fakes import FakeEngine, text_of
from server_helpers import assert_envelope, parse_sse
from testkit import free_port

MakeClient = Callable[..., TestClient]


def new_session(client: TestClient, **body: object) -> str:
    resp = client.post("/v1/sessions", json=body) if body else client.post("/v1/sessions")
    assert resp.status_code == 201, resp.text
    state = SessionState.model_validate(resp.json())
    assert re.fullmatch(r"[0-9a-f]{32}", state.session_id) and state.turns == []
    return state.session_id


def test_create_and_read_sessions(client: TestClient) -> None:
    sid = new_session(client)
    other = new_session(client, user_id="7")
    assert sid != other
    got = client.get(f"/v1/sessions/{other}")
    assert got.status_code == 200 and got.json()["user_id"] == "7" and got.json()["session_id"] == other
    assert client.get("/healthz").json()["sessions"]["sessions"] == 2
    assert_envelope(client.post("/v1/sessions", json={"user": "7"}), 422, "invalid_request_error", contains="user")
    err = assert_envelope(client.get("/v1/sessions/0123456789abcdef0123456789abcdef"), 404, "not_found_error",
                          contains="no chat session")  # fmt: skip
    assert err["hint"]


def test_json_turns_are_stored_and_numbered(client: TestClient) -> None:
    sid = new_session(client)
    first = {"message": "a funny animated movie for kids"}
    resp = client.post(f"/v1/sessions/{sid}/messages", json=first, headers={"X-Request-ID": "r-1"})
    assert resp.status_code == 200, resp.text
    reply = ChatReply.model_validate(resp.json())
    assert reply.session_id == sid and reply.turn_id == 2 and reply.reply
    assert reply.request_id == "r-1" == resp.headers["x-request-id"]
    if not reply.clarifying:
        assert reply.recommendation is not None and reply.recommendation.items
        assert all(i.title and i.justification for i in reply.recommendation.items)
    second = ChatReply.model_validate(
        client.post(f"/v1/sessions/{sid}/messages", json={"message": "something with adventure too"}).json()
    )
    assert second.turn_id == 4
    state = SessionState.model_validate(client.get(f"/v1/sessions/{sid}").json())
    assert [(t.turn_id, t.role) for t in state.turns] == [(1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]
    assert state.turns[0].content == "a funny animated movie for kids"
    assert state.turns[0].request_id == state.turns[1].request_id == "r-1"  # the log line and the turn match
    shown = reply.recommendation.items if reply.recommendation else []
    assert state.turns[1].item_ids == [i.item_id for i in shown]


def test_bad_messages(make_client: MakeClient) -> None:
    client = make_client(max_message_chars=50)
    sid = new_session(client)
    url = f"/v1/sessions/{sid}/messages"
    assert_envelope(client.post(url, json={"message": "   "}), 400, "invalid_request_error")
    err = assert_envelope(client.post(url, json={"message": "x" * 51}), 400, "invalid_request_error", contains="50")
    assert err["hint"]
    assert_envelope(client.post(url, json={}), 422, "invalid_request_error", contains="message")
    assert_envelope(client.post(url, json={"message": 5}), 422, "invalid_request_error", contains="message")
    missing = "/v1/sessions/ffffffffffffffffffffffffffffffff/messages"
    assert_envelope(client.post(missing, json={"message": "hello"}), 404, "not_found_error")
    assert client.get(f"/v1/sessions/{sid}").json()["turns"] == []  # nothing half-stored


@pytest.mark.parametrize("how", ["accept", "query"])
def test_streamed_turn(client: TestClient, how: str) -> None:
    sid = new_session(client)
    url = f"/v1/sessions/{sid}/messages"
    body = {"message": "a scary movie from the 80s"}
    if how == "accept":
        resp = client.post(url, json=body, headers={"Accept": "text/event-stream"})
    else:
        resp = client.post(url + "?stream=true", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(resp.text)
    names = [name for name, _ in events]
    assert names[-1] == "done" and "error" not in names
    assert set(names) <= {"preferences", "items", "delta", "done"}
    reply = ChatReply.model_validate(events[-1][1])
    assert reply.session_id == sid and reply.turn_id == 2 and reply.request_id == resp.headers["x-request-id"]
    deltas = "".join(d.get("text", d.get("delta", "")) for name, d in events if name == "delta")
    if deltas:
        assert deltas.strip() == reply.reply.strip()
    state = client.get(f"/v1/sessions/{sid}").json()
    assert [t["role"] for t in state["turns"]] == ["user", "assistant"]


def test_stream_errors_before_the_first_event_are_plain_http_errors(client: TestClient) -> None:
    sse = {"Accept": "text/event-stream"}
    missing = "/v1/sessions/ffffffffffffffffffffffffffffffff/messages"
    assert_envelope(client.post(missing, json={"message": "hi"}, headers=sse), 404, "not_found_error")
    sid = new_session(client)
    assert_envelope(client.post(f"/v1/sessions/{sid}/messages", json={"message": ""}, headers=sse), 400,
                    "invalid_request_error")  # fmt: skip


def test_concurrent_chat_turns_share_engine_batches(make_client: MakeClient) -> None:
    client = make_client(engine=FakeEngine(delay_s=0.3), server_batch_wait_ms=50)
    sessions = [new_session(client) for _ in range(5)]
    start = threading.Barrier(len(sessions))
    codes: dict[str, int] = {}

    def turn(sid: str) -> None:
        start.wait()
        codes[sid] = client.post(f"/v1/sessions/{sid}/messages", json={"message": "a light comedy"}).status_code

    threads = [threading.Thread(target=turn, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == dict.fromkeys(sessions, 200)
    stats = client.app.state.recagent.chat_batcher.stats  # type: ignore[attr-defined]
    assert stats.items == 5 and stats.largest >= 2
    for sid in sessions:
        assert len(client.get(f"/v1/sessions/{sid}").json()["turns"]) == 2


class Flaky(Conversation):
    """Fails in chosen ways: mid-stream, and with a conflicting writer."""

    def stream(self, session_id: str, message: str, *, request_id: str | None = None) -> Iterator[ChatEvent]:
        yield ChatEvent(event="preferences", data={"preferences": {}})
        if message == "raise":
            raise EngineUnavailableError("the LLM server went away", hint="restart it")
        yield ChatEvent(event="error", data={"type": "SessionConflictError", "message": "changed", "hint": "resend"})

    def send_many(self, messages: Any, *, request_ids: Any = None) -> list[ChatReply | RecagentError]:
        return [SessionConflictError("another writer won", hint="send it again") for _ in messages]


def test_errors_after_the_stream_started_are_error_events(base_settings: Settings, client: TestClient) -> None:
    state = client.app.state.recagent  # type: ignore[attr-defined]
    flaky = Flaky(state.recommender, state.sessions, base_settings)
    app = create_app(base_settings, recommender=state.recommender, conversation=flaky)
    with TestClient(app) as other:
        sid = new_session(other)
        url = f"/v1/sessions/{sid}/messages?stream=true"
        events = parse_sse(other.post(url, json={"message": "raise"}).text)
        assert [name for name, _ in events] == ["preferences", "error"]
        assert events[1][1]["code"] == 503 and events[1][1]["type"] == "service_unavailable"
        assert events[1][1]["hint"] == "restart it"
        events = parse_sse(other.post(url, json={"message": "other"}).text)
        assert events[-1] == ("error", {"message": "changed", "type": "conflict_error", "code": 409, "hint": "resend",
                                        "request_id": events[-1][1]["request_id"]})  # fmt: skip
        resp = other.post(f"/v1/sessions/{sid}/messages", json={"message": "hello"})
        assert_envelope(resp, 409, "conflict_error", contains="another writer won")


# ------------------------------------------------------------------------------------------------ live streaming
class GatedStream(FakeEngine):
    """Streams the chat reply word by word; before each next word it waits until the HTTP client has received the
    previous delta. A server that buffered the event stream would make every wait time out."""

    def __init__(self) -> None:
        super().__init__(generate_fn=self._answer)
        self.received = threading.Semaphore(0)
        self.waits: list[bool] = []

    @staticmethod
    def _answer(req: Any, schema: Any) -> str:
        users = [m.content for m in req.messages or () if m.role == "user"]  # the turn answered: the last one
        titles = re.findall(r"^title: (.*)$", users[-1] if users else text_of(req), flags=re.MULTILINE)
        return "You could enjoy " + ", ".join(titles) + "." if "friendly recommendation" in text_of(req) else "{}"

    def stream(self, request: Any, **kw: Any) -> Iterator[str]:
        text = self._answer(LLMRequest.of(request), None)
        for i, word in enumerate(re.findall(r"\S+\s*", text)):
            if i:
                self.waits.append(self.received.acquire(timeout=20))
            yield word


@contextlib.contextmanager
def _live(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.slow
def test_sse_deltas_reach_the_client_while_the_reply_is_decoded(
    base_settings: Settings, hash_embedder: Any, interactions: Any
) -> None:
    settings = base_settings.model_copy(update={"chat_reply": "llm"})
    engine = GatedStream()
    rec = Recommender(settings, engine=engine, embedder=hash_embedder, interactions=interactions)
    events: list[tuple[str, Any]] = []
    with _live(create_app(settings, recommender=rec)) as url, httpx.Client(base_url=url, timeout=60) as http:
        sid = http.post("/v1/sessions").json()["session_id"]
        body = {"message": "a scary movie from the 80s"}
        with http.stream("POST", f"/v1/sessions/{sid}/messages?stream=true", json=body) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            name = "message"
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    name = line[len("event:") :].strip()
                elif line.startswith("data:"):
                    events.append((name, json.loads(line[len("data:") :])))
                    if name == "delta":
                        engine.received.release()  # the engine may decode the next word now
    names = [n for n, _ in events]
    assert names[:2] == ["preferences", "items"] and names[-1] == "done" and "replace" not in names
    deltas = [d["text"] for n, d in events if n == "delta"]
    reply = ChatReply.model_validate(events[-1][1])
    assert len(deltas) > 3 and "".join(deltas) == reply.reply and reply.reply.startswith("You could enjoy")
    assert engine.waits and all(engine.waits)  # every next word waited for the client to see the previous one
