"""Engine faults: an LLM server that is slow, answers garbage, truncated or malformed output, errors or drops the
connection; an in-process engine that raises or hangs; an engine that cannot start and comes back; a real
`vllm serve` killed (kill -9) while a request is in flight and restarted on the same port.

Every request still gets an answer (HTTP 200, retrieval order, ``fallback_reason`` set), the server stays up
(``/healthz`` answers), the failure is logged under the request id, and the engine is used again once it is back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import agent.llm
from agent.errors import EngineError, EngineUnavailableError, StructuredOutputError
from agent.llm.vllm_serve import serve_command, server_env, wait_healthy
from agent.pipeline import Recommendation

from fakes import FakeEngine
from reliability_kit import FakeLLMServer, MakeApp, kill_tree, record, unread_bytes, wait_for
from testkit import free_port, tiny_settings

QUERY = {"query": "a funny animated movie for kids", "k": 4}
SMALL = {"n_candidates": 6}  # prompts that fit the tiny model's context (its toy tokenizer needs many tokens)


def recommend(client: TestClient, rid: str, **body: Any) -> Recommendation:
    resp = client.post("/v1/recommend", json={**QUERY, **body}, headers={"X-Request-ID": rid})
    assert resp.status_code == 200, resp.text
    rec = Recommendation.model_validate(resp.json())
    assert len(rec.items) == QUERY["k"] and {i.item_id for i in rec.items} <= set(rec.candidate_ids)
    assert all(i.title and i.justification for i in rec.items)
    return rec


def chat_turn(client: TestClient, rid: str) -> dict[str, Any]:
    sid = client.post("/v1/sessions").json()["session_id"]
    resp = client.post(f"/v1/sessions/{sid}/messages", json={"message": "a thriller with a twist"},
                       headers={"X-Request-ID": rid})  # fmt: skip
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["reply"] and body["request_id"] == rid
    return body


def assert_up(client: TestClient) -> dict[str, Any]:
    resp = client.get("/healthz")
    assert resp.status_code == 200, resp.text
    health: dict[str, Any] = resp.json()
    assert health["status"] in ("ok", "degraded") and health["store"]["status"] == "ok"
    return health


def logged(caplog: pytest.LogCaptureFixture, rid: str) -> bool:
    return any(rid in r.getMessage() and "fallback" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------ LLM server faults
COMMON_FAULTS = ["slow", "http500", "garbage", "bad_shape", "truncated_body", "drop"]
SERVER_FAULTS = {
    "options": [*COMMON_FAULTS, "no_logprobs"],  # option scoring reads log-probabilities
    "listwise": [*COMMON_FAULTS, "cut_json"],  # listwise ranking reads a JSON completion
}


@pytest.mark.parametrize("strategy", ["options", "listwise"])
def test_llm_server_faults_are_answered_with_a_flagged_fallback(
    make_app: MakeApp, fake_llm: FakeLLMServer, caplog: pytest.LogCaptureFixture, strategy: str
) -> None:
    caplog.set_level(logging.WARNING)
    fake_llm.slow_s = 1.5
    client = make_app(llm_server_url=fake_llm.url, llm_timeout_s=0.5, rerank_strategy=strategy)
    healthy = recommend(client, f"warm-{strategy}")
    assert healthy.fallback_reason is None and healthy.model == fake_llm.model  # the LLM ranked
    survived = 0
    for mode in SERVER_FAULTS[strategy]:
        fake_llm.mode = mode
        rid = f"{strategy}-{mode}"
        rec = recommend(client, rid)
        assert rec.fallback_reason, f"{mode}: the fault went unnoticed"
        assert rec.fallback_reason.split(":")[0] in ("engine_error", "invalid_output", "timeout", "empty"), rec
        assert logged(caplog, rid), f"{mode}: no log line with the request id"
        chat_turn(client, f"{rid}-chat")
        assert_up(client)
        survived += 1
    fake_llm.mode = "ok"
    again = recommend(client, f"back-{strategy}")
    assert again.fallback_reason is None and again.model == fake_llm.model  # used again once it behaves
    record("engine_faults", faults_injected=len(SERVER_FAULTS[strategy]), faults_survived=survived)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA fell over"),
        EngineError("the engine core died"),
        EngineUnavailableError("vLLM is not installed"),
        StructuredOutputError("not JSON", raw="{"),
        MemoryError("out of memory"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_in_process_engine_that_raises(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    caplog.set_level(logging.WARNING)
    client = make_app(engine=FakeEngine(error=error))
    rid = f"raise-{type(error).__name__}"
    rec = recommend(client, rid)
    assert rec.fallback_reason and rec.fallback_reason.split(":")[0] in ("engine_error", "invalid_output")
    assert logged(caplog, rid)
    chat_turn(client, rid + "-chat")
    assert_up(client)
    record("engine_faults", faults_injected=1, faults_survived=1)


def test_an_in_process_engine_that_hangs_times_out(make_app: MakeApp) -> None:
    client = make_app(engine=FakeEngine(delay_s=3.0), rerank_timeout_s=0.5)
    rec = recommend(client, "hang")
    assert rec.fallback_reason == "timeout"
    assert_up(client)
    record("engine_faults", faults_injected=1, faults_survived=1)


def test_a_failed_engine_start_is_retried_after_the_cool_down(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect: the first start failure used to be cached forever."""
    caplog.set_level(logging.INFO)
    failures: list[Exception] = [EngineUnavailableError("LLM server unreachable"), RuntimeError("driver crashed")]
    calls: list[int] = []
    engine = FakeEngine()

    def create_engine(settings: Any) -> FakeEngine:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return engine

    monkeypatch.setattr(agent.llm, "create_engine", create_engine)
    client = make_app(llm_server_url="http://127.0.0.1:9/v1", llm_retry_after_s=30)
    rec_state = client.app.state.recagent.recommender  # type: ignore[attr-defined]
    first = recommend(client, "start-1")
    assert first.fallback_reason == "engine_error: LLM server unreachable"
    health = client.get("/healthz").json()
    assert health["status"] == "degraded" and health["engine"]["status"] == "unavailable"
    assert health["engine"]["attempts"] == 1 and 0 < health["engine"]["retry_in_s"] <= 30
    assert "next start attempt" in health["engine"]["detail"]
    recommend(client, "start-1b")
    assert len(calls) == 1  # within the cool-down: no new attempt, still an answer
    rec_state._engine_failed_at -= 31  # the cool-down has passed
    second = recommend(client, "start-2")
    assert second.fallback_reason == "engine_error: RuntimeError: driver crashed" and len(calls) == 2
    rec_state._engine_failed_at -= 31
    third = recommend(client, "start-3")
    assert third.fallback_reason is None and third.model == engine.model_id and len(calls) == 3
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["engine"]["attempts"] == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("attempt 1" in m for m in messages) and any("attempt 2" in m for m in messages)
    assert any("started on attempt 3" in m for m in messages)
    record("engine_faults", faults_injected=2, faults_survived=2)


