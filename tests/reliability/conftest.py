"""Fixtures of the reliability suite: the 300-movie sample in a real embedded Chroma store (hashing embedder, for
in-process apps), a copy of the real-embedder sample home (for `recagent serve` / `recagent ingest` processes), a
scriptable OpenAI-compatible LLM server, and an app factory over either."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))  # server_helpers

from agent.llm.base import LLMEngine
from agent.pipeline import Recommender
from agent.server import create_app
from agent.settings import Settings, load_settings
from retrieval.interactions import Interactions, read_interactions

from reliability_kit import FAILED_TESTS, REL_COLLECTION, THEME_OF_MODULE, FakeLLMServer, MakeApp, record
from testkit import HashEmbedder, hashed_sample_home


@pytest.fixture(scope="session")
def rel_embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture(scope="session")
def rel_home(ml_sample: Path, rel_embedder: HashEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose embedded Chroma store holds the 300-movie sample (hashing embedder)."""
    return hashed_sample_home(tmp_path_factory.mktemp("rel-home"), ml_sample, rel_embedder, REL_COLLECTION)


@pytest.fixture(scope="session")
def rel_interactions(ml_sample: Path) -> Interactions:
    return read_interactions(ml_sample / "ratings.csv")


@pytest.fixture
def rel_settings(rel_home: Path, ml_sample: Path, tmp_path: Path) -> Settings:
    """Settings over the shared catalog; each test gets its own session database. LLM stages that a random or
    scripted model cannot pass (grounded justifications, extraction) are off: the ranking is what is tested."""
    return load_settings(
        home=rel_home,
        collection=REL_COLLECTION,
        interactions=ml_sample / "ratings.csv",
        session_db_url=str(tmp_path / "sessions.sqlite3"),
        rerank_strategy="options",
        explain_mode="template",
        chat_extract="rules",
        chat_reply="llm",
        llm_retry_after_s=0,
        llm_timeout_s=5,
    )


@pytest.fixture
def make_app(rel_settings: Settings, rel_embedder: HashEmbedder, rel_interactions: Interactions) -> Iterator[MakeApp]:
    """``make_app(engine=..., **setting_overrides)`` -> a started TestClient (the in-process app) over the shared
    catalog. Without ``engine`` the Recommender builds its own from the settings, which must then name an LLM
    server (``llm_server_url``): no test here starts an in-process vLLM engine by accident."""
    clients: list[TestClient] = []

    def make(engine: LLMEngine | None = None, **overrides: Any) -> TestClient:
        settings = rel_settings.model_copy(update=overrides)
        if engine is None and not settings.llm_server_url:
            raise AssertionError("make_app needs an engine or an llm_server_url")
        rec = Recommender(settings, engine=engine, embedder=rel_embedder, interactions=rel_interactions)  # type: ignore[arg-type]
        client = TestClient(create_app(settings, recommender=rec), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLMServer) -> FakeLLMServer:
    """The session's fake LLM server, reset to well-formed, immediate answers."""
    fake_llm_server.mode = "ok"
    fake_llm_server.delay_s = 0.0
    fake_llm_server.slow_s = 5.0
    return fake_llm_server


@pytest.fixture(scope="session")
def served_home(sample_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the real-embedder sample home, for processes (`recagent serve`) that open it."""
    home = tmp_path_factory.mktemp("served-home") / "home"
    shutil.copytree(sample_home, home, ignore=shutil.ignore_patterns("sessions.sqlite3*"))
    return home


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Every test's outcome goes into the figures log under its module's theme (``tests_passed`` /
    ``tests_failed``), and failed tests are counted per module for :class:`reliability_kit.Checks`: a figure can
    never say "0 failures" for a theme whose test failed."""
    outcome = yield
    report = outcome.get_result()
    module = Path(str(item.fspath)).stem
    theme = THEME_OF_MODULE.get(module)
    if theme is None:
        return
    if report.failed:
        FAILED_TESTS[module] = FAILED_TESTS.get(module, 0) + 1
        record(theme, tests_failed=1, tests_passed=0)
    elif report.when == "call" and report.passed:
        record(theme, tests_passed=1, tests_failed=0)
