"""Fixtures of the server tests: the 300-movie sample in a real embedded Chroma store (hash embedder: fast and
deterministic), apps over a scripted engine, and helpers to run ``recagent serve`` as a real process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agent.llm.base import LLMEngine
from agent.pipeline import Recommender
from agent.server import create_app
from agent.settings import Settings, load_settings
from retrieval.interactions import Interactions, read_interactions

from fakes import FakeEngine
from testkit import HashEmbedder, hashed_sample_home

COLLECTION = "server-test"


@pytest.fixture(scope="session")
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture(scope="session")
def catalog_home(ml_sample: Path, hash_embedder: HashEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recagent home whose embedded Chroma store holds the 300-movie sample."""
    return hashed_sample_home(tmp_path_factory.mktemp("server-home"), ml_sample, hash_embedder, COLLECTION)


@pytest.fixture(scope="session")
def interactions(ml_sample: Path) -> Interactions:
    return read_interactions(ml_sample / "ratings.csv")


@pytest.fixture
def base_settings(catalog_home: Path, ml_sample: Path, tmp_path: Path) -> Settings:
    """Settings over the shared catalog; each test gets its own session database."""
    return load_settings(
        home=catalog_home,
        collection=COLLECTION,
        interactions=ml_sample / "ratings.csv",
        session_db_url=str(tmp_path / "sessions.sqlite3"),
        rerank_strategy="options",
        explain_mode="template",
        chat_extract="rules",
        chat_reply="template",
    )


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(
    base_settings: Settings, hash_embedder: HashEmbedder, interactions: Interactions
) -> Iterator[MakeClient]:
    """``make_client(engine=..., recommender_cls=..., with_interactions=..., **setting_overrides)`` -> a started
    TestClient over the shared catalog."""
    clients: list[TestClient] = []

    def make(
        engine: LLMEngine | None = None,
        recommender_cls: type[Recommender] = Recommender,
        with_interactions: bool = True,
        **overrides: Any,
    ) -> TestClient:
        if not with_interactions:
            overrides["interactions"] = None
        settings = base_settings.model_copy(update=overrides)
        log = interactions if with_interactions else None
        rec = recommender_cls(settings, engine=engine or FakeEngine(), embedder=hash_embedder, interactions=log)  # type: ignore[arg-type]
        client = TestClient(create_app(settings, recommender=rec))
        client.__enter__()  # runs the lifespan (shutdown closes the batchers and the session store)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()
