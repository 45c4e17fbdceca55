"""Security basics: a token is required beyond loopback, tokens are compared in constant time, CORS is off by
default, request bodies / messages / sessions / queues are bounded, and no secret (server token, database password,
LLM API key) reaches a log, an answer or `recagent config`."""

from __future__ import annotations

import hmac
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from rich.console import Console

from agent.errors import ConfigError
from agent.server import middleware
from agent.server.run import check_server_bind as check_bind
from agent.settings import load_settings
from recagent.render import print_settings

from fakes import FakeEngine
from pgserver import PgServer
from reliability_kit import Checks, FakeLLMServer, MakeApp, raises, served_env
from server_helpers import ServeProcess, assert_envelope

TOKEN = "tok-7f3a9c2e51d84b06a1e2"
DB_PASSWORD = "pw-1b9e44c0d7a2"
LLM_KEY = "key-55d0c8e3a9f1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROTECTED = [
    ("POST", "/v1/recommend", {"query": "comedy", "k": 2}),
    ("POST", "/v1/sessions", {}),
    ("GET", "/v1/sessions/0123456789abcdef0123456789abcdef", None),
    ("POST", "/v1/sessions/0123456789abcdef0123456789abcdef/messages", {"message": "hi"}),
    ("GET", "/v1/items/1", None),
]
check = Checks("security", Path(__file__).stem)


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    check.record()  # failures: failed checks, or failed tests of this module when more


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "192.168.1.10", "10.0.0.2", "example.com", "host.local"])
def test_a_token_is_required_beyond_loopback(host: str) -> None:
    settings = load_settings()
    refused = raises(lambda: check_bind(host, settings), ConfigError, "without a token")
    check(isinstance(refused, ConfigError) and "RECAGENT_SERVER_TOKEN" in refused.hint, f"{host}: refused, hint")
    check_bind(host, settings.model_copy(update={"server_token": SecretStr(TOKEN)}))  # raises if refused
    short = settings.model_copy(update={"server_token": SecretStr("short")})
    check(raises(lambda: check_bind(host, short), ConfigError, "shorter than 8"), f"{host}: short token refused")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_needs_no_token(host: str) -> None:
    check(raises(lambda: check_bind(host, load_settings()), ConfigError) is None, f"{host} needs no token")


def test_every_v1_route_needs_the_token_compared_in_constant_time(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(middleware.hmac, "compare_digest", spy)
    client = make_app(engine=FakeEngine(), server_token=SecretStr(TOKEN))
    for method, path, body in PROTECTED:
        for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN[:-1]}"}):  # fmt: skip
            resp = client.request(method, path, json=body, headers=headers)
            assert_envelope(resp, 401, "authentication_error")
            check(TOKEN not in resp.text, "the token is never echoed")
        ok = client.request(method, path, json=body, headers=AUTH)
        check(ok.status_code != 401, f"{path} with the token")
    check(bool(seen) and all(b == TOKEN.encode() for _, b in seen), "tokens go through hmac.compare_digest")
    # compare_digest alone decides: forced to say "equal", a wrong token passes; forced to say "different", the
    # right one is refused (an extra `==` on the token would break one of the two)
    for verdict, headers, expected in ((True, {"Authorization": "Bearer wrong-token-123"}, 200),
                                       (False, AUTH, 401)):  # fmt: skip
        monkeypatch.setattr(middleware.hmac, "compare_digest", lambda a, b, v=verdict: v)
        resp = client.post("/v1/recommend", json={"query": "comedy", "k": 2}, headers=headers)
        check(resp.status_code == expected, f"compare_digest={verdict}: {resp.status_code}, expected {expected}")


def test_healthz_without_the_token_shows_statuses_only(make_app: MakeApp) -> None:
    client = make_app(engine=FakeEngine(), server_token=SecretStr(TOKEN))
    open_view = client.get("/healthz").json()
    check(open_view["status"] == "ok" and open_view["store"]["status"] == "ok", "statuses are public")
    check(open_view["store"].get("location") is None and open_view["engine"].get("model") is None, "no details")
    full = client.get("/healthz", headers=AUTH).json()
    check(full["store"]["location"] and full["engine"]["model"] == "fake-model", "details with the token")


