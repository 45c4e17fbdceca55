"""Recommendations first, justifications after, end to end over the real embedded Chroma store: the pipeline's
``explain="later"`` path, the SSE variant of /v1/recommend, streamed chat turns (items, reply, then justification
events; ``ttft_s`` in the turn's timings) and `recagent recommend` printing the table before the justifications."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from agent.errors import EngineError
from agent.later import PENDING_FLAG
from agent.pipeline import Recommendation, Recommender, RecommendRequest
from agent.settings import Settings
from retrieval.interactions import Interactions

from fakes import FakeEngine, Taste, kind_of
from server_helpers import parse_sse
from testkit import HashEmbedder

MakeClient = Callable[..., TestClient]
LLM = {"explain_mode": "llm"}


class ExplainFails(FakeEngine):
    """Ranks (option scores) but fails every generation: the later justifications hit an engine error."""

    def generate(self, requests: Sequence[Any], **kw: Any) -> Any:
        if any(kind_of(r) == "explain" for r in map(_req, requests)):
            raise EngineError("the engine crashed while writing")
        return super().generate(requests, **kw)


def _req(r: Any) -> Any:
    from agent.llm.base import LLMRequest

    return LLMRequest.of(r)


def _recommender(settings: Settings, embedder: HashEmbedder, log: Interactions, engine: Any = None) -> Recommender:
    return Recommender(settings.model_copy(update=LLM), engine=engine or FakeEngine(Taste({}).generate),
                       embedder=embedder, interactions=log)  # fmt: skip


# ------------------------------------------------------------------------------------------------ pipeline
def test_later_then_justify_equals_justifying_at_once(
    base_settings: Settings, hash_embedder: HashEmbedder, interactions: Interactions
) -> None:
    rec = _recommender(base_settings, hash_embedder, interactions)
    req = RecommendRequest(user_id="1", k=4)
    now = rec.recommend(req)
    later = rec.recommend(req, explain="later")
    assert later.justifications_pending == 4 and [i.item_id for i in later.items] == [i.item_id for i in now.items]
    assert all(PENDING_FLAG in i.flags and i.justification_source == "template" for i in later.items)
    shown = [i.justification for i in later.items]
    rec.justify(later)
    assert later.justifications_pending == 0 and "justify_later" in later.timings_ms
    assert [i.justification for i in later.items] == [i.justification for i in now.items]
    assert [i.justification for i in later.items] != shown  # the LLM ones replaced the template reasons
    assert all(i.justification_source == "llm" and PENDING_FLAG not in i.flags for i in later.items)
    assert later.prompt_tokens == now.prompt_tokens
    assert [i.justification for i in later.rerank.items] == [i.justification for i in later.items]
    assert later.rerank.llm_calls == now.rerank.llm_calls and later.rerank.template_justifications == 0
    assert list(rec.justify_events(later)) == []  # nothing pending any more


# ------------------------------------------------------------------------------------------------ SSE recommend
def test_sse_recommend_sends_items_then_justifications_then_done(make_client: MakeClient) -> None:
    client = make_client(engine=FakeEngine(Taste({}).generate), **LLM)
    resp = client.post("/v1/recommend?stream=true", json={"query": "funny animated movie for kids", "k": 4})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(resp.text)
    assert [name for name, _ in events] == ["items"] + ["justification"] * 4 + ["done"]
    first = Recommendation.model_validate(events[0][1])
    assert first.justifications_pending == 4
    assert all(i.justification and PENDING_FLAG in i.flags for i in first.items)
    filled = [data for name, data in events if name == "justification"]
    assert [d["rank"] for d in filled] == [1, 2, 3, 4]
    assert [d["item_id"] for d in filled] == [i.item_id for i in first.items]
    assert all(d["justification_source"] == "llm" and d["grounded"] and d["error"] is None for d in filled)
    done = Recommendation.model_validate(events[-1][1])
    assert done.justifications_pending == 0
    assert [i.justification for i in done.items] == [d["justification"] for d in filled]


def test_sse_recommend_keeps_template_reasons_on_engine_errors(make_client: MakeClient) -> None:
    client = make_client(engine=ExplainFails(), **LLM)
    resp = client.post("/v1/recommend", json={"query": "a scary movie", "k": 3},
                       headers={"Accept": "text/event-stream"})  # fmt: skip
    events = parse_sse(resp.text)
    assert [name for name, _ in events] == ["items", "justification", "justification", "justification", "done"]
    shown = {i["item_id"]: i["justification"] for i in events[0][1]["items"]}
    for _, data in events[1:-1]:
        assert data["justification"] == shown[data["item_id"]]  # the template reason stays
        assert data["justification_source"] == "template" and "engine_error" in data["error"]


def test_sse_recommend_bad_input_is_a_plain_http_error(make_client: MakeClient) -> None:
    client = make_client(**LLM)
    resp = client.post("/v1/recommend?stream=true", json={"query": "x", "k": 0})
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("application/json")


def test_plain_recommend_still_answers_one_justified_document(make_client: MakeClient) -> None:
    client = make_client(engine=FakeEngine(Taste({}).generate), **LLM)
    data = client.post("/v1/recommend", json={"query": "a romantic comedy", "k": 3}).json()
    assert data["justifications_pending"] == 0
    assert all(i["justification_source"] == "llm" for i in data["items"])


# ------------------------------------------------------------------------------------------------ chat
@pytest.mark.parametrize("later", [True, False])
def test_streamed_chat_turn_fills_justifications_after_the_reply(make_client: MakeClient, later: bool) -> None:
    client = make_client(engine=FakeEngine(Taste({}).generate), chat_justify_later=later, **LLM)
    sid = client.post("/v1/sessions").json()["session_id"]
    resp = client.post(f"/v1/sessions/{sid}/messages?stream=true", json={"message": "a scary movie from the 80s"})
    events = parse_sse(resp.text)
    names = [name for name, _ in events]
    assert names[-1] == "done" and "error" not in names
    items = next(data["items"] for name, data in events if name == "items")
    done = events[-1][1]
    timings = done["timings"]
    assert 0 <= timings["items_s"] <= timings["ttft_s"] <= timings["total_s"]
    if later:
        n = len(items)
        assert n and names.index("delta") < names.index("justification")  # the reply streams first
        assert names[-1 - n : -1] == ["justification"] * n
        assert all(PENDING_FLAG in i["flags"] for i in items)
        assert timings["justified_s"] <= timings["total_s"]
    else:
        assert "justification" not in names
        assert all(i["justification_source"] == "llm" for i in items)
    assert all(i["justification_source"] == "llm" for i in done["recommendation"]["items"])


def test_json_chat_turn_has_timings_but_no_ttft(make_client: MakeClient) -> None:
    client = make_client()
    sid = client.post("/v1/sessions").json()["session_id"]
    reply = client.post(f"/v1/sessions/{sid}/messages", json={"message": "a funny animated movie"}).json()
    assert {"items_s", "reply_s", "total_s"} <= set(reply["timings"]) and "ttft_s" not in reply["timings"]


# ------------------------------------------------------------------------------------------------ CLI
def _cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, embedder: HashEmbedder, log: Interactions,
         engine: Any, *args: str) -> str:  # fmt: skip
    import agent.pipeline

    class Wired(Recommender):
        def __init__(self, s: Settings, **kw: Any) -> None:
            super().__init__(s, engine=engine, embedder=embedder, interactions=log, **kw)

    monkeypatch.setattr(agent.pipeline, "Recommender", Wired)
    for name, value in {"HOME": settings.home, "COLLECTION": settings.collection, "EXPLAIN_MODE": "llm",
                        "RERANK_STRATEGY": "options", "INTERACTIONS": settings.interactions}.items():  # fmt: skip
        monkeypatch.setenv(f"RECAGENT_{name}", str(value))
    monkeypatch.setenv("COLUMNS", "220")
    from recagent.cli import app

    out = CliRunner().invoke(app, ["recommend", *args])
    assert out.exit_code == 0, out.output
    return out.output


def test_cli_prints_the_table_then_the_justifications(
    monkeypatch: pytest.MonkeyPatch, base_settings: Settings, hash_embedder: HashEmbedder, interactions: Interactions
) -> None:
    text = _cli(monkeypatch, base_settings, hash_embedder, interactions, FakeEngine(Taste({}).generate),
                "--query", "a funny animated movie", "-k", "3")  # fmt: skip
    lines = text.splitlines()
    table_end = max(i for i, line in enumerate(lines) if "(pending)" in line)
    filled = [i for i, line in enumerate(lines) if line.startswith("#") and "[llm, grounded]" in line]
    facts = next(i for i, line in enumerate(lines) if "candidates |" in line)
    assert len(filled) == 3 and table_end < filled[0] and filled[-1] < facts
    assert [lines[i][:2] for i in filled] == ["#1", "#2", "#3"]
    waited = _cli(monkeypatch, base_settings, hash_embedder, interactions, FakeEngine(Taste({}).generate),
                  "--query", "a funny animated movie", "-k", "3", "--wait")  # fmt: skip
    assert "(pending)" not in waited and not any(line.startswith("#1 ") for line in waited.splitlines())


def test_cli_says_why_a_template_reason_stayed(
    monkeypatch: pytest.MonkeyPatch, base_settings: Settings, hash_embedder: HashEmbedder, interactions: Interactions
) -> None:
    text = _cli(monkeypatch, base_settings, hash_embedder, interactions, ExplainFails(),
                "--query", "a scary movie", "-k", "2")  # fmt: skip
    lines = [line for line in text.splitlines() if line.startswith("#")]
    assert len(lines) == 2 and all("[template" in line and "engine_error" in line for line in lines)


def test_a_terminal_gets_the_table_redrawn_in_place(
    base_settings: Settings, hash_embedder: HashEmbedder, interactions: Interactions
) -> None:
    from rich.console import Console

    from recagent.present import print_recommendation_later

    rec = _recommender(base_settings, hash_embedder, interactions)
    result = rec.recommend(RecommendRequest(query="a funny animated movie", k=3), explain="later")
    console = Console(force_terminal=True, record=True, width=240)
    print_recommendation_later(result, rec.justify_events(result), console)
    text = console.export_text()
    assert all(i.justification and i.justification in text for i in result.items)
    assert all(i.justification_source == "llm" for i in result.items)
    assert not any(line.startswith("#1 ") for line in text.splitlines())  # no plain lines on a terminal