def test_an_llm_server_that_is_down_at_start_is_picked_up_when_it_comes_back(make_app: MakeApp) -> None:
    port = free_port()
    client = make_app(llm_server_url=f"http://127.0.0.1:{port}/v1", llm_timeout_s=2)
    down = recommend(client, "down")
    assert down.fallback_reason and "unreachable" in down.fallback_reason
    assert assert_up(client)["engine"]["status"] == "unavailable"
    with FakeLLMServer(port=port) as server:
        back = recommend(client, "back")
        assert back.fallback_reason is None and back.model == server.model
        assert assert_up(client)["engine"]["status"] == "ok"
    record("engine_faults", faults_injected=1, faults_survived=1)


# ------------------------------------------------------------------------------------------------ real vllm serve
class VLLMServe:
    """`vllm serve` (tiny model) in its own process group on a fixed port, so that it can be killed and
    restarted on the same port."""

    def __init__(self, model: Path, port: int, log: Path) -> None:
        self.settings = tiny_settings(model, llm_served_model_name="tiny", llm_memory_fraction=None)
        self.settings = self.settings.model_copy(update={"llm_max_model_len": 2048})
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        env = {**server_env(self.settings), "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(serve_command(self.settings, port=self.port), stdout=out,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip
        wait_healthy(self.url, self.proc, timeout_s=600)

    def kill9(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        kill_tree(self.proc.pid)

    def freeze(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill9()


@pytest.mark.slow
def test_vllm_serve_killed_mid_request_then_restarted(
    make_app: MakeApp, tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server = VLLMServe(tiny_model_dir, free_port(), tmp_path / "vllm.log")
    client = make_app(llm_server_url=server.url, llm_timeout_s=120, llm_retry_after_s=0)
    faults = survived = 0
    try:
        # 1. not started yet: answers fall back, /healthz says why
        down = recommend(client, "vllm-down", **SMALL)
        faults += 1
        assert down.fallback_reason and "unreachable" in down.fallback_reason
        assert assert_up(client)["engine"]["status"] == "unavailable"
        survived += 1
        # 2. started: the engine is picked up (no restart of the app)
        server.start()
        served = recommend(client, "vllm-up", **SMALL)
        assert served.fallback_reason is None and served.model == "tiny", served.fallback_reason
        # 3. kill -9 while a request is in flight (frozen first, so the request is surely inside the server)
        server.freeze()
        box: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: box.setdefault("rec", recommend(client, "vllm-killed", **SMALL)))
        worker.start()
        wait_for(lambda: unread_bytes(server.port) > 0, 60, what="the request to reach the frozen server")
        server.kill9()
        faults += 1
        worker.join(120)
        killed = box["rec"]
        assert killed.fallback_reason and killed.fallback_reason.startswith("engine_error"), killed.fallback_reason
        assert logged(caplog, "vllm-killed")
        assert assert_up(client)["engine"]["replicas"][server.url].startswith("unreachable")
        survived += 1
        # 4. restarted on the same port: the next request is served by the LLM again
        server.start()
        again = recommend(client, "vllm-restarted", **SMALL)
        assert again.fallback_reason is None and again.model == "tiny", again.fallback_reason
        assert assert_up(client)["status"] == "ok"
    finally:
        server.stop()
    record("engine_faults", faults_injected=faults, faults_survived=survived)


def test_the_fake_llm_server_is_well_formed(fake_llm: FakeLLMServer) -> None:
    """The fault injector itself: in `ok` mode it answers like an OpenAI-compatible server."""
    body = httpx.post(f"{fake_llm.url}/completions", json={"model": "m", "prompt": "hi", "logprobs": 3},
                      timeout=5).json()  # fmt: skip
    assert body["choices"][0]["logprobs"]["top_logprobs"][0]
    assert httpx.get(f"{fake_llm.url}/models", timeout=5).json()["data"][0]["id"] == fake_llm.model


class DyingEngine(FakeEngine):
    """A scripted in-process engine whose core can die (like vLLM's after a crash: every call fails from then on)."""

    def __init__(self) -> None:
        super().__init__()
        self.dead = False
        self.closed = False

    def is_dead(self) -> bool:
        return self.dead

    def close(self) -> None:
        self.closed = True

    def score_options(self, requests: Any, labels: Any) -> Any:
        if self.dead:
            raise EngineError("EngineDeadError: EngineCore encountered an issue")
        return super().score_options(requests, labels)


def test_a_dead_in_process_engine_is_restarted(make_app: MakeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by this suite: a crashed vLLM engine core ("CPU Generator does not use offset") left the server
    answering in fallback for good. The Recommender now sees the dead engine, closes it and starts a new one."""
    first, second = DyingEngine(), DyingEngine()
    monkeypatch.setattr(agent.llm, "create_engine", lambda settings: second)
    client = make_app(engine=first)
    assert recommend(client, "alive").fallback_reason is None and first.calls
    first.dead = True
    again = recommend(client, "after-death")
    assert again.fallback_reason is None and second.calls and first.closed  # served by the new engine
    assert client.get("/healthz").json()["engine"]["status"] == "ok"
    record("engine_faults", faults_injected=1, faults_survived=1)