def test_cors_is_off_by_default(make_app: MakeApp) -> None:
    client = make_app(engine=FakeEngine())
    preflight = client.options(
        "/v1/recommend",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    check("access-control-allow-origin" not in preflight.headers, "no CORS preflight answer")
    for method, path, body in PROTECTED[:2]:
        resp = client.request(method, path, json=body, headers={"Origin": "https://evil.example"})
        check("access-control-allow-origin" not in resp.headers, f"no ACAO on {path}")
        check("access-control-allow-credentials" not in resp.headers, "no credentials")


def test_request_size_message_size_session_count_and_queue_are_bounded(make_app: MakeApp) -> None:
    client = make_app(engine=FakeEngine(), server_max_body_bytes=4096, max_sessions=3, max_message_chars=50)
    big = {"query": "x" * 10_000}
    err = assert_envelope(client.post("/v1/recommend", json=big), 413, "request_too_large", contains="4096")
    check(bool(err["hint"]), "declared body limit with a hint")

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams in
        yield b'{"query": "'
        for _ in range(100):
            yield b"y" * 100
        yield b'"}'

    resp = client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    check(resp.status_code == 413, f"streamed body over the limit: {resp.status_code}")
    assert_envelope(resp, 413, "request_too_large")
    sids = [client.post("/v1/sessions").json()["session_id"] for _ in range(3)]
    err = assert_envelope(client.post("/v1/sessions"), 503, "service_unavailable", contains="full")
    check("RECAGENT_MAX_SESSIONS" in (err["hint"] or ""), "session limit with a hint")
    err = assert_envelope(client.post(f"/v1/sessions/{sids[0]}/messages", json={"message": "m" * 51}), 400,
                          "invalid_request_error", contains="limit is 50")  # fmt: skip
    check(bool(err["hint"]), "message limit with a hint")

    slow = make_app(engine=FakeEngine(delay_s=1.5), server_max_pending=1, server_batch_max=1)
    codes: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: codes.append(slow.post("/v1/recommend", json={"query": "q", "k": 2}).status_code)
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    check(set(codes) <= {200, 503} and 503 in codes and 200 in codes, f"queue bounded: {codes}")


def test_recagent_config_masks_secrets(tmp_path: Path) -> None:
    settings = load_settings(
        server_token=SecretStr(TOKEN),
        llm_api_key=LLM_KEY,
        session_db_url=f"postgresql://recagent:{DB_PASSWORD}@db.internal:5432/sessions",
        chroma_url=f"http://admin:{DB_PASSWORD}@chroma.internal:8000",
        judge_server_url=f"http://judge:{DB_PASSWORD}@judge.internal:8000/v1",
        judge_api_key=SecretStr(LLM_KEY),
    )
    out = io.StringIO()
    print_settings(settings, Console(file=out, width=400))
    text = out.getvalue()
    check("db.internal" in text, "the URL is shown")
    for secret in (TOKEN, LLM_KEY, DB_PASSWORD):
        check(secret not in text, f"{secret} leaked by `recagent config`")


def test_credentials_in_service_urls_are_not_shown(make_app: MakeApp) -> None:
    """An LLM server URL with user info (http://user:password@host) never shows its password in an answer (the
    fallback reason, /healthz) or the engine description."""
    url = f"http://svc:{DB_PASSWORD}@127.0.0.1:9/v1"
    client = make_app(llm_server_url=url, llm_timeout_s=1, llm_served_model_name="m", server_token=SecretStr(TOKEN))
    rec = client.post("/v1/recommend", json={"query": "comedy", "k": 2}, headers=AUTH)
    check(rec.status_code == 200 and "unreachable" in rec.json()["fallback_reason"], "the fault happened")
    health = client.get("/healthz", headers=AUTH)
    for text in (rec.text, health.text):
        check(DB_PASSWORD not in text and "svc:***@" in text, "the password is masked")


# ------------------------------------------------------------------------------------------------ a real server
@pytest.mark.slow
def test_no_secrets_in_the_logs_of_a_real_server(served_home: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with PgServer() as pg, FakeLLMServer() as llm:
        db_url = pg.url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@")
        env = served_env(served_home, llm.url, RECAGENT_SERVER_TOKEN=TOKEN, RECAGENT_SESSION_DB_URL=db_url,
                         RECAGENT_LLM_API_KEY=LLM_KEY, RECAGENT_LLM_RETRY_AFTER_S="0")  # fmt: skip
        answers = []
        with ServeProcess(env, log, args=["--log-level", "debug"]) as server, \
                httpx.Client(base_url=server.url, timeout=120) as http:  # fmt: skip
            answers.append(http.get("/healthz"))
            answers.append(http.get("/healthz", headers=AUTH))
            answers.append(http.post("/v1/recommend", json={"query": "space", "k": 2}))  # no token
            answers.append(
                http.post(
                    "/v1/recommend", json={"query": "space", "k": 2}, headers={"Authorization": "Bearer bad-guess-1"}
                )
            )
            sid = http.post("/v1/sessions", headers=AUTH).json()["session_id"]
            answers.append(
                http.post(f"/v1/sessions/{sid}/messages", json={"message": "a space adventure"}, headers=AUTH)
            )
            llm.mode = "http500"  # the LLM fails: fallback, logged with the request id
            answers.append(http.post("/v1/recommend", json={"query": "space", "k": 2}, headers=AUTH))
            answers.append(http.post("/v1/sessions/nope/messages", json={"message": "x"}, headers=AUTH))
            llm.mode = "ok"
            check(answers[-2].json()["fallback_reason"] is not None, "the LLM fault was injected")
        text = log.read_text(errors="replace")
    check("answered in retrieval order" in text, "the server did log (debug level)")
    bodies = "\n".join(a.text for a in answers)
    for secret in (TOKEN, DB_PASSWORD, LLM_KEY):
        check(secret not in text, f"secret {secret[:4]}... in the server log")
        check(secret not in bodies, f"secret {secret[:4]}... in an answer")
