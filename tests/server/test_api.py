"""The HTTP API through FastAPI's TestClient: every endpoint, the error envelope, auth, body limits, request ids,
batching. Scripted engine, real embedded Chroma store, real SQLite session database."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from agent.errors import ConfigError, EngineUnavailableError
from agent.network import is_loopback
from agent.pipeline import Recommendation, Recommender, RecommendRequest
from agent.server.run import check_server_bind as check_bind

from fakes import FakeEngine
from server_helpers import assert_envelope

MakeClient = Callable[..., TestClient]

TOKEN = "s3cret-token-for-tests"


# ------------------------------------------------------------------------------------------------ recommend
def test_recommend_returns_justified_items_and_a_request_id(client: TestClient) -> None:
    resp = client.post("/v1/recommend", json={"query": "funny animated movie for kids", "k": 4})
    assert resp.status_code == 200, resp.text
    rec = Recommendation.model_validate(resp.json())
    assert len(rec.items) == 4 and len({i.item_id for i in rec.items}) == 4
    assert all(i.title and i.justification for i in rec.items)
    assert {i.item_id for i in rec.items} <= set(rec.candidate_ids)
    assert len(resp.headers["x-request-id"]) == 32


def test_recommend_for_a_known_user_excludes_seen_items(client: TestClient) -> None:
    resp = client.post("/v1/recommend", json={"user_id": "1", "k": 5})
    assert resp.status_code == 200, resp.text
    assert resp.json()["history_used"] > 0


def test_unknown_user_and_items_come_back_as_warnings(client: TestClient) -> None:
    resp = client.post("/v1/recommend", json={"user_id": "nobody-here", "liked": ["nope123"], "k": 3})
    assert resp.status_code == 200, resp.text
    warnings = resp.json()["warnings"]
    assert any("unknown user 'nobody-here'" in w for w in warnings)
    assert any("unknown item id(s) 'nope123'" in w for w in warnings)


def test_request_id_is_echoed_when_sane_and_replaced_otherwise(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123.x"}).headers["x-request-id"] == "abc-123.x"
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"}).headers["x-request-id"]
    assert replaced != "bad id <script>" and len(replaced) == 32


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"k": 0}, "k:"),
        ({"query": "x", "unknown_field": 1}, "unknown_field"),
        ({"query": "x", "constraints": {"year_min": 2000, "year_max": 1990}}, "constraints"),
        ([1, 2, 3], "valid dictionary"),
        ({"query": "x", "source_weights": {"nosuch": 1}}, "unknown candidate source(s) 'nosuch'"),  # as settings,
        ({"query": "x", "source_weights": {"semantic": -1}}, "weights must be numbers >= 0"),  # --source, --variant
    ],
)
def test_invalid_bodies_are_422_envelopes(client: TestClient, body: Any, fragment: str) -> None:
    err = assert_envelope(client.post("/v1/recommend", json=body), 422, "invalid_request_error", contains=fragment)
    assert err["hint"] and "/docs" in err["hint"]


def test_malformed_json_is_a_422_envelope(client: TestClient) -> None:
    resp = client.post("/v1/recommend", content=b'{"query": "x",,}', headers={"content-type": "application/json"})
    assert_envelope(resp, 422, "invalid_request_error", contains="json")


def test_bad_input_caught_by_the_pipeline_is_a_400_with_a_hint(make_client: MakeClient) -> None:
    client = make_client(with_interactions=False)  # no interaction log: a user id alone cannot be served
    err = assert_envelope(client.post("/v1/recommend", json={"user_id": "1"}), 400, "invalid_request_error",
                          contains="no history")  # fmt: skip
    assert "RECAGENT_INTERACTIONS" in err["hint"]


def test_oversized_bodies_are_413_declared_or_chunked(make_client: MakeClient) -> None:
    client = make_client(server_max_body_bytes=2048)
    big = {"query": "x", "liked": [f"id-{i}" for i in range(500)]}
    err = assert_envelope(client.post("/v1/recommend", json=big), 413, "request_too_large", contains="2048 bytes")
    assert "RECAGENT_SERVER_MAX_BODY_BYTES" in err["hint"]

    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 512):
            yield payload[i : i + 512]

    resp = client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in resp.request.headers
    assert_envelope(resp, 413, "request_too_large")
    assert client.post("/v1/recommend", json={"query": "comedy", "k": 2}).status_code == 200  # small ones pass


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    assert_envelope(client.get("/v1/nothing-here"), 404, "not_found_error", contains="/v1/nothing-here")
    assert_envelope(client.get("/v1/recommend"), 405, "invalid_request_error", contains="GET")
    assert_envelope(client.get("/static/missing.js"), 404, "not_found_error")


def test_engine_unavailable_is_503_and_unexpected_errors_are_500_without_traceback(make_client: MakeClient) -> None:
    class Down(Recommender):
        def recommend_many(self, requests: Any) -> list[Recommendation]:
            raise EngineUnavailableError("the LLM server is down", hint="start it")

    class Broken(Recommender):
        def recommend_many(self, requests: Any) -> list[Recommendation]:
            raise ZeroDivisionError("secret internal detail")

    err = assert_envelope(make_client(recommender_cls=Down).post("/v1/recommend", json={"query": "x"}), 503,
                          "service_unavailable", contains="LLM server is down")  # fmt: skip
    assert err["hint"] == "start it"
    resp = make_client(recommender_cls=Broken).post("/v1/recommend", json={"query": "x"})
    err = assert_envelope(resp, 500, "server_error", contains="internal server error")
    assert err["request_id"] in err["message"]
    assert "secret internal detail" not in resp.text and "ZeroDivisionError" not in resp.text


def test_concurrent_requests_are_batched_into_one_engine(make_client: MakeClient) -> None:
    engine = FakeEngine(delay_s=0.3)
    client = make_client(engine=engine, server_batch_wait_ms=50)
    start = threading.Barrier(6)
    results: list[int] = []

    def call(i: int) -> None:
        start.wait()
        results.append(client.post("/v1/recommend", json={"query": f"adventure movie {i}", "k": 3}).status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 6
    stats = client.app.state.recagent.recommend_batcher.stats  # type: ignore[attr-defined]
    assert stats.items == 6 and stats.largest >= 2 and stats.batches < 6
    score_calls = [c for c in engine.calls if c.method == "score_options"]
    assert 1 <= len(score_calls) < 6  # engine calls carried several users' prompts at once


def test_a_bad_request_in_a_batch_fails_alone(make_client: MakeClient) -> None:
    class Picky(Recommender):
        def recommend_many(self, requests: Any) -> list[Recommendation]:
            if any(r.query == "bad" for r in requests):
                from agent.errors import InputError

                raise InputError("this request is bad", hint="do not send 'bad'")
            return super().recommend_many(requests)

    client = make_client(recommender_cls=Picky, engine=FakeEngine(delay_s=0.2), server_batch_wait_ms=100)
    out: dict[str, int] = {}
    start = threading.Barrier(3)

    def call(q: str) -> None:
        start.wait()
        out[q] = client.post("/v1/recommend", json={"query": q, "k": 2}).status_code

    threads = [threading.Thread(target=call, args=(q,)) for q in ("good one", "bad", "good two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {"good one": 200, "bad": 400, "good two": 200}


# ------------------------------------------------------------------------------------------------ items, health
def test_items_endpoint(client: TestClient) -> None:
    rec = client.post("/v1/recommend", json={"query": "space adventure", "k": 1}).json()
    item_id = rec["items"][0]["item_id"]
    resp = client.get(f"/v1/items/{item_id}")
    assert resp.status_code == 200
    assert resp.json()["id"] == item_id and resp.json()["title"] == rec["items"][0]["title"]
    assert_envelope(client.get("/v1/items/no-such-item"), 404, "not_found_error", contains="no-such-item")


def test_healthz_reports_engine_store_and_sessions(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    health = resp.json()
    assert health["status"] == "ok"
    assert health["engine"] == {"status": "ok", "detail": None, "backend": "fake", "model": "fake-model",
                                "replicas": {}, "attempts": 0, "retry_in_s": None}  # fmt: skip
    assert health["store"]["status"] == "ok" and health["store"]["items"] == 300
    assert health["sessions"]["status"] == "ok" and health["sessions"]["sessions"] == 0
    assert set(health["batchers"]) == {"recommend-batcher", "chat-batcher"}


def test_healthz_is_503_when_the_catalog_is_missing(make_client: MakeClient) -> None:
    client = make_client(collection="no-such-collection")
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json()["status"] == "unavailable" and "does not exist" in resp.json()["store"]["detail"]
    assert_envelope(client.post("/v1/recommend", json={"query": "x"}), 503, "service_unavailable",
                    contains="does not exist")  # fmt: skip


# ------------------------------------------------------------------------------------------------ auth, CORS
def test_auth_required_when_a_token_is_set(make_client: MakeClient) -> None:
    client = make_client(server_token=SecretStr(TOKEN))
    body = {"query": "comedy", "k": 2}
    resp = client.post("/v1/recommend", json=body)
    err = assert_envelope(resp, 401, "authentication_error", contains="missing bearer token")
    assert resp.headers["www-authenticate"] == "Bearer" and "Authorization: Bearer" in err["hint"]
    wrong = client.post("/v1/recommend", json=body, headers={"Authorization": "Bearer nope"})
    assert_envelope(wrong, 401, "authentication_error", contains="wrong bearer token")
    basic = client.post("/v1/recommend", json=body, headers={"Authorization": f"Basic {TOKEN}"})
    assert_envelope(basic, 401, "authentication_error", contains="Bearer TOKEN")
    # checked before the body is read: an unauthenticated client learns nothing about the body
    assert client.post("/v1/recommend", content=b"{{{", headers={"content-type": "application/json"}).status_code == 401
    assert client.get("/v1/sessions/whatever").status_code == 401
    ok = client.post("/v1/recommend", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    # open: the page, its assets, the docs and the health check (load balancers)
    for path in ("/", "/static/app.js", "/docs", "/openapi.json", "/healthz"):
        assert client.get(path).status_code == 200, path


def test_cors_is_off_by_default_and_configurable(make_client: MakeClient) -> None:
    origin = {"Origin": "https://app.example.com"}
    plain = make_client().get("/healthz", headers=origin)
    assert "access-control-allow-origin" not in plain.headers
    cors = make_client(server_cors_origins=["https://app.example.com"])
    assert cors.get("/healthz", headers=origin).headers["access-control-allow-origin"] == "https://app.example.com"
    preflight = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    pre = cors.options("/v1/recommend", headers=preflight)
    assert pre.status_code == 200 and "x-request-id" in pre.headers
    other = cors.get("/healthz", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers


def test_bind_check_requires_a_token_beyond_loopback(base_settings: Any) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.com")
    check_bind("127.0.0.1", base_settings)
    with pytest.raises(ConfigError, match=r"refusing to serve on 0\.0\.0\.0 without a token") as info:
        check_bind("0.0.0.0", base_settings)
    assert "RECAGENT_SERVER_TOKEN" in info.value.hint
    check_bind("0.0.0.0", base_settings.model_copy(update={"server_token": SecretStr(TOKEN)}))
    with pytest.raises(ConfigError, match="shorter than 8"):
        check_bind("0.0.0.0", base_settings.model_copy(update={"server_token": SecretStr("abc")}))


# ------------------------------------------------------------------------------------------------ docs and page
def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/sessions", "/v1/sessions/{session_id}", "/v1/sessions/{session_id}/messages",
            "/v1/items/{item_id}", "/healthz"} <= set(spec["paths"])  # fmt: skip
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert "ErrorResponse" in spec["components"]["schemas"]
    assert "swagger" in client.get("/docs").text.lower()


def test_chat_page_and_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", js.text)  # textContent only
    assert client.get("/static/style.css").status_code == 200


def test_recommend_request_model_is_the_pipeline_one() -> None:
    assert RecommendRequest.model_config.get("extra") == "forbid"
