"""`recagent serve` as a real process on the tiny random model (in-process vLLM), a real embedder and Chroma store,
and a SQLite session database: recommend and chat over HTTP, then kill the server and continue on a new one."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.chat.conversation import ChatReply
from agent.pipeline import Recommendation
from agent.settings import load_settings
from retrieval.ingest import ingest

from server_helpers import ServeProcess, parse_sse, tiny_serve_env
from testkit import ROOT

COLLECTION = "serve-test"


@pytest.fixture(scope="module")
def real_home(ml_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 300-movie sample embedded by the bundled model (what a served process loads)."""
    home = tmp_path_factory.mktemp("serve-home")
    settings = load_settings(home=home)
    report = ingest(ml_sample, store_config=settings.store_config(), embed_config=settings.embed_config(progress=False),
                    collection=COLLECTION)  # fmt: skip
    assert report.accepted == 300
    return home


@pytest.fixture(scope="module")
def serve_env(real_home: Path, ml_sample: Path, tiny_model_dir: Path) -> dict[str, str]:
    return tiny_serve_env(
        real_home,
        COLLECTION,
        tiny_model_dir,
        RECAGENT_INTERACTIONS=str(ml_sample / "ratings.csv"),
        RECAGENT_SESSION_DB_URL=str(real_home / "sessions.sqlite3"),
    )


@pytest.fixture(scope="module")
def server(serve_env: dict[str, str], real_home: Path) -> Iterator[ServeProcess]:
    with ServeProcess(serve_env, real_home / "serve-1.log") as proc:
        yield proc


def test_refuses_an_open_bind_without_a_token() -> None:
    out = subprocess.run([sys.executable, "-m", "recagent", "serve", "--host", "0.0.0.0"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})  # fmt: skip
    assert out.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a token" in out.stderr and "RECAGENT_SERVER_TOKEN" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_recommend_and_chat_over_http(server: ServeProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=300) as http:
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["engine"]["backend"] == "vllm"
        assert health["store"]["items"] == 300
        resp = http.post("/v1/recommend", json={"query": "a funny animated movie for kids", "k": 4})
        assert resp.status_code == 200, resp.text
        rec = Recommendation.model_validate(resp.json())
        assert len(rec.items) == 4 and all(i.title and i.justification for i in rec.items)
        assert rec.model and "tiny" in rec.model  # the real engine ranked (or fell back with a reason)

        sid = http.post("/v1/sessions", json={"user_id": "1"}).json()["session_id"]
        turn = http.post(f"/v1/sessions/{sid}/messages", json={"message": "a funny animated movie for kids"})
        assert turn.status_code == 200, turn.text
        reply = ChatReply.model_validate(turn.json())
        assert reply.turn_id == 2 and reply.reply
        streamed = http.post(f"/v1/sessions/{sid}/messages?stream=true", json={"message": "something older please"})
        events = parse_sse(streamed.text)
        assert events[-1][0] == "done", events
        assert ChatReply.model_validate(events[-1][1]).turn_id == 4
        assert len(http.get(f"/v1/sessions/{sid}").json()["turns"]) == 4
        item = rec.items[0].item_id
        assert http.get(f"/v1/items/{item}").json()["title"] == rec.items[0].title


@pytest.mark.slow
def test_a_killed_server_loses_no_acknowledged_turn(
    server: ServeProcess, serve_env: dict[str, str], real_home: Path
) -> None:
    with httpx.Client(base_url=server.url, timeout=300) as http:
        sid = http.post("/v1/sessions").json()["session_id"]
        first = http.post(f"/v1/sessions/{sid}/messages", json={"message": "a scary movie, nothing before 1990"})
        assert first.status_code == 200, first.text
        before = http.get(f"/v1/sessions/{sid}").json()
    server.stop(kill=True)  # a crash: no graceful shutdown
    again = ServeProcess(serve_env, real_home / "serve-2.log")
    with again, httpx.Client(base_url=again.url, timeout=300) as http:
        after = http.get(f"/v1/sessions/{sid}").json()
        assert after == before  # every acknowledged turn and the state survived
        second = http.post(f"/v1/sessions/{sid}/messages", json={"message": "more like the first one"})
        assert second.status_code == 200, second.text
        assert second.json()["turn_id"] == 4
        state = http.get(f"/v1/sessions/{sid}").json()
        assert [t["turn_id"] for t in state["turns"]] == [1, 2, 3, 4]
        year_min = before["preferences"]["constraints"]["year_min"]
        assert state["preferences"]["constraints"]["year_min"] == year_min  # a constraint holds across the restart
