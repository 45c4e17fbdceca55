"""LangChain integrations: the Recommender as a tool and a Runnable, sessions as a chat message history, and the
example script; over a real embedded Chroma collection (slow: real embedder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableLambda

from agent.chat.conversation import Conversation
from agent.errors import InputError
from agent.integrations.history import SessionChatHistory
from agent.integrations.langchain import RecommenderRunnable, recommendation_summary, recommender_tool
from agent.pipeline import Recommendation, Recommender, RecommendRequest
from agent.sessions import SessionNotFoundError, open_session_store
from agent.settings import Settings

from chat_fixtures import BOOKS_COLLECTION, build_books_home
from fakes import FakeEngine, grounded_explanation
from testkit import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("integrations")
    build_books_home(home)
    return home


@pytest.fixture(scope="module")
def settings(home: Path) -> Settings:
    return build_books_settings(home)


def build_books_settings(home: Path) -> Settings:
    from agent.settings import load_settings

    return load_settings(home=home, collection=BOOKS_COLLECTION, rerank_strategy="retrieval", explain_mode="llm")


@pytest.fixture(scope="module")
def embedder(settings: Settings) -> object:
    from retrieval.embed import make_embedder

    return make_embedder(settings.embed_config(progress=False))


def test_tool_schema_call_and_errors(settings: Settings, embedder: object) -> None:
    rec = Recommender(settings, engine=FakeEngine(generate_fn=grounded_explanation), embedder=embedder)  # type: ignore[arg-type]
    tool = recommender_tool(rec)
    assert tool.name == "recommend_items" and {"query", "liked", "filters", "k"} <= set(tool.args)
    schema = tool.tool_call_schema.model_json_schema()  # type: ignore[union-attr]
    assert schema["properties"]["k"]["maximum"] == 20
    out = json.loads(tool.invoke({"query": "a mystery by the sea", "filters": ["published>=1990"], "k": 3}))
    assert len(out["items"]) == 3 and all(i["why"] for i in out["items"])
    assert all(i["attributes"]["published"] >= 1990 for i in out["items"])
    assert "nothing to recommend" in tool.invoke({"k": 2})  # errors go back to the calling model as text
    assert "cannot read filter" in tool.invoke({"query": "x", "filters": ["published is recent"]})
    assert "how to fix" in tool.invoke({"query": "x", "filters": ["published is recent"]})


def test_runnable_batch_is_one_pipeline_call(settings: Settings, embedder: object) -> None:
    engine = FakeEngine(generate_fn=grounded_explanation)
    rec = Recommender(settings, engine=engine, embedder=embedder)  # type: ignore[arg-type]
    runnable = RecommenderRunnable(rec)
    single = runnable.invoke({"query": "poetry", "k": 2})
    assert isinstance(single, Recommendation) and len(single.items) == 2
    engine.calls.clear()
    to_request: RunnableLambda[str, RecommendRequest] = RunnableLambda(lambda q: RecommendRequest(query=q, k=3))
    chain = to_request | runnable | RunnableLambda(recommendation_summary)
    results = chain.batch(["cooking", "travel", "history"])
    assert [len(r["items"]) for r in results] == [3, 3, 3]
    assert [c.method for c in engine.calls] == ["generate"]  # one batched justification call for all three
    assert len(engine.calls[0].requests) == 9


def test_session_chat_history(settings: Settings, embedder: object, tmp_path: Path) -> None:
    s = settings.model_copy(update={"session_db_url": str(tmp_path / "s.sqlite3"), "explain_mode": "template"})
    store = open_session_store(s)
    conv = Conversation(Recommender(s, engine=FakeEngine(), embedder=embedder), store, s)  # type: ignore[arg-type]
    sid = conv.start().session_id
    reply = conv.send(sid, "a travel book")
    history = SessionChatHistory(store, sid)
    assert [(m.type, m.content) for m in history.messages] == [("human", "a travel book"), ("ai", reply.reply)]
    history.add_messages([HumanMessage("and poetry?"), AIMessage("Noted.")])
    assert [t.turn_id for t in conv.get(sid).turns] == [1, 2, 3, 4]
    with pytest.raises(InputError, match="pairs"):
        history.add_messages([HumanMessage("alone")])
    with pytest.raises(InputError, match="append-only"):
        history.clear()
    with pytest.raises(SessionNotFoundError):
        SessionChatHistory(store, "0" * 32)
    store.close()


def test_example_script_runs(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECAGENT_")}
    env.update(RECAGENT_HOME=str(home), RECAGENT_COLLECTION=BOOKS_COLLECTION, RECAGENT_RERANK_STRATEGY="retrieval",
               RECAGENT_EXPLAIN_MODE="template", HF_HUB_OFFLINE="1")  # fmt: skip
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langchain_tool.py"), "a mystery by the sea"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("tool: recommend_items")
    assert len(json.loads(lines[1])["items"]) == 3
    assert all(len(json.loads(line)) == 3 for line in lines[2:4])
